"""Reading other tools' score pickles without running their code.

Attribution tools save results with :func:`pickle.dump` (AbU writes ``{'influence': array,
'rank': array}`` per query; FastGDA a dict of arrays). Unpickling an untrusted file can call
any importable function, so :class:`NumpyOnlyUnpickler` resolves only the globals that
rebuild numpy arrays, dtypes and numpy scalars; every other global (``os.system``,
``builtins.eval``, ``numpy.load``, an ndarray subclass, a class of the tool's own) is refused
before anything is called, and the whole file is refused with one line.

Plain containers (dict, list, tuple, str, bytes, numbers, None) need no globals and load as
usual. Object arrays are refused after loading: only numeric arrays are scores.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.errors import SubmissionError

#: Most bytes a score pickle may have (400 AbU queries x 1.1M float64 values is 3.5 GB).
MAX_PICKLE_BYTES = 16 << 30


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes, with latin-1 only."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"refused _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


def _allowed() -> dict[tuple[str, str], Any]:
    """(module, name) -> object, under both numpy 1.x (``numpy.core``) and 2.x names."""
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy < 2
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    table: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    for core in ("numpy.core", "numpy._core"):
        table[(f"{core}.multiarray", "_reconstruct")] = multiarray._reconstruct
        table[(f"{core}.multiarray", "scalar")] = multiarray.scalar
        table[(f"{core}.numeric", "_frombuffer")] = numeric._frombuffer
    return table


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler whose only globals rebuild numpy arrays, dtypes and scalars.

    Allowed: ``numpy.ndarray``, ``numpy.dtype``, ``numpy[._]core.multiarray._reconstruct``
    and ``.scalar``, ``numpy[._]core.numeric._frombuffer`` (protocol 5), and
    ``_codecs.encode`` restricted to latin-1 (how protocol 2 stores bytes). ``find_class``
    raises for anything else, so no other callable is ever reached. Persistent ids and
    out-of-band buffers are refused too.
    """

    _table: dict[tuple[str, str], Any] | None = None

    def find_class(self, module: str, name: str) -> Any:
        table = NumpyOnlyUnpickler._table
        if table is None:
            table = NumpyOnlyUnpickler._table = _allowed()
        found = table.get((module, name))
        if found is None:
            raise _Refused(f"{module}.{name}")
        return found

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused("a persistent id")


class _Refused(pickle.UnpicklingError):
    def __init__(self, what: str):
        super().__init__(what)
        self.what = what


def _check_arrays(obj: Any, path: Path, where: str, depth: int = 0) -> None:
    if depth > 16:
        raise SubmissionError(path, where, "nested too deeply", "save a dict of arrays")
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in "biuf":
            raise SubmissionError(
                path, where or None, f"array of dtype {obj.dtype}", "save numeric arrays only"
            )
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _check_arrays(v, path, f"{where}.{k}" if where else str(k), depth + 1)
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            _check_arrays(v, path, f"{where}[{i}]", depth + 1)


def load_numpy_pickle(path: str | Path, field: str | None = None) -> Any:
    """Unpickle ``path`` with :class:`NumpyOnlyUnpickler`; any refusal is one line.

    Returns the loaded object (numeric numpy arrays inside plain containers)."""
    path = Path(path)
    if not path.is_file():
        raise SubmissionError(path, field, "file not found", "check the path")
    if path.stat().st_size > MAX_PICKLE_BYTES:
        raise SubmissionError(
            path, field, "larger than 16 GiB", "save the scores as .npy (memory-mapped)"
        )
    fix = "save the scores with numpy.save (.npy), or as a pickle of numpy arrays only"
    try:
        with open(path, "rb") as f:
            obj = NumpyOnlyUnpickler(f).load()
    except _Refused as exc:
        raise SubmissionError(
            path,
            field,
            f"refused: the pickle needs {exc.what}; only numpy arrays, dtypes and plain "
            "containers are read",
            fix,
        ) from None
    except Exception as exc:  # truncated or malformed data: any of a dozen exception types
        first = (str(exc).strip().splitlines() or [""])[0][:120]
        raise SubmissionError(
            path, field, f"not a readable pickle ({type(exc).__name__}: {first})", fix
        ) from None
    _check_arrays(obj, path, "")
    return obj
