"""RunResult JSON: build, validate, write, read.

A result holds everything needed to audit, re-score and compare it without rerunning: the
benchmark's manifest hash, the submission's file hashes, settings (seed, tie policy), and
per-query exemplar counts. Two runs on the same inputs differ only in ``created`` and
``timings``.
"""

from __future__ import annotations

import platform
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from benchmark import __version__
from benchmark.errors import ResultError
from benchmark.fileio import MAX_JSON_BYTES, parse_json_bytes, read_file_capped, write_json
from benchmark.schemas import validate
from benchmark.splits import Benchmark, id_list_hashes
from benchmark.submission import Submission
from benchmark.types import TiePolicy

#: 2 adds recall_norm@K, ``submission.origin`` (in-memory submissions of ``benchmark.api``) and
#: ``upgraded_from``; older files are read through :data:`UPGRADES`.
SCHEMA_VERSION = 2
VOLATILE_FIELDS = ("created", "timings")
PACKAGES = (
    "numpy",
    "torch",
    "torchvision",
    "pyarrow",
    "datasets",
    "safetensors",
    "scipy",
    "open_clip_torch",
    "timm",
)


def git_sha() -> str | None:
    """The harness checkout's commit (``-dirty`` when it has local changes), if any."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("-dirty" if dirty.strip() else "")


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _num(x: float) -> float | None:
    return None if not np.isfinite(x) else float(x)


def exemplar_rank_table(counts, policy: TiePolicy) -> np.ndarray:
    """Each exemplar's best possible 1-based rank under ``policy`` (0 in padding)."""
    key = counts.above + (counts.ties if policy is TiePolicy.PESSIMISTIC else 0)
    key = np.where(counts.above >= 0, key, np.iinfo(np.int64).max)
    order = np.argsort(key, axis=1, kind="stable")
    position = np.empty_like(order)
    np.put_along_axis(position, order, np.arange(key.shape[1])[None, :], axis=1)
    return np.where(counts.above >= 0, key + position + 1, 0)


def _influence(counts, i: int, calibrator: dict[str, Any] | None):
    """Calibrated influence of query ``i``'s exemplars and kept distractors (None without a
    calibrator): the calibration candidate set, so shares are exact, as the metrics use them."""
    if calibrator is None:
        return None, None
    from benchmark.calibration import Calibrator

    cal = Calibrator(float(calibrator["temperature"]), float(calibrator["threshold"]))
    ex = counts.exemplar_scores[i]
    top = counts.top_scores[i]
    ex_ok, top_ok = np.isfinite(ex), np.isfinite(top)
    p = cal.influence(np.concatenate([ex[ex_ok], top[top_ok]]))
    ex_p = np.full(len(ex), np.nan)
    ex_p[ex_ok] = p[: ex_ok.sum()]
    return ex_p, p[ex_ok.sum() :]


def query_records(
    bench: Benchmark,
    counts,
    store_top: int,
    policy: TiePolicy,
    calibrator: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Per query: each exemplar's score, rank and counts, and the top distractors; with a
    calibrator, also each one's calibrated influence (exemplars ``influence``, distractors a
    third element)."""
    ranks = exemplar_rank_table(counts, policy)
    records = []
    for i, q in enumerate(bench.evaluated_queries):
        ex_p, top_p = _influence(counts, i, calibrator)
        ex = []
        for j, eid in enumerate(counts.exemplar_ids[i]):
            record = {
                "id": eid,
                "score": _num(counts.exemplar_scores[i, j]),
                "rank": int(ranks[i, j]),
                "above": int(counts.above[i, j]),
                "ties": int(counts.ties[i, j]),
                "unresolved": int(counts.unresolved[i, j]),
            }
            if ex_p is not None and np.isfinite(ex_p[j]):
                record["influence"] = float(ex_p[j])
            ex.append(record)
        top = []
        for k in range(min(store_top, counts.top_index.shape[1])):
            d = int(counts.top_index[i, k])
            if d < 0:
                continue
            item = [bench.distractor_ids[d], float(counts.top_scores[i, k])]
            if top_p is not None:
                item.append(float(top_p[k]))
            top.append(item)
        records.append(
            {
                "query_id": q.query_id,
                "model_id": q.model_id,
                "test_case": q.part.value,
                "prompt_type": q.prompt_type.value,
                "exemplars": ex,
                "top_distractors": top,
            }
        )
    return records


def build_result(
    bench: Benchmark,
    sub: Submission,
    settings: dict[str, Any],
    cells: list[dict[str, Any]],
    calibration: dict[str, Any],
    counts,
    flags: list[str],
    timings: dict[str, float],
    device: str,
    store_top: int,
) -> dict[str, Any]:
    result = {
        "schema_version": SCHEMA_VERSION,
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "benchmark": {
            "name": bench.name,
            "version": bench.version,
            "manifest_sha256": bench.manifest_sha256,
            "id_lists": id_list_hashes(bench),
        },
        "submission": {
            "name": sub.name,
            "kind": sub.kind,
            "description": sub.config["description"],
            # shown on the leaderboard and the report (links only through pages.safe_url)
            **{k: sub.config[k] for k in ("authors", "license", "url", "date") if k in sub.config},
            "sha256": sub.sha256,
            "files": sub.file_hashes,
        },
        "harness": {"version": __version__, "git_sha": git_sha()},
        "environment": {
            "python": platform.python_version(),
            "platform": platform.platform(terse=True),
            "device": device,
            "packages": package_versions(),
        },
        "settings": settings,
        "exact": counts.exact,
        "flags": flags,
        "metrics": cells,
        "calibration": calibration,
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "queries": query_records(
            bench,
            counts,
            store_top,
            TiePolicy(settings["tie_policy"]),
            calibration.get("calibrator"),
        ),
    }
    validate(result, "result", "result.json")
    return result


def write_result(result: dict[str, Any], out_dir: str | Path) -> Path:
    path = Path(out_dir) / "result.json"
    write_json(path, result)
    return path


def validate_result(result: Any, source: str | Path | None) -> dict[str, Any]:
    """``result`` if it is a schema-valid result of this schema version."""
    if not isinstance(result, dict) or result.get("schema_version") != SCHEMA_VERSION:
        found = result.get("schema_version") if isinstance(result, dict) else None
        raise ResultError(
            source,
            "schema_version",
            f"unsupported schema_version {found!r}",
            f"use a result written with schema_version {SCHEMA_VERSION} "
            f"(benchmark.load_result upgrades versions {sorted(UPGRADES)})",
        )
    validate(result, "result", source)
    return result


def parse_result(data: bytes, source: str | Path) -> dict[str, Any]:
    """A result from a file's bytes (gzip if ``source`` ends in ``.gz``), schema-checked."""
    gz = str(source).endswith(".gz")
    parsed = parse_json_bytes(data, source, "result file", gz=gz, max_bytes=MAX_JSON_BYTES)
    return validate_result(parsed, source)


def _v1_to_v2(result: dict[str, Any]) -> dict[str, Any]:
    """Schema 1 -> 2: nothing is renamed or removed. Version 1 files lack recall_norm@K (the
    upgrade does not invent cell estimates it cannot bootstrap exactly) and never come from
    an in-memory submission; ``upgraded_from`` records where the file started."""
    out = dict(result)
    out["schema_version"] = 2
    out["upgraded_from"] = result.get("upgraded_from", 1)
    return out


#: schema_version -> (the schema that version's files follow, the step to the next version).
UPGRADES: dict[int, tuple[str, Callable[[dict[str, Any]], dict[str, Any]]]] = {
    1: ("result.v1", _v1_to_v2),
}


def upgrade_result(result: Any, source: str | Path | None) -> dict[str, Any]:
    """``result`` brought to :data:`SCHEMA_VERSION` through :data:`UPGRADES`, each version
    checked against its own schema first; one line for a version this harness cannot read."""
    version = result.get("schema_version") if isinstance(result, dict) else None
    while isinstance(result, dict) and type(version) is int and version in UPGRADES:
        schema, step = UPGRADES[version]
        validate(result, schema, source)
        result = step(result)
        version = result["schema_version"]
    return validate_result(result, source)


def load_result(path: str | Path) -> dict[str, Any]:
    """Read a ``result.json`` (or ``.json.gz``) of any schema version this harness knows,
    upgraded to the current one and schema-checked; one line if it is not one.

    The results store reads with :func:`parse_result` instead, which admits only current files.
    """
    path = Path(path)
    data = read_file_capped(path, "result file", MAX_JSON_BYTES)
    parsed = parse_json_bytes(
        data, path, "result file", gz=str(path).endswith(".gz"), max_bytes=MAX_JSON_BYTES
    )
    return upgrade_result(parsed, path)


def stable_view(result: dict[str, Any]) -> dict[str, Any]:
    """The result without its volatile fields (what determinism is checked on)."""
    return {k: v for k, v in result.items() if k not in VOLATILE_FIELDS}


def stored_result_path(root: str | Path, result: dict[str, Any]) -> Path:
    """Where a results store keeps ``result``: ``<root>/<benchmark>@<version>/<name>.json.gz``
    (names checked, the path resolved inside ``root``; see ``benchmark.store``)."""
    from benchmark.store import entry_path

    return entry_path(root, result)


def store_result(root: str | Path, result: dict[str, Any], replace: bool = False) -> Path:
    """Add ``result`` to a results store: see ``benchmark.store.store_result``."""
    from benchmark.store import store_result as store

    return store(root, result, replace=replace)
