"""A benchmark whose images stay in a source folder (an imported AbC ``dataset/``).

Its manifest has the usual four tables, but they hold metadata only: the ``queries``,
``exemplars`` and ``distractors`` tables carry each image's ``path`` (relative to the source
folder), ``num_bytes`` and ``sha256`` instead of the encoded image, and the manifest's
``folder`` field marks the layout. Where the source folder is on this machine is kept out of
the manifest (so its sha256 does not depend on it), in ``source.json`` beside it.

Every image is size- and sha256-checked as it is read, so features are never computed from a
changed file; ``verify_files`` checks all of them up front (``quick``: sizes only).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from benchmark.errors import BenchmarkError
from benchmark.fileio import read_json, sha256_file, sha256_text
from benchmark.splits import TABLES, Benchmark, ImageBlock

SOURCE_FILE = "source.json"
ID_COLUMN = {"queries": "query_id", "exemplars": "image_id", "distractors": "image_id"}
IMAGE_TABLES = ("queries", "exemplars", "distractors")
_READERS = 8


@dataclass(frozen=True)
class ImageFile:
    """Where one image lives under the source folder, and what it must hash to."""

    path: str
    num_bytes: int
    sha256: str


def check_relative(rel: str, source: Path | str, field: str) -> PurePosixPath:
    """``rel`` as a safe relative path: not absolute, no ``..``, no backslashes or drive."""
    p = PurePosixPath(rel)
    if not rel or p.is_absolute() or "\\" in rel or ":" in p.parts[0] or ".." in p.parts:
        raise BenchmarkError(
            source,
            field,
            f"path {rel!r} escapes the source folder",
            "paths must be relative and stay inside the dataset folder",
        )
    return p


def inside(root: Path, rel: str, source: Path | str, field: str) -> Path:
    """``root / rel`` after checking it stays inside ``root`` (symlinks resolved)."""
    check_relative(rel, source, field)
    path = root / rel
    if not path.resolve().is_relative_to(root.resolve()):
        raise BenchmarkError(
            source,
            field,
            f"{rel!r} is a symlink that leaves the source folder",
            "copy the file into the dataset folder instead of linking outside it",
        )
    return path


@dataclass(frozen=True)
class FolderBenchmark(Benchmark):
    """A :class:`~benchmark.splits.Benchmark` whose images are files under ``source``."""

    source: Path = Path(".")
    files: dict[str, dict[str, ImageFile]] = field(repr=False, compare=False, default_factory=dict)

    def image_file(self, table: str, image_id: str) -> ImageFile:
        return self.files[table][image_id]

    def read_image(self, table: str, image_id: str) -> bytes:
        """The bytes of one image, checked against the manifest's size and sha256."""
        import hashlib

        f = self.files[table][image_id]
        path = inside(self.source, f.path, self.root / SOURCE_FILE, table)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise BenchmarkError(
                path,
                table,
                f"cannot read the image ({exc.strerror or type(exc).__name__})",
                f"check that {SOURCE_FILE} names the dataset folder it was imported from",
            ) from None
        if len(data) != f.num_bytes or hashlib.sha256(data).hexdigest() != f.sha256:
            raise BenchmarkError(
                path,
                table,
                "size or sha256 differs from the manifest (the file was changed)",
                "restore the original file, or import the dataset again",
            )
        return data

    def iter_image_blocks(
        self, table: str, wanted: set[str] | None = None, block_size: int = 256
    ) -> Iterator[ImageBlock]:
        """Like :meth:`Benchmark.iter_image_blocks`, reading the files (a few in parallel).

        Block keys hash the files' sha256s, so cached features follow the content."""
        order = list(self.files[table])
        with ThreadPoolExecutor(max_workers=_READERS) as pool:
            for start in range(0, len(order), block_size):
                ids = order[start : start + block_size]
                keep = [i for i, x in enumerate(ids) if wanted is None or x in wanted]
                if not keep:
                    continue
                kept = tuple(ids[i] for i in keep)
                key = _block_key(self, table, kept)
                full = key if len(keep) == len(ids) else _block_key(self, table, ids)
                images = tuple(pool.map(lambda x: self.read_image(table, x), kept))
                yield ImageBlock(key, kept, images, full, tuple(keep))


def _block_key(bench: FolderBenchmark, table: str, ids) -> str:
    files = bench.files[table]
    return sha256_text("folder:" + "\n".join(f"{i}\t{files[i].sha256}" for i in ids))


def source_root(root: Path) -> Path:
    """The source folder recorded in ``root/source.json``."""
    path = root / SOURCE_FILE
    data = read_json(path, "source folder record")
    folder = data.get("root") if isinstance(data, dict) else None
    if not isinstance(folder, str) or not Path(folder).is_dir():
        raise BenchmarkError(
            path,
            "root",
            f"source folder {folder!r} is not a folder on this machine",
            "set root to the dataset folder the benchmark was imported from",
        )
    return Path(folder)


def as_folder_benchmark(bench: Benchmark) -> FolderBenchmark:
    """Attach the image file table of a ``folder`` manifest to a loaded benchmark."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files: dict[str, dict[str, ImageFile]] = {}
    for table in IMAGE_TABLES:
        cols = [ID_COLUMN[table], "path", "num_bytes", "sha256"]
        parts = [pq.read_table(p, columns=cols) for p in bench.shard_paths(table)]
        data = pa.concat_tables(parts).to_pydict()
        files[table] = {
            i: ImageFile(p, n, s) for i, p, n, s in zip(*(data[c] for c in cols), strict=True)
        }
    return FolderBenchmark(
        bench.root,
        bench.manifest,
        bench.manifest_sha256,
        bench.models,
        bench.queries,
        bench.exemplar_ids,
        bench.distractor_ids,
        bench._models_by_id,
        source=source_root(bench.root),
        files=files,
    )


def verify_files(
    bench: Benchmark,
    quick: bool = False,
    jobs: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Check every file a benchmark needs; ``quick`` checks sizes only (no hashing).

    For a folder benchmark that is its metadata shards and every image under the source
    folder; for a packed one its Parquet shards. Returns counts for the report line."""
    checked: list[tuple[Path, int, str, str]] = []
    for table in TABLES:
        for entry in bench.manifest["tables"][table]["files"]:
            path = bench.root / entry["path"]
            checked.append((path, entry["num_bytes"], entry["sha256"], f"tables.{table}"))
    if isinstance(bench, FolderBenchmark):
        for table in IMAGE_TABLES:
            for f in bench.files[table].values():
                path = inside(bench.source, f.path, bench.root / SOURCE_FILE, table)
                checked.append((path, f.num_bytes, f.sha256, table))

    def check(item: tuple[Path, int, str, str]) -> None:
        path, size, sha, where = item
        try:
            actual = path.stat().st_size
        except OSError:
            raise BenchmarkError(
                path, where, "file listed in the manifest is missing", "restore the file"
            ) from None
        if actual != size:
            raise BenchmarkError(
                path,
                where,
                f"{actual} bytes, the manifest says {size}",
                "restore the original file, or import the dataset again",
            )
        if not quick and sha256_file(path) != sha:
            raise BenchmarkError(
                path,
                where,
                "sha256 does not match the manifest (the file is corrupt or was changed)",
                "restore the original file, or import the dataset again",
            )

    workers = jobs or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(checked), 4096):  # bounded: 1M futures at once is wasteful
            batch = checked[start : start + 4096]
            list(pool.map(check, batch))
            if progress:
                progress(len(batch))
    return {
        "files": len(checked),
        "mode": "sizes" if quick else "sha256",
        "models": len(bench.models),
        "queries": len(bench.queries),
        "exemplars": len(bench.exemplar_ids),
        "distractors": len(bench.distractor_ids),
    }
