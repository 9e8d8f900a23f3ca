"""Verification: a maintainer's canonical re-run becomes the leaderboard entry.

``verify`` takes a fresh result (the maintainer's re-run of the entry's submission with
``EvalConfig.canonical()``) and either

- finds that it reproduces the stored entry's metrics (within ``VERIFY_TOLERANCE``): the
  stored file is REPLACED by the re-run (atomically) and ``verified.json`` records the sha256
  of exactly those bytes, so every number, label, count, calibration value and per-query record
  under a badge is one the re-run produced, and any later edit of the file drops the badge; or
- refuses with one line naming the largest difference, leaving the entry as it was.

Both happen under the store's lock, so a concurrent ``add`` cannot slip in between.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmark import __version__
from benchmark.errors import AttribBenchError, ResultError
from benchmark.fileio import read_json, write_bytes_atomic, write_json
from benchmark.schemas import validate
from benchmark.store import (
    check_storable,
    entry_key,
    entry_path,
    file_sha256,
    locked,
    read_entry,
    result_bytes,
)

RESULTS_DIR = "results"
VERIFIED_FILE = "verified.json"
#: Largest metric difference a verification re-run may show (float noise across machines).
VERIFY_TOLERANCE = 1e-6
_FIELDS = ("value", "lower", "upper", "ci_low", "ci_high")


def read_verified(root: str | Path, path: Path | None = None) -> dict[str, Any]:
    """The verification records of a leaderboard folder (``{}`` when it has none); a file that
    is not a JSON object of valid records is one line."""
    path = path or Path(root) / VERIFIED_FILE
    if not path.is_file():
        return {}
    records = read_json(path, "verification file")
    if not isinstance(records, dict):
        kinds = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
        raise AttribBenchError(
            path,
            None,
            f"is {kinds.get(type(records), 'a number')}, not a JSON object of entry records",
            "restore it from version control, or delete it and re-verify the entries",
        )
    validate(records, "verified", path)
    return records


def badge(records: dict[str, Any], key: str, sha256: str) -> dict[str, Any] | None:
    """The record of ``key`` if it binds exactly the stored file's bytes, else None."""
    mark = records.get(key)
    return mark if mark is not None and mark["file_sha256"] == sha256 else None


def check_same_entry(stored: dict[str, Any], fresh: dict[str, Any], source: Path) -> str:
    """Refuse a re-run of another key, benchmark build or set of submission files."""
    key = entry_key(stored, source)
    if entry_key(fresh) != key:
        raise ResultError(
            source, "key", f"the re-run is {entry_key(fresh)}, not {key}", "re-run that entry"
        )
    if stored["benchmark"]["manifest_sha256"] != fresh["benchmark"]["manifest_sha256"]:
        raise ResultError(
            source,
            "benchmark.manifest_sha256",
            "the re-run used another benchmark build",
            "verify on the same benchmark",
        )
    if stored["submission"]["sha256"] != fresh["submission"]["sha256"]:
        ours, theirs = stored["submission"]["files"], fresh["submission"]["files"]
        differ = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
        raise ResultError(
            source,
            "submission.files",
            f"{key}: the re-run's files differ ({', '.join(differ[:3])})",
            "verify with exactly the submitted files",
        )
    return key


def metric_difference(stored: dict[str, Any], fresh: dict[str, Any]) -> tuple[float, str]:
    """The largest absolute difference between two runs' metrics, and where it is
    (``inf`` when one run has a cell, measure or bound the other lacks)."""
    cells = {(c["test_case"], c["prompt_type"]): c for c in fresh["metrics"]}
    mine = {(c["test_case"], c["prompt_type"]) for c in stored["metrics"]}
    if mine != set(cells) or len(mine) != len(stored["metrics"]):
        return float("inf"), "the test cells differ"
    worst, where = 0.0, "none"
    for cell in stored["metrics"]:
        test, ptype = cell["test_case"], cell["prompt_type"]
        other = cells[(test, ptype)]
        for name in ("num_models", "num_queries"):
            if cell[name] != other[name]:
                return float("inf"), f"{test}/{ptype} {name}"
        if set(cell["metrics"]) != set(other["metrics"]):
            return float("inf"), f"{test}/{ptype}: the measures differ"
        for m, est in cell["metrics"].items():
            for field in _FIELDS:
                x, y = est.get(field), other["metrics"][m].get(field)
                if x is None and y is None:
                    continue
                here = f"{test}/{ptype} {m} {field}"
                if x is None or y is None:
                    return float("inf"), f"{here} is bounded in one run only"
                if abs(x - y) > worst:
                    worst, where = abs(x - y), f"{here}: submitted {x:.6f}, re-run {y:.6f}"
    return worst, where


def verify(root: str | Path, fresh: dict[str, Any]) -> dict[str, Any]:
    """Make ``fresh`` (a maintainer's canonical re-run) the stored entry of its key and mark
    it verified, or refuse; return the verification record.

    Refused with one line, nothing changed: a non-canonical or unregistered re-run, no stored
    entry, a stored entry that is not admissible (e.g. not canonical), another benchmark build
    or other submission files, or metrics that differ by more than ``VERIFY_TOLERANCE``.
    """
    root = Path(root)
    results = root / RESULTS_DIR
    check_storable(fresh, "the re-run")
    key = entry_key(fresh)
    path = entry_path(results, fresh)
    data = result_bytes(fresh)
    with locked(results):
        if not path.is_file():
            raise ResultError(
                path, None, f"no stored entry {key}", "add the result first (leaderboard add)"
            )
        stored, _ = read_entry(results, path)
        check_same_entry(stored, fresh, path)
        worst, where = metric_difference(stored, fresh)
        if not worst <= VERIFY_TOLERANCE:
            raise ResultError(
                path,
                "metrics",
                f"{key} does not reproduce: largest difference {worst:.3g} ({where})",
                "the entry stays as submitted, self-reported; ask the submitter",
            )
        records = read_verified(root)  # a broken verified.json stops us before any write
        write_bytes_atomic(path, data)
        record = {
            "file_sha256": file_sha256(data),
            "verified_at": datetime.now(UTC).strftime("%Y-%m-%d"),
            "harness_version": __version__,
            "harness_git_sha": fresh["harness"]["git_sha"],
            "device": fresh["environment"]["device"],
            "settings": "canonical",
            "max_abs_metric_difference": worst,
        }
        records[key] = record
        write_json(root / VERIFIED_FILE, dict(sorted(records.items())))
    return record


def stored_entry(root: str | Path, benchmark: str, version: str, name: str) -> Path:
    """The stored file a verification of ``benchmark@version/name`` would replace, checked
    now (before a long re-run): present and admissible (canonical, registered, sane)."""
    results = Path(root) / RESULTS_DIR
    stub = {"benchmark": {"name": benchmark, "version": version}, "submission": {"name": name}}
    path = entry_path(results, stub)
    if not path.is_file():
        raise ResultError(
            path,
            None,
            f"no stored entry {entry_key(stub)}",
            "add the result first (leaderboard add)",
        )
    read_entry(results, path)
    return path


def reverify(
    root: str | Path,
    submission: Any,
    benchmark: str | None = None,
    sandbox: Any = None,
) -> tuple[Any, str, dict[str, Any]]:
    """Re-run ``submission`` (a folder or a loaded :class:`~benchmark.submission.Submission`)
    with ``EvalConfig.canonical()`` and :func:`verify` it against its stored entry.

    The benchmark is ``benchmark``, else the one the submission names. The stored entry is
    checked before the (long) re-run; the stored settings are never used, since a submitter
    chose those. Returns ``(benchmark, submission name, verification record)``.
    """
    from benchmark.benchmarks import resolve_benchmark
    from benchmark.evaluation import EvalConfig, RunOptions, evaluate
    from benchmark.submission import load_submission

    sub = load_submission(submission) if isinstance(submission, str | Path) else submission
    bench = resolve_benchmark(
        benchmark or (sub.config.get("benchmark") or "").partition("@")[0] or None
    )
    stored_entry(root, bench.name, bench.version, sub.name)  # refuse before the re-run
    options = RunOptions(progress=False, cache=False, sandbox=sandbox)
    fresh = evaluate(sub, bench, EvalConfig.canonical(), options)
    return bench, sub.name, verify(root, fresh)
