"""``attrib-bench splits import-abc``: the official AbC ``dataset/`` folder as a benchmark.

The source folder holds ``exemplar/``, ``synth/`` (or the Hub's ``synth_test/`` /
``synth_full/``), ``laion_subset/`` and ``json/test_*.json`` (plus ``val_imagenet.json`` and
``train_all.json`` / ``train_imagenet.json`` when downloaded). Each JSON is a list with one
element per customized model: ``exemplar`` (paths), ``synth`` (prompt type -> paths),
``class_id`` and ``category``. Paths start with ``dataset/``.

Ids are the official paths unchanged (models: ``class_id``), so every official artefact
(features, scores, weights) maps onto the benchmark 1:1; distractors are the LAION files in
sorted name order, the order of the official LAION features.

By default images are not copied: the benchmark's tables hold each file's relative path, size
and sha256 and :mod:`benchmark.folder_benchmark` reads the files from the source folder.
``pack=True`` writes ordinary Parquet shards instead. Hashing is streamed, parallel and
resumable: every hashed file is appended to ``DEST/.import-progress.tsv`` at once, so a killed
import re-run continues where it stopped (files whose size or mtime changed are hashed again).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark.errors import AttribBenchError, BenchmarkError
from benchmark.fileio import sha256_file, write_json, write_text_atomic
from benchmark.folder_benchmark import SOURCE_FILE, ImageFile, inside
from benchmark.progress import progress_bar
from benchmark.types import TEST_CASES, CustomModel, Part, PromptType, Query, parse_part

PREFIX = "dataset/"
#: Official JSON file (without .json) -> our part. For train, ``train_all`` wins when present.
JSON_PARTS: dict[str, Part] = {
    "test_observed_imagenet": Part.OBJECT_SEEN,
    "test_unobserved_imagenet": Part.OBJECT_UNSEEN,
    "test_bamfg": Part.STYLE_SEEN,
    "test_artchive": Part.STYLE_UNSEEN,
    "val_imagenet": Part.VAL,
    "train_all": Part.TRAIN,
    "train_imagenet": Part.TRAIN,
}
PART_JSON: dict[Part, str] = {p: n for n, p in reversed(JSON_PARTS.items())}
#: Where the Hub puts the synthesized images that the JSONs call ``dataset/synth/...``.
SYNTH_DIRS = ("synth", "synth_test", "synth_full")
LAION_DIRS = ("laion_subset", "laion_subset_jpeg")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
PROGRESS_FILE = ".import-progress.tsv"
LICENSE = "CC-BY-NC-SA-4.0"
NAMING = (
    "Test cases (our name <- the official JSON <- the paper's name): "
    "object-seen <- test_observed_imagenet.json <- 'Seen ImageNet' objects; "
    "object-unseen <- test_unobserved_imagenet.json <- 'Unseen ImageNet' objects; "
    "style-seen <- test_bamfg.json <- BAM-FG styles; "
    "style-unseen <- test_artchive.json <- Artchive styles; "
    "val <- val_imagenet.json; train <- train_all.json (else train_imagenet.json)."
)


@dataclass(frozen=True)
class Plan:
    """What an import will write: the benchmark's rows and the files they need."""

    models: list[CustomModel]
    queries: list[Query]
    query_files: list[str]  # relative path of each query's image, in query order
    exemplars: dict[str, str]  # exemplar id -> relative path (first-seen order)
    distractors: list[tuple[str, str]]  # (id, relative path), sorted
    json_files: dict[str, str]  # JSON name -> sha256


def parse_test_cases(values: Sequence[str]) -> list[Part]:
    """``--test-cases`` values (comma lists allowed; AbC aliases; ``all``) as parts."""
    names = [v.strip() for value in values for v in value.split(",") if v.strip()]
    if not names:
        return list(TEST_CASES)
    if "all" in names:
        return list(Part)
    parts = [parse_part(n, None, "--test-cases") for n in names]
    return sorted(set(parts), key=list(Part).index)


def _layout_error(path: Path, where: str, problem: str) -> AttribBenchError:
    return BenchmarkError(
        path,
        where,
        problem,
        "use the official AbC JSON: a list of {exemplar: [...], synth: {type: [...]}, "
        "class_id: str, category: str or null}",
    )


def _rel(official: str, json_path: Path, where: str) -> str:
    if not isinstance(official, str) or not official.startswith(PREFIX):
        raise _layout_error(json_path, where, f"path {official!r} does not start with {PREFIX!r}")
    return official[len(PREFIX) :]


def _locate(src: Path, official: str, json_path: Path, where: str) -> str:
    """Relative path under ``src`` of an official path (synth/ may be synth_test/...)."""
    rel = _rel(official, json_path, where)
    first, _, rest = rel.partition("/")
    candidates = [rel] if first != "synth" else [f"{d}/{rest}" for d in SYNTH_DIRS]
    for cand in candidates:
        path = inside(src, cand, json_path, where)
        if path.is_file():
            return cand
    raise BenchmarkError(
        json_path,
        where,
        f"{official} is not in {src} (looked for {', '.join(candidates)})",
        "download and extract that part of the dataset, or import fewer --test-cases",
    )


def _read_json_file(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _layout_error(path, "(top level)", f"not readable JSON ({exc})") from None
    if not isinstance(data, list) or not data:
        raise _layout_error(path, "(top level)", "expected a non-empty list of models")
    for i, e in enumerate(data):
        if not isinstance(e, dict) or not {"exemplar", "synth", "class_id"} <= e.keys():
            raise _layout_error(path, f"[{i}]", "needs exemplar, synth and class_id")
        ok = (
            isinstance(e["exemplar"], list)
            and e["exemplar"]
            and all(isinstance(x, str) for x in e["exemplar"])
        )
        if not ok:
            raise _layout_error(path, f"[{i}].exemplar", "expected a non-empty list of paths")
        if not isinstance(e["synth"], dict) or not all(
            isinstance(v, list) and all(isinstance(x, str) for x in v) for v in e["synth"].values()
        ):
            raise _layout_error(path, f"[{i}].synth", "expected {prompt type: [paths]}")
        if not isinstance(e["class_id"], str) or not e["class_id"]:
            raise _layout_error(path, f"[{i}].class_id", "expected a non-empty string")
        if not isinstance(e.get("category"), str | None):
            raise _layout_error(path, f"[{i}].category", "expected a string or null")
    return data


def _json_for(src: Path, part: Part) -> Path | None:
    names = ["train_all", "train_imagenet"] if part is Part.TRAIN else [PART_JSON[part]]
    for n in names:
        if (src / "json" / f"{n}.json").is_file():
            return src / "json" / f"{n}.json"
    return None


def _prompts(src: Path) -> dict[str, str]:
    for cand in (src / "path_to_prompts.json", src / "json" / "path_to_prompts.json"):
        if cand.is_file():
            data = json.loads(cand.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
                raise _layout_error(cand, "(top level)", "expected {path: prompt}")
            return data
    return {}


def _seed(path: str) -> int:
    stem = Path(path).stem
    return int(stem) if stem.isdigit() else 0


def plan_import(src: Path, parts: Sequence[Part], laion_limit: int | None = None) -> Plan:
    """Read the official JSONs for ``parts`` and list every file the benchmark needs."""
    src = Path(src)
    if not (src / "json").is_dir():
        raise BenchmarkError(
            src, None, "no json/ folder here", "pass the official dataset/ folder as SRC"
        )
    prompts = _prompts(src)
    models: list[CustomModel] = []
    queries: list[Query] = []
    query_files: list[str] = []
    exemplars: dict[str, str] = {}
    json_files: dict[str, str] = {}
    owner: dict[str, str] = {}
    for part in parts:
        jpath = _json_for(src, part)
        if jpath is None:
            if part.is_test:
                raise BenchmarkError(
                    src / "json" / f"{PART_JSON[part]}.json",
                    None,
                    "test-case JSON not found",
                    "download json/ or leave this test case out of --test-cases",
                )
            continue
        json_files[jpath.name] = sha256_file(jpath)
        for i, e in enumerate(_read_json_file(jpath)):
            mid = e["class_id"]
            if mid in owner:
                raise _layout_error(
                    jpath, f"[{i}].class_id", f"{mid!r} is also a model in {owner[mid]}"
                )
            owner[mid] = jpath.name
            ex_ids = []
            for j, official in enumerate(e["exemplar"]):
                where = f"[{i}].exemplar[{j}]"
                if official not in exemplars:
                    exemplars[official] = _locate(src, official, jpath, where)
                ex_ids.append(official)
            models.append(CustomModel(mid, part, e.get("category") or "", tuple(ex_ids)))
            for ptype, paths in e["synth"].items():
                try:
                    pt = PromptType(ptype)
                except ValueError:
                    raise _layout_error(
                        jpath, f"[{i}].synth", f"unknown prompt type {ptype!r}"
                    ) from None
                for j, official in enumerate(paths):
                    rel = _locate(src, official, jpath, f"[{i}].synth.{ptype}[{j}]")
                    prompt = prompts.get(official, prompts.get(rel, ""))
                    queries.append(Query(official, mid, part, prompt, pt, _seed(official), ""))
                    query_files.append(rel)
    return Plan(
        models,
        queries,
        query_files,
        exemplars,
        list_distractors(src, laion_limit),
        json_files,
    )


def list_distractors(src: Path, limit: int | None = None) -> list[tuple[str, str]]:
    """(id, relative path) of the LAION images in sorted file-name order (the official order)."""
    folder = next((d for d in LAION_DIRS if (src / d).is_dir()), None)
    if folder is None:
        raise BenchmarkError(
            src / LAION_DIRS[0],
            None,
            "LAION folder not found",
            "download and extract laion_subset into the dataset folder",
        )
    names = sorted(
        e.name
        for e in os.scandir(src / folder)
        if e.name.lower().endswith(IMAGE_EXTENSIONS) and not e.name.startswith(".")
    )
    if limit is not None:
        names = names[:limit]
    out = []
    for name in names:
        rel = f"{folder}/{name}"
        if not inside(src, rel, src / folder, name).is_file():
            raise BenchmarkError(src / rel, None, "not a regular file", "remove it")
        out.append((f"{PREFIX}laion_subset/{name}", rel))
    return out


# --------------------------------------------------------------------------------------------
# hashing (parallel, resumable)


def _hash_file(path: Path) -> str:
    return sha256_file(path)


def hash_files(
    src: Path,
    rels: Sequence[str],
    progress_path: Path,
    jobs: int | None = None,
    show_progress: bool = True,
) -> dict[str, ImageFile]:
    """sha256 and size of every file, resuming from (and appending to) ``progress_path``."""
    done: dict[str, tuple[int, int, str]] = {}
    if progress_path.is_file():
        for line in progress_path.read_text(encoding="utf-8").splitlines():
            cells = line.split("\t")
            if len(cells) == 4 and len(cells[3]) == 64 and cells[1].isdigit():
                done[cells[0]] = (int(cells[1]), int(cells[2]), cells[3])
    out: dict[str, ImageFile] = {}
    todo: list[tuple[str, os.stat_result]] = []
    for rel in dict.fromkeys(rels):
        st = (src / rel).stat()
        prev = done.get(rel)
        if prev and prev[:2] == (st.st_size, st.st_mtime_ns):
            out[rel] = ImageFile(rel, st.st_size, prev[2])
        else:
            todo.append((rel, st))
    progress_path.parent.mkdir(parents=True, exist_ok=True)
    workers = jobs or min(8, os.cpu_count() or 1)
    total = len(out) + len(todo)
    with (
        progress_bar(total, "hashing images", show_progress) as advance,
        open(progress_path, "a", encoding="utf-8") as log,
        ThreadPoolExecutor(max_workers=workers) as pool,
    ):
        advance(len(out))
        for start in range(0, len(todo), 1024):
            batch = todo[start : start + 1024]
            futures = [(rel, st, pool.submit(_hash_file, src / rel)) for rel, st in batch]
            try:
                for rel, st, fut in futures:
                    sha = fut.result()
                    out[rel] = ImageFile(rel, st.st_size, sha)
                    log.write(f"{rel}\t{st.st_size}\t{st.st_mtime_ns}\t{sha}\n")
                    advance(1)
            finally:
                log.flush()
    return out


# --------------------------------------------------------------------------------------------
# writing


def import_abc(
    src: str | Path,
    dest: str | Path,
    *,
    parts: Sequence[Part] | None = None,
    pack: bool = False,
    jobs: int | None = None,
    name: str = "abc",
    version: str = "1.0.0",
    laion_limit: int | None = None,
    show_progress: bool = True,
):
    """Import the official ``dataset/`` folder ``src`` as a benchmark in ``dest``."""
    from benchmark.splits import load_benchmark

    src, dest = Path(src).resolve(), Path(dest)
    if not src.is_dir():
        raise BenchmarkError(src, None, "not a folder", "pass the official dataset/ folder")
    if dest.resolve().is_relative_to(src):
        raise BenchmarkError(dest, "--dest", "is inside SRC", "write the benchmark elsewhere")
    plan = plan_import(src, parts or list(TEST_CASES), laion_limit)
    rels = plan.query_files + list(plan.exemplars.values()) + [r for _, r in plan.distractors]
    files = hash_files(src, rels, dest / PROGRESS_FILE, jobs, show_progress)
    description = (
        "The official AbC (Attribute by Customization) test set, imported from its released "
        f"dataset folder with `attrib-bench splits import-abc`. {NAMING} Ids are the official "
        "relative paths (models: class_id); distractors are the LAION subset in sorted file "
        "order. Recall follows AbC: hits / number of exemplars."
    )
    sources = [
        {
            "name": "AbC test set and LAION subset (Wang et al., ICCV 2023)",
            "license": LICENSE,
            "url": "https://github.com/PeterWang512/GenDataAttribution",
        }
    ]
    generator = {
        "importer": "attrib-bench splits import-abc",
        "json_sha256": plan.json_files,
        "parts": [p.value for p in (parts or TEST_CASES)],
        "laion_limit": laion_limit,
        "images": "packed" if pack else "read from the source folder (source.json)",
    }
    common = {
        "name": name,
        "version": version,
        "description": description,
        "license": LICENSE,
        "sources": sources,
        "generator": generator,
    }
    if pack:
        bench = _write_packed(src, dest, plan, files, common)
    else:
        _write_folder(src, dest, plan, files, common)
        bench = load_benchmark(dest)
    (dest / PROGRESS_FILE).unlink(missing_ok=True)
    return bench


def _write_packed(src: Path, dest: Path, plan: Plan, files: dict[str, ImageFile], common):
    from benchmark.splits import write_benchmark

    def read(rel: str) -> bytes:
        import hashlib

        data = (src / rel).read_bytes()
        if hashlib.sha256(data).hexdigest() != files[rel].sha256:
            raise BenchmarkError(src / rel, None, "changed while importing", "import again")
        return data

    return write_benchmark(
        dest,
        models=plan.models,
        queries=[(q, read(r)) for q, r in zip(plan.queries, plan.query_files, strict=True)],
        exemplars=[(i, read(r)) for i, r in plan.exemplars.items()],
        distractors=[(i, "", read(r)) for i, r in plan.distractors],
        **common,
    )


def _write_folder(src: Path, dest: Path, plan: Plan, files: dict[str, ImageFile], common):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from benchmark.fileio import sha256_file
    from benchmark.schemas import validate
    from benchmark.splits import MANIFEST, Benchmark, dataset_card, id_list_hashes

    def file_cols(rels: Sequence[str]) -> dict[str, list]:
        return {
            "path": list(rels),
            "num_bytes": [files[r].num_bytes for r in rels],
            "sha256": [files[r].sha256 for r in rels],
        }

    q = plan.queries
    tables = {
        "models": {
            "model_id": [m.model_id for m in plan.models],
            "part": [m.part.value for m in plan.models],
            "category": [m.category for m in plan.models],
            "exemplar_ids": [list(m.exemplar_ids) for m in plan.models],
        },
        "queries": {
            "query_id": [x.query_id for x in q],
            "model_id": [x.model_id for x in q],
            "prompt": [x.prompt for x in q],
            "prompt_type": [x.prompt_type.value for x in q],
            "seed": pa.array([x.seed for x in q], pa.int64()),
            "scheduler": [x.scheduler for x in q],
            **file_cols(plan.query_files),
        },
        "exemplars": {"image_id": list(plan.exemplars), **file_cols(list(plan.exemplars.values()))},
        "distractors": {
            "image_id": [i for i, _ in plan.distractors],
            "caption": ["" for _ in plan.distractors],
            **file_cols([r for _, r in plan.distractors]),
        },
    }
    manifest_tables = {}
    for table, columns in tables.items():
        rel = f"data/{table}/{table}-00000-of-00001.parquet"
        path = dest / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        pt = pa.table(columns)
        tmp = path.with_name(f".{path.name}.tmp")
        pq.write_table(pt, tmp)
        os.replace(tmp, path)
        entry = {
            "path": rel,
            "sha256": sha256_file(path),
            "num_rows": pt.num_rows,
            "num_bytes": path.stat().st_size,
        }
        manifest_tables[table] = {"files": [entry]}
    counts_m: dict[str, int] = {}
    counts_q: dict[str, int] = {}
    for m in plan.models:
        counts_m[m.part.value] = counts_m.get(m.part.value, 0) + 1
    for x in q:
        counts_q[x.part.value] = counts_q.get(x.part.value, 0) + 1
    manifest: dict[str, Any] = {
        "schema_version": 1,
        **common,
        "tables": manifest_tables,
        "counts": {
            "models": dict(sorted(counts_m.items())),
            "queries": dict(sorted(counts_q.items())),
            "exemplars": len(plan.exemplars),
            "distractors": len(plan.distractors),
        },
        "id_lists": {},
        "folder": {
            "layout": "abc-dataset",
            "files": len(files),
            "num_bytes": sum(f.num_bytes for f in files.values()),
            "note": f"images are read from the folder named in {SOURCE_FILE}",
        },
    }
    by_id = {m.model_id: m for m in plan.models}
    bench = Benchmark(
        dest,
        manifest,
        "",
        tuple(plan.models),
        tuple(q),
        tuple(plan.exemplars),
        tuple(i for i, _ in plan.distractors),
        by_id,
    )
    manifest["id_lists"] = id_list_hashes(bench)
    validate(manifest, "manifest", dest / MANIFEST)
    card = dataset_card(manifest) + "\n" + folder_card_section(manifest)
    write_text_atomic(dest / "README.md", card)
    write_json(dest / SOURCE_FILE, {"root": str(src)})
    write_json(dest / MANIFEST, manifest)


def folder_card_section(manifest: dict[str, Any]) -> str:
    """The dataset card's extra section for an imported AbC: names, ids, where images are."""
    return "\n".join(
        [
            "## How this relates to the AbC paper",
            "",
            NAMING,
            "",
            "Ids are the official paths (`dataset/...`), so the official features, scores and",
            "weights map onto this benchmark 1:1. Recall@K is AbC's: hits / |exemplars|.",
            "",
            "## Images",
            "",
            "Images are not copied: the tables list each file's path under the dataset folder,",
            f"its size and sha256 ({manifest['folder']['files']} files,",
            f"{manifest['folder']['num_bytes']} bytes). `{SOURCE_FILE}` names the folder on this",
            "machine; `attrib-bench splits verify --quick` checks sizes, without `--quick` hashes.",
            "",
        ]
    )
