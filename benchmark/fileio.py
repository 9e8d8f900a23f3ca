"""Safe, checked file access: hashing, JSON, and array files that never unpickle.

Array files are validated from their headers before any data is read: a truncated or
oversized file, an object (pickle) dtype or a pickle posing as an array file is refused with
one clear line.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import struct
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.errors import AttribBenchError

_CHUNK = 1 << 22
PICKLE_SUFFIXES = {".pkl", ".pickle", ".pt", ".pth", ".bin", ".ckpt", ".joblib"}
# safetensors dtype names -> numpy dtypes we accept (little-endian on disk).
_ST_DTYPES = {
    "F16": np.dtype("<f2"),
    "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"),
    "I32": np.dtype("<i4"),
    "I64": np.dtype("<i8"),
}


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def dumps_json(obj: Any) -> str:
    """Deterministic JSON text (insertion order kept, trailing newline)."""
    return json.dumps(obj, indent=1, ensure_ascii=False, allow_nan=False) + "\n"


def write_json(path: str | Path, obj: Any) -> None:
    """Write JSON atomically: a crash never leaves a half-written file behind. A ``.gz`` path
    is gzip-compressed with no timestamp, so the same object gives the same bytes."""
    path = Path(path)
    text = dumps_json(obj)
    if path.suffix == ".gz":
        write_bytes_atomic(path, gzip.compress(text.encode("utf-8"), 9, mtime=0))
    else:
        write_text_atomic(path, text)


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: str | Path, what: str = "file") -> Any:
    path = Path(path)
    if not path.is_file():
        raise AttribBenchError(path, None, f"{what} not found", "check the path")
    try:
        data = path.read_bytes()
        if path.suffix == ".gz":
            data = gzip.decompress(data)
        return json.loads(data.decode("utf-8"))
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        raise AttribBenchError(
            path, None, f"not a valid gzip file ({exc})", f"regenerate the {what}"
        ) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AttribBenchError(
            path, None, f"not valid JSON ({exc})", f"regenerate the {what}"
        ) from None


def refuse_pickle(path: Path, field: str) -> None:
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise AttribBenchError(
            path,
            field,
            "pickle-based files are never loaded",
            "save arrays as .safetensors or as .npy with a numeric dtype",
        )
    with open(path, "rb") as f:
        head = f.read(2)
    if head[:1] == b"\x80" or head == b"PK":
        raise AttribBenchError(
            path,
            field,
            "looks like a pickle or zip archive, which is never loaded",
            "save arrays as .safetensors or as .npy with a numeric dtype",
        )


def open_array(path: str | Path, field: str, tensor: str | None = None) -> np.ndarray:
    """Memory-map a 1-D/2-D numeric array from ``.npy`` or ``.safetensors`` after header checks.

    Args:
        path: the file.
        field: the submission field naming it (for error messages).
        tensor: for safetensors, the tensor name (default: the file's only tensor).

    Returns:
        A read-only memory-mapped array (no data is read until used).

    Raises:
        AttribBenchError: missing, truncated, oversized, pickled or non-numeric files.
    """
    path = Path(path)
    if not path.is_file():
        raise AttribBenchError(path, field, "file not found", "check the path in submission.yaml")
    refuse_pickle(path, field)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return _open_npy(path, field)
    if suffix == ".safetensors":
        return _open_safetensors(path, field, tensor)
    raise AttribBenchError(
        path, field, f"unsupported file type {suffix!r}", "use .npy or .safetensors"
    )


def _open_npy(path: Path, field: str) -> np.ndarray:
    size = path.stat().st_size
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        except ValueError as exc:
            raise AttribBenchError(
                path, field, f"not a valid .npy file ({exc})", "write it with numpy.save"
            ) from None
        offset = f.tell()
    if dtype.hasobject:
        raise AttribBenchError(
            path,
            field,
            "object dtype needs pickle, which is never loaded",
            "save a numeric array (float16/float32)",
        )
    if fortran:
        raise AttribBenchError(
            path, field, "Fortran-ordered array", "save with numpy.ascontiguousarray first"
        )
    _check_size(path, field, size, offset, shape, dtype)
    return np.load(path, mmap_mode="r", allow_pickle=False)


def _open_safetensors(path: Path, field: str, tensor: str | None) -> np.ndarray:
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise AttribBenchError(path, field, "truncated safetensors header", "rewrite the file")
        (header_len,) = struct.unpack("<Q", raw)
        if header_len > min(size - 8, 100 << 20):
            raise AttribBenchError(
                path,
                field,
                "safetensors header length is impossible (corrupt or truncated)",
                "rewrite the file with safetensors.numpy.save_file",
            )
        try:
            header = json.loads(f.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise AttribBenchError(
                path, field, "corrupt safetensors header", "rewrite the file"
            ) from None
    if not isinstance(header, dict):
        raise AttribBenchError(
            path, field, "safetensors header is not a JSON object", "rewrite the file"
        )
    header.pop("__metadata__", None)
    if tensor is None:
        if len(header) != 1:
            raise AttribBenchError(
                path,
                field,
                f"expected exactly one tensor, found {sorted(header)}",
                "store one tensor per file or name it in submission.yaml",
            )
        tensor = next(iter(header))
    if tensor not in header:
        raise AttribBenchError(
            path,
            field,
            f"no tensor named {tensor!r} (found {sorted(header)})",
            f"save the array under the name {tensor!r}",
        )
    info = header[tensor]
    if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= set(info):
        raise AttribBenchError(
            path,
            f"{field}.{tensor}",
            "header entry lacks dtype, shape or data_offsets",
            "rewrite the file with safetensors",
        )
    dtype = _ST_DTYPES.get(info.get("dtype"))
    if dtype is None:
        raise AttribBenchError(
            path,
            f"{field}.{tensor}",
            f"unsupported dtype {info.get('dtype')!r}",
            f"use one of {', '.join(_ST_DTYPES)}",
        )
    try:
        shape = tuple(int(s) for s in info["shape"])
        begin, end = (int(x) for x in info["data_offsets"])
    except (TypeError, ValueError):
        raise AttribBenchError(
            path, f"{field}.{tensor}", "shape or data_offsets are not integers", "rewrite the file"
        ) from None
    data_start = 8 + header_len
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if begin < 0 or min(shape, default=0) < 0 or end - begin != expected or data_start + end > size:
        raise AttribBenchError(
            path,
            f"{field}.{tensor}",
            "file is truncated or its offsets do not match the shape",
            "rewrite the file",
        )
    if expected == 0:
        return np.zeros(shape, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=data_start + begin, shape=shape)


def _check_size(
    path: Path, field: str, size: int, offset: int, shape: tuple[int, ...], dtype: np.dtype
) -> None:
    expected = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if size < expected:
        raise AttribBenchError(
            path,
            field,
            f"file is truncated ({size} bytes, header promises {expected})",
            "rewrite the file",
        )
    if size > expected:
        raise AttribBenchError(
            path,
            field,
            f"file is oversized ({size} bytes, header promises {expected})",
            "rewrite the file; trailing data is not allowed",
        )


def read_id_list(path: str | Path, field: str) -> list[str]:
    """Read one id per line; blank lines are errors, not silently skipped."""
    path = Path(path)
    if not path.is_file():
        raise AttribBenchError(path, field, "id list not found", "check the path")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise AttribBenchError(
            path,
            field,
            f"not UTF-8 text (byte {exc.start})",
            "write the ids as UTF-8, one per line",
        ) from None
    for i, line in enumerate(lines, 1):
        if not line.strip() or line != line.strip():
            raise AttribBenchError(
                path,
                f"{field} line {i}",
                "empty id or surrounding whitespace",
                "write one id per line, nothing else",
            )
    return lines
