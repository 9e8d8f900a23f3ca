"""Safe, checked file access: hashing, JSON, and array files that never unpickle.

Array files are validated from their headers before any data is read: a truncated or
oversized file, an object (pickle) dtype or a pickle posing as an array file is refused with
one clear line.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import json
import os
import struct
import tempfile
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.errors import AttribBenchError

_CHUNK = 1 << 22
#: Largest JSON text read (after gzip decompression): a decompression bomb stops here.
MAX_JSON_BYTES = 256 << 20
#: How long a writer waits for another process's lock on a store before giving up.
LOCK_TIMEOUT_S = 120.0
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
    write_bytes_atomic(path, json_bytes(obj, gz=path.suffix == ".gz"))


def json_bytes(obj: Any, gz: bool = False) -> bytes:
    """The exact bytes ``write_json`` writes for ``obj`` (gzip without a timestamp)."""
    data = dumps_json(obj).encode("utf-8")
    return gzip.compress(data, 9, mtime=0) if gz else data


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def current_umask() -> int:
    """The process umask, without changing it (Linux reports it in /proc; elsewhere it is
    read by setting and restoring it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file and a rename: a reader sees the old file
    or the new one, never half of one. The file gets the permissions a plain ``open`` would
    give it (0644 under umask 022), not ``mkstemp``'s private 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~current_umask())
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def file_lock(path: str | Path, what: str = "store") -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the ``with`` block.

    Check-then-write sequences on a shared folder run under it, so two processes never both
    see "no entry yet" and both write. Waits up to ``LOCK_TIMEOUT_S`` for another holder.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise AttribBenchError(
            path, None, f"cannot open the {what} lock ({exc.strerror})", "check the permissions"
        ) from None
    try:
        deadline = time.monotonic() + LOCK_TIMEOUT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise AttribBenchError(
                        path,
                        None,
                        f"another process has held the {what} lock for {LOCK_TIMEOUT_S:.0f} s",
                        "wait for it to finish, then retry",
                    ) from None
                time.sleep(0.02)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{text} overflows a float")
    return value


def _gunzip_capped(data: bytes, source: str | Path | None, limit: int) -> bytes:
    """Decompress gzip ``data`` incrementally, never producing more than ``limit`` bytes (a
    decompression bomb is refused after ``limit`` bytes, not after filling the memory)."""
    out = bytearray()
    rest = data
    while rest:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        out += d.decompress(rest, limit + 1 - len(out))
        if len(out) > limit or d.unconsumed_tail:
            raise AttribBenchError(
                source,
                None,
                f"decompresses to more than {limit >> 20} MiB",
                "a file this large is not one this harness wrote; regenerate it",
            )
        if not d.eof:
            raise EOFError("compressed file ended before the end-of-stream marker")
        rest = d.unused_data
    return bytes(out)


def parse_json_bytes(
    data: bytes,
    source: str | Path | None,
    what: str = "file",
    *,
    gz: bool = False,
    max_bytes: int | None = None,
) -> Any:
    """Parse JSON (gzip-compressed with ``gz``) from bytes already read. Refused with one line:
    bad gzip, bad UTF-8 or JSON, NaN/Infinity (never valid JSON, never written here), and
    more than ``max_bytes`` of text (gzip: at most ``MAX_JSON_BYTES`` unless told)."""
    limit = MAX_JSON_BYTES if max_bytes is None else max_bytes
    try:
        text = _gunzip_capped(data, source, limit) if gz else data
        if max_bytes is not None and len(text) > max_bytes:
            raise AttribBenchError(
                source,
                None,
                f"holds more than {limit >> 20} MiB of JSON",
                "a file this large is not one this harness wrote; regenerate it",
            )
        return json.loads(
            text.decode("utf-8"), parse_constant=_reject_constant, parse_float=_finite_float
        )
    except (OSError, EOFError, zlib.error) as exc:
        raise AttribBenchError(
            source, None, f"not a valid gzip file ({exc})", f"regenerate the {what}"
        ) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AttribBenchError(
            source, None, f"not valid JSON ({exc})", f"regenerate the {what}"
        ) from None
    except (ValueError, RecursionError) as exc:  # NaN, overflow, huge ints, deep nesting
        raise AttribBenchError(
            source, None, f"not valid JSON ({exc})", f"regenerate the {what}"
        ) from None


def read_file_capped(path: Path, what: str, max_bytes: int | None = None) -> bytes:
    """The bytes of a file that must exist and be at most ``max_bytes`` on disk (no limit
    when None)."""
    limit = max_bytes
    if not path.is_file():
        raise AttribBenchError(path, None, f"{what} not found", "check the path")
    try:
        with open(path, "rb") as f:
            data = f.read() if limit is None else f.read(limit + 1)
    except OSError as exc:
        raise AttribBenchError(
            path, None, f"cannot read it ({exc.strerror})", "check the permissions"
        ) from None
    if limit is not None and len(data) > limit:
        raise AttribBenchError(
            path,
            None,
            f"is larger than {limit >> 20} MiB",
            "a file this large is not one this harness wrote; regenerate it",
        )
    return data


def read_json(path: str | Path, what: str = "file", max_bytes: int | None = None) -> Any:
    """Parse a JSON (or gzip JSON, by the ``.gz`` suffix) file; see ``parse_json_bytes``.
    A ``.gz`` file never decompresses to more than ``MAX_JSON_BYTES`` (or ``max_bytes``)."""
    path = Path(path)
    data = read_file_capped(path, what, max_bytes)
    return parse_json_bytes(data, path, what, gz=path.suffix == ".gz", max_bytes=max_bytes)


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
