"""Where attrib-bench keeps what it caches (not part of any benchmark's data)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """Where attrib-bench caches built benchmarks, verification stamps, features and weights.

    ``$ATTRIB_BENCH_CACHE`` when set, else ``$XDG_CACHE_HOME/attrib-bench`` (by default
    ``~/.cache/attrib-bench``). Read on every call, so tests can point it elsewhere.
    """
    env = os.environ.get("ATTRIB_BENCH_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "attrib-bench"
