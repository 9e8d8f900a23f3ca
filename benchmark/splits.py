"""Benchmark versions on disk: load, verify and write (freeze).

A benchmark version is a folder laid out as a Hugging Face dataset::

    manifest.json                      counts, sha256 of every shard and of the id lists
    README.md                          dataset card (configs for ``datasets.load_dataset``)
    data/<table>/<table>-00000-of-0000N.parquet

with four tables (one dataset config each): ``models`` (model_id, part, category,
exemplar_ids), ``queries`` (query_id, model_id, prompt, prompt_type, seed, scheduler, image),
``exemplars`` (image_id, image) and ``distractors`` (image_id, caption, image). Images are
stored as ``datasets.Image`` structs (encoded bytes), so ``datasets.load_dataset(folder,
"queries")`` decodes them; the harness itself reads the shards with pyarrow, which is faster.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from benchmark.errors import BenchmarkError
from benchmark.fileio import read_json, sha256_file, sha256_text, write_json, write_text_atomic
from benchmark.integrity import TABLES, listed_files, reading_shard, verify_files
from benchmark.paths import cache_root
from benchmark.schemas import validate
from benchmark.types import CustomModel, Part, PromptType, Query

MANIFEST = "manifest.json"
HF_SPLIT = "full"  # the single split name of every config in the dataset card


@dataclass(frozen=True)
class ImageBlock:
    """A run of image rows from one shard; ``key`` identifies its content for caching."""

    key: str
    ids: tuple[str, ...]
    images: tuple[bytes, ...]
    #: The key of the whole shard block these rows come from, and their positions in it:
    #: features cached for the whole block serve any subset of it.
    full_key: str = ""
    positions: tuple[int, ...] = ()


@dataclass(frozen=True)
class Benchmark:
    """A loaded, verified benchmark version (metadata only; images stay on disk)."""

    root: Path
    manifest: dict[str, Any]
    manifest_sha256: str
    models: tuple[CustomModel, ...]
    queries: tuple[Query, ...]
    exemplar_ids: tuple[str, ...]
    distractor_ids: tuple[str, ...]
    _models_by_id: dict[str, CustomModel] = field(repr=False, compare=False, default_factory=dict)

    @property
    def name(self) -> str:
        return self.manifest["name"]

    @property
    def version(self) -> str:
        return self.manifest["version"]

    def model(self, model_id: str) -> CustomModel:
        return self._models_by_id[model_id]

    @cached_property
    def evaluated_queries(self) -> tuple[Query, ...]:
        """Queries that are scored: every test case plus ``val`` (for calibration)."""
        return tuple(q for q in self.queries if q.part is not Part.TRAIN)

    @cached_property
    def evaluated_exemplar_ids(self) -> tuple[str, ...]:
        wanted = {e for m in self.models if m.part is not Part.TRAIN for e in m.exemplar_ids}
        return tuple(e for e in self.exemplar_ids if e in wanted)

    @cached_property
    def candidate_ids(self) -> tuple[str, ...]:
        """Column order of a dense similarity: all distractors, then evaluated exemplars."""
        return self.distractor_ids + self.evaluated_exemplar_ids

    def positives(self) -> Iterator[tuple[str, str]]:
        """(query_id, exemplar_id) pairs of the evaluated queries, in query order."""
        for q in self.evaluated_queries:
            for e in self.model(q.model_id).exemplar_ids:
                yield q.query_id, e

    def shard_paths(self, table: str) -> list[Path]:
        return [self.root / f["path"] for f in self.manifest["tables"][table]["files"]]

    def iter_image_blocks(
        self, table: str, wanted: set[str] | None = None, block_size: int = 256
    ) -> Iterator[ImageBlock]:
        """Yield the encoded images of ``table`` (rows in ``wanted`` only) in blocks."""
        import pyarrow.parquet as pq

        id_col = "query_id" if table == "queries" else "image_id"
        for entry in self.manifest["tables"][table]["files"]:
            path = self.root / entry["path"]
            with reading_shard(path, table):
                pf = pq.ParquetFile(path)
                batches = pf.iter_batches(batch_size=block_size, columns=[id_col, "image"])
            row = 0
            while True:
                with reading_shard(path, table):
                    batch = next(batches, None)
                    if batch is None:
                        break
                    ids = batch.column(0).to_pylist()
                    images = batch.column(1).field("bytes").to_pylist()
                start = row
                row += len(ids)
                keep = [i for i, x in enumerate(ids) if wanted is None or x in wanted]
                if not keep:
                    continue
                kept_ids = tuple(ids[i] for i in keep)
                key = sha256_text(f"{entry['sha256']}:{start}:" + "\n".join(kept_ids))
                full = (
                    key
                    if len(keep) == len(ids)
                    else sha256_text(f"{entry['sha256']}:{start}:" + "\n".join(ids))
                )
                yield ImageBlock(key, kept_ids, tuple(images[i] for i in keep), full, tuple(keep))


# --------------------------------------------------------------------------------------------
# Loading and verification


def load_benchmark(root: str | Path, verify: bool = True) -> Benchmark:
    """Load a benchmark folder after checking its manifest schema and shard hashes.

    Hashes are re-computed for shards whose stamp (path, size, mtime, inode, ctime; see
    ``benchmark.integrity.stamp_token``) changed since the last successful check on this
    machine; ``verify_benchmark`` always re-hashes everything, artifacts included.
    """
    root = Path(root)
    if root.is_file() and root.name == MANIFEST:
        root = root.parent
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise BenchmarkError(
            manifest_path,
            None,
            "no benchmark manifest here",
            "point --benchmark at a folder holding manifest.json, or a registered name",
        )
    manifest = read_json(manifest_path, "manifest")
    validate(manifest, "manifest", manifest_path)
    if verify:
        _verify_shards(root, manifest, use_stamps=True)
    bench = _read_metadata(root, manifest, sha256_file(manifest_path))
    if "folder" in manifest:  # images in a source folder (benchmark/folder_benchmark.py)
        from benchmark.folder_benchmark import as_folder_benchmark

        return as_folder_benchmark(bench)
    return bench


def verify_benchmark(root: str | Path) -> dict[str, int]:
    """Re-hash every shard of a benchmark folder; return counts of rows per table."""
    root = Path(root)
    manifest = read_json(root / MANIFEST, "manifest")
    validate(manifest, "manifest", root / MANIFEST)
    verify_files(root, listed_files(manifest), cache_root() / "verified", trust_stamps=False)
    bench = _read_metadata(root, manifest, sha256_file(root / MANIFEST))
    return {
        "models": len(bench.models),
        "queries": len(bench.queries),
        "exemplars": len(bench.exemplar_ids),
        "distractors": len(bench.distractor_ids),
        "artifacts": len(manifest.get("artifacts", [])),
    }


def _verify_shards(root: Path, manifest: dict[str, Any], use_stamps: bool) -> None:
    stamps = cache_root() / "verified"
    verify_files(root, listed_files(manifest, shards_only=True), stamps, trust_stamps=use_stamps)


def _read_table(root: Path, manifest: dict[str, Any], table: str, columns: list[str]):
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = []
    for f in manifest["tables"][table]["files"]:
        with reading_shard(root / f["path"], table):
            parts.append(pq.read_table(root / f["path"], columns=columns))
    return pa.concat_tables(parts).to_pydict()


def _read_metadata(root: Path, manifest: dict[str, Any], manifest_sha: str) -> Benchmark:
    src = root / MANIFEST
    m = _read_table(root, manifest, "models", ["model_id", "part", "category", "exemplar_ids"])
    models = tuple(
        CustomModel(mid, Part(part), cat, tuple(ex))
        for mid, part, cat, ex in zip(
            m["model_id"], m["part"], m["category"], m["exemplar_ids"], strict=True
        )
    )
    q = _read_table(
        root,
        manifest,
        "queries",
        ["query_id", "model_id", "prompt", "prompt_type", "seed", "scheduler"],
    )
    by_id = {mod.model_id: mod for mod in models}
    queries = []
    for qid, mid, prompt, ptype, seed, sched in zip(*q.values(), strict=True):
        if mid not in by_id:
            raise BenchmarkError(
                src,
                "queries.model_id",
                f"query {qid!r} names unknown model {mid!r}",
                "regenerate the benchmark",
            )
        queries.append(Query(qid, mid, by_id[mid].part, prompt, PromptType(ptype), seed, sched))
    exemplar_ids = tuple(_read_table(root, manifest, "exemplars", ["image_id"])["image_id"])
    distractor_ids = tuple(_read_table(root, manifest, "distractors", ["image_id"])["image_id"])
    _check_ids(src, models, queries, exemplar_ids, distractor_ids)
    return Benchmark(
        root,
        manifest,
        manifest_sha,
        models,
        tuple(queries),
        exemplar_ids,
        distractor_ids,
        by_id,
    )


def _check_ids(
    src: Path,
    models: Sequence[CustomModel],
    queries: Sequence[Query],
    exemplar_ids: Sequence[str],
    distractor_ids: Sequence[str],
) -> None:
    for what, ids in (
        ("models.model_id", [m.model_id for m in models]),
        ("queries.query_id", [q.query_id for q in queries]),
        ("image ids", list(exemplar_ids) + list(distractor_ids)),
    ):
        if len(set(ids)) != len(ids):
            dup = next(x for x in ids if ids.count(x) > 1)
            raise BenchmarkError(src, what, f"duplicate id {dup!r}", "regenerate the benchmark")
    known = set(exemplar_ids)
    for m in models:
        if not m.exemplar_ids:
            raise BenchmarkError(
                src,
                "models.exemplar_ids",
                f"model {m.model_id!r} has no exemplars",
                "regenerate the benchmark",
            )
        missing = [e for e in m.exemplar_ids if e not in known]
        if missing:
            raise BenchmarkError(
                src,
                "models.exemplar_ids",
                f"model {m.model_id!r} names missing exemplar {missing[0]!r}",
                "regenerate the benchmark",
            )


# --------------------------------------------------------------------------------------------
# Writing (freezing) a benchmark version


def id_list_hashes(bench: Benchmark) -> dict[str, str]:
    def h(lines):
        return sha256_text("".join(f"{line}\n" for line in lines))

    return {
        "candidates": h(bench.candidate_ids),
        "queries": h(q.query_id for q in bench.evaluated_queries),
        "positives": h(f"{q}\t{e}" for q, e in bench.positives()),
    }


def write_benchmark(
    root: str | Path,
    *,
    name: str,
    version: str,
    description: str,
    license: str,
    models: Sequence[CustomModel],
    queries: Sequence[tuple[Query, bytes]],
    exemplars: Sequence[tuple[str, bytes]],
    distractors: Sequence[tuple[str, str, bytes]],
    generator: dict[str, Any] | None = None,
    sources: list[dict[str, Any]] | None = None,
    rows_per_shard: int = 5000,
    artifacts: Sequence[str] = (),
) -> Benchmark:
    """Freeze a benchmark version into ``root`` (Parquet shards, card, manifest).

    ``queries`` pairs each query with its encoded image; ``exemplars`` are (id, bytes);
    ``distractors`` are (id, caption, bytes). ``artifacts``: files already under ``root``
    (relative paths: the base model, per-model deltas) hashed into the manifest too. Output is
    deterministic for the same inputs.
    """
    import datasets

    root = Path(root)
    image = datasets.Image()
    tables: dict[str, tuple[dict[str, list], datasets.Features]] = {
        "models": (
            {
                "model_id": [m.model_id for m in models],
                "part": [m.part.value for m in models],
                "category": [m.category for m in models],
                "exemplar_ids": [list(m.exemplar_ids) for m in models],
            },
            datasets.Features(
                {
                    "model_id": datasets.Value("string"),
                    "part": datasets.Value("string"),
                    "category": datasets.Value("string"),
                    "exemplar_ids": datasets.Sequence(datasets.Value("string")),
                }
            ),
        ),
        "queries": (
            {
                "query_id": [q.query_id for q, _ in queries],
                "model_id": [q.model_id for q, _ in queries],
                "prompt": [q.prompt for q, _ in queries],
                "prompt_type": [q.prompt_type.value for q, _ in queries],
                "seed": [q.seed for q, _ in queries],
                "scheduler": [q.scheduler for q, _ in queries],
                "image": [{"bytes": b, "path": None} for _, b in queries],
            },
            datasets.Features(
                {
                    "query_id": datasets.Value("string"),
                    "model_id": datasets.Value("string"),
                    "prompt": datasets.Value("string"),
                    "prompt_type": datasets.Value("string"),
                    "seed": datasets.Value("int64"),
                    "scheduler": datasets.Value("string"),
                    "image": image,
                }
            ),
        ),
        "exemplars": (
            {
                "image_id": [i for i, _ in exemplars],
                "image": [{"bytes": b, "path": None} for _, b in exemplars],
            },
            datasets.Features({"image_id": datasets.Value("string"), "image": image}),
        ),
        "distractors": (
            {
                "image_id": [i for i, _, _ in distractors],
                "caption": [c for _, c, _ in distractors],
                "image": [{"bytes": b, "path": None} for _, _, b in distractors],
            },
            datasets.Features(
                {
                    "image_id": datasets.Value("string"),
                    "caption": datasets.Value("string"),
                    "image": image,
                }
            ),
        ),
    }
    manifest_tables: dict[str, Any] = {}
    for table, (columns, features) in tables.items():
        ds = datasets.Dataset.from_dict(columns, features=features)
        n_shards = max(1, -(-len(ds) // rows_per_shard))
        files = []
        for i in range(n_shards):
            rel = f"data/{table}/{table}-{i:05d}-of-{n_shards:05d}.parquet"
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            shard = ds.shard(n_shards, i, contiguous=True)
            shard.to_parquet(str(path))
            files.append(
                {
                    "path": rel,
                    "sha256": sha256_file(path),
                    "num_rows": len(shard),
                    "num_bytes": path.stat().st_size,
                }
            )
        manifest_tables[table] = {"files": files}

    by_part_models: dict[str, int] = {}
    by_part_queries: dict[str, int] = {}
    for m in models:
        by_part_models[m.part.value] = by_part_models.get(m.part.value, 0) + 1
    for q, _ in queries:
        by_part_queries[q.part.value] = by_part_queries.get(q.part.value, 0) + 1
    manifest: dict[str, Any] = {
        "schema_version": 1,
        "name": name,
        "version": version,
        "description": description,
        "license": license,
        "sources": sources or [],
        "generator": generator or {},
        "tables": manifest_tables,
        "counts": {
            "models": dict(sorted(by_part_models.items())),
            "queries": dict(sorted(by_part_queries.items())),
            "exemplars": len(exemplars),
            "distractors": len(distractors),
        },
        "id_lists": {"candidates": "0" * 64, "queries": "0" * 64, "positives": "0" * 64},
    }
    if artifacts:
        manifest["artifacts"] = [
            {
                "path": rel,
                "sha256": sha256_file(root / rel),
                "num_bytes": (root / rel).stat().st_size,
            }
            for rel in sorted(artifacts)
        ]
    bench = _read_metadata(root, manifest, "")
    manifest["id_lists"] = id_list_hashes(bench)
    validate(manifest, "manifest", root / MANIFEST)
    write_text_atomic(root / "README.md", dataset_card(manifest))
    write_json(root / MANIFEST, manifest)
    return load_benchmark(root)


def dataset_card(manifest: dict[str, Any]) -> str:
    """A Hugging Face dataset card: configs for ``load_dataset`` plus the counts."""
    lines = ["---", f"license: {manifest['license']}", "configs:"]
    for table in TABLES:
        lines += [
            f"- config_name: {table}",
            "  data_files:",
            f"  - split: {HF_SPLIT}",
            f"    path: data/{table}/*.parquet",
        ]
    lines += [
        "---",
        "",
        f"# {manifest['name']} {manifest['version']}",
        "",
        manifest["description"],
        "",
        "## Counts",
        "",
    ]
    counts = manifest["counts"]
    lines.append("| part | models | queries |")
    lines.append("|---|---|---|")
    for part in sorted(counts["models"]):
        lines.append(f"| {part} | {counts['models'][part]} | {counts['queries'].get(part, 0)} |")
    lines += ["", f"Exemplars: {counts['exemplars']}. Distractors: {counts['distractors']}.", ""]
    if manifest.get("sources"):
        lines += ["## Sources and licenses", ""]
        for s in manifest["sources"]:
            line = f"- {s.get('name', '?')}: {s.get('license', '?')} {s.get('url', '')}"
            lines.append(line.rstrip())
        lines.append("")
    if manifest.get("artifacts"):
        base = manifest.get("generator", {}).get("base_model", "base-model")
        lines += [
            "## Regenerating queries",
            "",
            f"The base model (`{base}`) and every customized model's delta (`deltas/MODEL_ID`)",
            "ship with the data: each query's prompt and seed regenerate it (see attrib-bench's",
            "`splits/generate/`). Generator settings are in `manifest.json` (`generator`).",
            "",
        ]
    lines += [
        "Every file's sha256 is in `manifest.json`; `attrib-bench splits verify` checks them.",
        "",
    ]
    return "\n".join(lines)
