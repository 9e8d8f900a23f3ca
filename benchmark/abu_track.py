"""``attrib-bench splits derive-abu``: AbU's 400-query track as a view of an imported AbC.

Attribution by unlearning (AbU, Wang et al. 2024) and the influence methods compared with it
are too expensive for AbC's full test set, so the literature scores them on a fixed subset:
AbU's ``custom_diffusion/tasks/all_tasks.json`` lists 400 queries (20 customized models x 20
synthesized images, 5 models per test case), and the gallery is the first 100,000 LAION
images in sorted file order plus each model's own exemplars.

The view is derived from a benchmark made by ``splits import-abc`` rather than imported
again: nothing is re-hashed (the rows and their sha256 come from the imported benchmark) and
its manifest records where it came from (``generator.derived_from``: the source's manifest
sha256; the tasks file's sha256; the number of tasks and of distractors), so a result on the
view names exactly which subset it is. It is a normal folder-backed benchmark:
``--benchmark DIR`` evaluates it and ``import-scores abu`` maps AbU's outputs onto it.

Each task names its model by ``test_case`` and ``test_case_ind`` (the model's index in that
test case's JSON, which is the imported benchmark's model order). A synthesized image that
the imported benchmark does not list as a query (AbU samples from the full synthesized set)
is taken from the source folder's ``synth/``, ``synth_test/`` or ``synth_full/`` and hashed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmark.abc_import import JSON_PARTS, PREFIX, Plan, _locate, _seed, _write_folder
from benchmark.errors import BenchmarkError
from benchmark.fileio import sha256_file, write_text_atomic
from benchmark.folder_benchmark import FolderBenchmark, ImageFile
from benchmark.splits import Benchmark, load_benchmark
from benchmark.types import CustomModel, Part, PromptType, Query

#: AbU's track: 4 test cases x 5 models x 20 queries.
ABU_TASKS = 400
DEFAULT_DISTRACTORS = 100_000
TASK_KEYS = (
    "synth_image_path",
    "prompt",
    "test_case",
    "test_case_ind",
    "model_path",
    "train_prompt",
    "category",
)


def _task_error(path: Path, where: str, problem: str, fix: str | None = None) -> BenchmarkError:
    return BenchmarkError(
        path,
        where,
        problem,
        fix
        or "use AbU's custom_diffusion/tasks/all_tasks.json (a list of {synth_image_path, "
        "prompt, test_case, test_case_ind, model_path, train_prompt, category})",
    )


def read_tasks(path: str | Path, partial: bool = False) -> list[dict[str, Any]]:
    """The tasks list, schema-checked; exactly 400 entries unless ``partial``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _task_error(path, "", "file not found", "pass AbU's all_tasks.json") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _task_error(path, "(top level)", f"not readable JSON ({exc})") from None
    if not isinstance(data, list) or not data:
        raise _task_error(path, "(top level)", "expected a non-empty list of tasks")
    for i, t in enumerate(data):
        if not isinstance(t, dict) or not set(TASK_KEYS) <= t.keys():
            raise _task_error(path, f"[{i}]", f"needs the keys {', '.join(TASK_KEYS)}")
        for key in ("synth_image_path", "test_case", "model_path"):
            if not isinstance(t[key], str) or not t[key]:
                raise _task_error(path, f"[{i}].{key}", "expected a non-empty string")
        ind = t["test_case_ind"]
        if not isinstance(ind, int) or isinstance(ind, bool) or ind < 0:
            raise _task_error(path, f"[{i}].test_case_ind", f"{ind!r} is not an index >= 0")
    if len(data) != ABU_TASKS and not partial:
        raise _task_error(
            path,
            "(top level)",
            f"{len(data)} tasks; AbU's track has {ABU_TASKS}",
            "pass the full all_tasks.json, or --partial for a subset (recorded in the manifest)",
        )
    return data


def derive_abu(
    source: Benchmark,
    tasks_path: str | Path,
    dest: str | Path,
    *,
    num_distractors: int = DEFAULT_DISTRACTORS,
    partial: bool = False,
    name: str | None = None,
    version: str | None = None,
) -> Benchmark:
    """Write the AbU view of the imported AbC ``source`` into ``dest``; return it loaded.

    Args:
        source: a folder-backed benchmark made by ``splits import-abc`` (without ``--pack``).
        tasks_path: AbU's ``all_tasks.json``.
        dest: the new benchmark folder.
        num_distractors: how many LAION rows (the first ones in sorted order) the gallery has;
            AbU's ``--laion_subset_size``, 100,000 in its paper.
        partial: accept a tasks file with other than 400 entries (a subset such as AbU's
            ``demo_task.json``); the manifest records it.

    Raises:
        BenchmarkError: a packed or non-AbC source, a malformed task, a ``test_case_ind`` out
            of range, a synthesized image found neither in the benchmark nor in the source
            folder, an image of another model, or too few distractors.
    """
    tasks_path, dest = Path(tasks_path), Path(dest)
    if not isinstance(source, FolderBenchmark):
        raise BenchmarkError(
            source.root,
            "folder",
            "not an imported AbC folder benchmark (packed or generated)",
            "derive the view from `splits import-abc SRC --dest DIR` without --pack",
        )
    if dest.resolve() == source.root.resolve() or dest.resolve().is_relative_to(source.source):
        raise BenchmarkError(dest, "--dest", "overlaps the source", "write the view elsewhere")
    if num_distractors < 1:
        raise BenchmarkError(None, "--num-distractors", "must be at least 1", "pass e.g. 100000")
    if len(source.distractor_ids) < num_distractors:
        raise BenchmarkError(
            source.root,
            "distractors",
            f"the imported benchmark has {len(source.distractor_ids)} LAION rows, fewer than "
            f"--num-distractors {num_distractors}",
            "import the whole laion_subset, or pass a smaller --num-distractors",
        )
    distractors = list(source.distractor_ids[:num_distractors])
    if distractors != sorted(distractors):
        raise BenchmarkError(
            source.root,
            "distractors",
            "LAION rows are not in sorted file order",
            "derive from a benchmark made by `splits import-abc`",
        )
    tasks = read_tasks(tasks_path, partial)
    by_part: dict[Part, list[CustomModel]] = {}
    for m in source.models:
        by_part.setdefault(m.part, []).append(m)
    by_qid = {q.query_id: q for q in source.queries}
    chosen: dict[str, Query] = {}
    image_files: dict[str, ImageFile] = {}  # relative path -> size and sha256
    query_files: list[str] = []
    from_folder = 0
    for i, t in enumerate(tasks):
        model = _task_model(t, i, tasks_path, by_part)
        qid = t["synth_image_path"]
        qid = qid if qid.startswith(PREFIX) else PREFIX + qid
        if qid in chosen:
            raise _task_error(tasks_path, f"[{i}].synth_image_path", f"{qid} is listed twice")
        q = by_qid.get(qid)
        if q is not None:
            if not q.prompt and isinstance(t["prompt"], str):
                q = replace(q, prompt=t["prompt"])
            f = source.files["queries"][qid]
        else:
            q, rel = _query_from_folder(source, t, i, qid, model, tasks_path)
            f = _hash(source.source, rel)
            from_folder += 1
        if q.model_id != model.model_id:
            raise _task_error(
                tasks_path,
                f"[{i}].synth_image_path",
                f"{qid} belongs to model {q.model_id!r}, but test_case_ind points to "
                f"{model.model_id!r}",
                "fix the task, or import the AbC release AbU's tasks were written for",
            )
        chosen[qid] = q
        query_files.append(f.path)
        image_files[f.path] = f
    model_ids = {q.model_id for q in chosen.values()}
    models = [m for m in source.models if m.model_id in model_ids]
    wanted = {e for m in models for e in m.exemplar_ids}
    exemplars = {}
    for e in source.exemplar_ids:
        if e in wanted:
            f = source.files["exemplars"][e]
            exemplars[e] = f.path
            image_files[f.path] = f
    rows = []
    for d in distractors:
        f = source.files["distractors"][d]
        rows.append((d, f.path))
        image_files[f.path] = f
    plan = Plan(models, list(chosen.values()), query_files, exemplars, rows, {})
    common = _manifest_fields(
        source, tasks_path, len(tasks), partial, num_distractors, from_folder, name, version
    )
    dest.mkdir(parents=True, exist_ok=True)
    _write_folder(source.source, dest, plan, image_files, common)
    readme = dest / "README.md"
    write_text_atomic(readme, readme.read_text(encoding="utf-8") + _card_section(common))
    return load_benchmark(dest)


def _task_model(
    t: dict[str, Any], i: int, path: Path, by_part: dict[Part, list[CustomModel]]
) -> CustomModel:
    part = JSON_PARTS.get(t["test_case"])
    if part is None or not part.is_test:
        known = ", ".join(n for n, p in JSON_PARTS.items() if p.is_test)
        raise _task_error(
            path, f"[{i}].test_case", f"unknown test case {t['test_case']!r}", f"use one of {known}"
        )
    models = by_part.get(part, [])
    if not models:
        raise _task_error(
            path,
            f"[{i}].test_case",
            f"the imported benchmark has no {t['test_case']} ({part.value}) models",
            f"import it: splits import-abc SRC --test-cases {part.value}",
        )
    ind = t["test_case_ind"]
    if ind >= len(models):
        raise _task_error(
            path,
            f"[{i}].test_case_ind",
            f"{ind} is out of range: {t['test_case']} has {len(models)} models in the imported "
            "benchmark",
            "import the complete test-case JSON AbU's tasks index into",
        )
    model = models[ind]
    if t["model_path"].rstrip("/").rsplit("/", 1)[-1] != model.model_id:
        raise _task_error(
            path,
            f"[{i}].model_path",
            f"{t['model_path']!r} is not model {ind} of {t['test_case']} ({model.model_id!r})",
            "fix the task, or import the AbC release AbU's tasks were written for",
        )
    return model


def _query_from_folder(
    source: FolderBenchmark, t: dict[str, Any], i: int, qid: str, model: CustomModel, path: Path
) -> tuple[Query, str]:
    """A query for a synthesized image the imported JSON does not list (from synth_full/)."""
    where = f"[{i}].synth_image_path"
    parts = qid.split("/")
    if len(parts) != 7 or parts[1] != "synth" or parts[5] != "samples":
        raise _task_error(
            path,
            where,
            f"{qid} is not a query of the imported benchmark, nor a path "
            "synth/<dataset>/<prompt type>/<class_id>/samples/<file>",
        )
    try:
        ptype = PromptType(parts[3])
    except ValueError:
        raise _task_error(path, where, f"unknown prompt type {parts[3]!r}") from None
    try:
        rel = _locate(source.source, qid, path, where)
    except BenchmarkError as exc:
        raise _task_error(
            path,
            where,
            f"{qid} is not a query of the imported benchmark, nor a file under "
            f"{source.source} ({exc.problem.partition('(')[2].rstrip(')')})",
            "download the synthesized images it names (synth_full/), or fix the task",
        ) from None
    prompt = t["prompt"] if isinstance(t["prompt"], str) else ""
    return Query(qid, parts[4], model.part, prompt, ptype, _seed(qid), ""), rel


def _hash(root: Path, rel: str) -> ImageFile:
    path = root / rel
    return ImageFile(rel, path.stat().st_size, sha256_file(path))


def _manifest_fields(
    source: Benchmark,
    tasks_path: Path,
    n_tasks: int,
    partial: bool,
    num_distractors: int,
    from_folder: int,
    name: str | None,
    version: str | None,
) -> dict[str, Any]:
    gen = source.manifest.get("generator", {})
    generator = {
        "importer": "attrib-bench splits derive-abu",
        "track": "abu",
        "derived_from": {
            "name": source.name,
            "version": source.version,
            "manifest_sha256": source.manifest_sha256,
        },
        "tasks_file": tasks_path.name,
        "tasks_sha256": sha256_file(tasks_path),
        "tasks": n_tasks,
        "partial": partial,
        "num_distractors": num_distractors,
        "queries_from_source_folder": from_folder,
        "json_sha256": gen.get("json_sha256", {}),
        "images": "read from the source folder (source.json)",
    }
    subset = f"a {n_tasks}-task subset of " if partial else ""
    description = (
        f"{subset}AbU's query track (Wang et al., 'Data Attribution for Text-to-Image Models "
        f"by Unlearning Synthesized Images', 2024): {n_tasks} queries from "
        f"custom_diffusion/tasks/all_tasks.json, each against its model's exemplars and the "
        f"first {num_distractors} LAION images in sorted order. Derived with `attrib-bench "
        f"splits derive-abu` from {source.name} {source.version} (manifest sha256 "
        f"{source.manifest_sha256[:12]}); ids are AbC's official paths."
    )
    return {
        "name": name or f"{source.name}-abu",
        "version": version or source.version,
        "description": description,
        "license": source.manifest["license"],
        "sources": [
            *source.manifest.get("sources", []),
            {
                "name": "AbU task list (Wang et al., NeurIPS 2024)",
                "license": "see the AttributeByUnlearning repository",
                "url": "https://github.com/PeterWang512/AttributeByUnlearning",
            },
        ],
        "generator": generator,
    }


def _card_section(common: dict[str, Any]) -> str:
    g = common["generator"]
    lines: Sequence[str] = [
        "## AbU track",
        "",
        f"Derived from {g['derived_from']['name']} {g['derived_from']['version']} (manifest "
        f"sha256 `{g['derived_from']['manifest_sha256']}`) with AbU's `{g['tasks_file']}` "
        f"(sha256 `{g['tasks_sha256']}`): {g['tasks']} tasks"
        + (" (a PARTIAL task list, not AbU's full track)" if g["partial"] else "")
        + f", {g['num_distractors']} LAION distractors (the first in sorted file order).",
        "Influence files written by AbU (exemplars first, then these LAION rows) import with",
        "`attrib-bench import-scores abu RESULTS/influence --benchmark THIS --out SUB`.",
        "",
    ]
    return "\n".join(lines)
