"""attrib-bench: the AbC data-attribution benchmark harness.

The library is import-light: importing :mod:`benchmark` loads no torch, no datasets and no
plug-ins. The Python API (``from benchmark import evaluate, load_result, Result``) lives in
:mod:`benchmark.api` and is loaded on first use (PEP 562 ``__getattr__``); the orchestrator
is :mod:`benchmark.evaluation`, the command line :mod:`benchmark.cli`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {"evaluate": "benchmark.api", "load_result": "benchmark.api", "Result": "benchmark.api"}
__all__ = ["Result", "__version__", "evaluate", "load_result"]

if TYPE_CHECKING:
    from benchmark.api import Result, evaluate, load_result


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'benchmark' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
