"""What a benchmark manifest pins, and checking it: one list for `splits verify` and `push`.

A manifest pins every shard of every table and every artifact (base model, deltas) by size
and sha256. :func:`listed_files` derives that list once; verification hashes exactly it and
publishing uploads exactly it, so a pushed benchmark always verifies after download.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark.errors import BenchmarkError
from benchmark.fileio import sha256_file, write_text_atomic

TABLES = ("models", "queries", "exemplars", "distractors")


@dataclass(frozen=True)
class ListedFile:
    """A file the manifest pins by size and sha256: a table shard or an artifact."""

    path: str  # relative to the benchmark folder
    sha256: str
    num_bytes: int
    field: str  # the manifest field listing it: ``tables.<table>`` or ``artifacts``


def listed_files(manifest: dict[str, Any], shards_only: bool = False) -> list[ListedFile]:
    """Every file the manifest pins: each table's shards, then the artifacts (base model,
    deltas). `splits verify` checks exactly these and `splits push` uploads exactly these
    (plus the manifest and card), so what is published is what verifies after download."""
    out = [
        ListedFile(f["path"], f["sha256"], f["num_bytes"], f"tables.{table}")
        for table in TABLES
        for f in manifest["tables"][table]["files"]
    ]
    if not shards_only:
        out += [
            ListedFile(a["path"], a["sha256"], a["num_bytes"], "artifacts")
            for a in manifest.get("artifacts", [])
        ]
    return out


def stamp_token(path: Path) -> str:
    """What must be unchanged for a verified file to be trusted without re-hashing: path,
    size, mtime, and also inode, device and ctime, which no user can set back (``os.utime``
    restores an mtime but moves the ctime; replacing the file changes the inode)."""
    st = path.stat()
    return (
        f"{path.resolve()}\t{st.st_size}\t{st.st_mtime_ns}\t{st.st_ino}\t{st.st_dev}\t"
        f"{st.st_ctime_ns}\n"
    )


def verify_files(
    root: Path, files: list[ListedFile], stamps: Path | None = None, trust_stamps: bool = True
) -> None:
    """Hash-check ``files`` under ``root``, recording each success in the ``stamps`` folder.
    With ``trust_stamps``, a file whose :func:`stamp_token` matches its last successful check
    is not re-hashed."""
    for entry in files:
        path = root / entry.path
        what = "shard" if entry.field.startswith("tables.") else "file"
        if not path.is_file():
            raise BenchmarkError(
                path,
                entry.field,
                f"{what} listed in the manifest is missing",
                "re-download the benchmark or run `attrib-bench splits verify`",
            )
        token = stamp_token(path)
        stamp = stamps / f"{entry.sha256}.stamp" if stamps is not None else None
        if trust_stamps and stamp is not None and stamp.is_file() and stamp.read_text() == token:
            continue
        if path.stat().st_size != entry.num_bytes or sha256_file(path) != entry.sha256:
            raise BenchmarkError(
                path,
                entry.field,
                f"sha256 does not match the manifest (the {what} is corrupt or was changed)",
                f"re-download this {what}; published benchmark versions never change",
            )
        if stamp is not None:
            with contextlib.suppress(OSError):  # a read-only cache only costs a re-hash
                write_text_atomic(stamp, token)


@contextlib.contextmanager
def reading_shard(path: Path, table: str) -> Iterator[None]:
    """Any failure to parse a shard (a corrupt footer, truncated pages) is one line naming it."""
    import pyarrow as pa

    try:
        yield
    except (pa.ArrowException, OSError) as exc:
        problem = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise BenchmarkError(
            path,
            f"tables.{table}",
            f"cannot read this Parquet shard ({problem})",
            "run `attrib-bench splits verify` on the benchmark and re-download what it names",
        ) from None
