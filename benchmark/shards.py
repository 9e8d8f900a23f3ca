"""Sharded runs without a process group: score one distractor shard, write partial counts,
merge the partials into the result a single-process run writes.

Counts over disjoint distractor shards add up (DESIGN.md, "Scoring rules"): shard I of N
scores the contiguous distractor rows ``[n*I//N, n*(I+1)//N)`` against every query (queries
and exemplars are always whole) and writes ``partial-IIIII-of-NNNNN.safetensors`` (counts and
the shard's top-N) plus a JSON sidecar naming the benchmark manifest, the submission's
sha256, the shard and the settings. :func:`merge` checks the partials are compatible,
complete and disjoint, sums the counts, merges the top-N lists (by score, then distractor
index) and builds the result with the same code a single-process run uses, so the two agree
byte for byte apart from ``created`` and ``timings``.

Partials are safetensors and JSON only (never pickles): a partial from a shared folder is
data, and every field is checked before use.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from benchmark import scoring
from benchmark.benchmarks import resolve_benchmark
from benchmark.errors import AttribBenchError
from benchmark.evaluation import EvalConfig, RunOptions, rank_counts, result_from_counts
from benchmark.splits import Benchmark
from benchmark.submission import Submission, check_benchmark, is_builtin, load_submission

PARTIAL_VERSION = 1
_SPEC = re.compile(r"^(\d+)/(\d+)$")
_NAME = re.compile(r"^partial-(\d{5})-of-(\d{5})\.json$")
_ARRAYS = ("exemplar_scores", "above", "ties", "unresolved", "top_index", "top_scores")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (0-based) of ``count`` contiguous distractor ranges."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str, field: str = "--shard") -> Shard:
        """``"I/N"`` with 0 <= I < N, else a one-line error."""
        m = _SPEC.match(text.strip())
        if not m or int(m.group(2)) < 1 or int(m.group(1)) >= int(m.group(2)):
            raise AttribBenchError(
                None,
                field,
                f"{text!r} is not a shard spec I/N with 0 <= I < N",
                "write e.g. --shard 0/4 "
                "(SLURM: --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)",
            )
        return cls(int(m.group(1)), int(m.group(2)))

    def range(self, n: int) -> tuple[int, int]:
        """This shard's distractor rows [start, stop): balanced, contiguous, disjoint."""
        return n * self.index // self.count, n * (self.index + 1) // self.count

    @property
    def stem(self) -> str:
        return f"partial-{self.index:05d}-of-{self.count:05d}"


def load_inputs(
    submission: str | Path | Submission, benchmark: str | Path | Benchmark | None
) -> tuple[Submission, Benchmark]:
    """The submission and its benchmark, resolved exactly as ``evaluate`` does."""
    sub = submission if isinstance(submission, Submission) else load_submission(submission)
    if benchmark is None and sub.config.get("benchmark"):
        benchmark = sub.config["benchmark"].partition("@")[0]
    bench = benchmark if isinstance(benchmark, Benchmark) else resolve_benchmark(benchmark)
    check_benchmark(sub, bench)
    return sub, bench


def check_shardable(sub: Submission, bench: Benchmark, count: int, field: str) -> None:
    """Sharding splits features; similarity files are scored whole in one pass."""
    if sub.kind == "similarity":
        raise AttribBenchError(
            sub.yaml_path,
            field,
            "similarity submissions cannot be sharded (their scores are one file)",
            "run evaluate without sharding, or submit features / an extractor",
        )
    if count > len(bench.distractor_ids):
        raise AttribBenchError(
            None,
            field,
            f"{count} shards but only {len(bench.distractor_ids)} distractors",
            "use at most one shard per distractor",
        )


def score_shard(
    submission: str | Path | Submission,
    benchmark: str | Path | Benchmark | None,
    shard: Shard,
    config: EvalConfig | None = None,
    options: RunOptions | None = None,
) -> tuple[scoring.RankCounts, dict[str, Any]]:
    """Counts of one shard (top indices relative to its first row) and its sidecar record."""
    config = config or EvalConfig()
    options = options or RunOptions()
    t0 = time.perf_counter()
    sub, bench = load_inputs(submission, benchmark)
    check_shardable(sub, bench, shard.count, "--shard")
    start, stop = shard.range(len(bench.distractor_ids))
    timings: dict[str, float] = {}
    stored: dict[str, Any] = {}
    counts, device = rank_counts(sub, bench, config, options, timings, stored, (start, stop))
    timings["shard_s"] = time.perf_counter() - t0
    meta = {
        "partial_version": PARTIAL_VERSION,
        "benchmark": {
            "name": bench.name,
            "version": bench.version,
            "manifest_sha256": bench.manifest_sha256,
            "root": str(bench.root),
        },
        "submission": {
            "sha256": sub.sha256,
            "path": str(sub.root),
            # a catalog baseline has no folder of its own: merge rebuilds it from these
            "baseline": sub.config["extractor"]["kwargs"] if is_builtin(sub) else None,
        },
        "shard": {"index": shard.index, "count": shard.count, "start": start, "stop": stop},
        "num_distractors": len(bench.distractor_ids),
        "settings": config.settings(),
        "device": str(device),
        "stored": {k: v for k, v in stored.items() if k in ("calibrator", "isolation")},
        "timings": timings,
    }
    return counts, meta


def write_partial(out_dir: str | Path, counts: scoring.RankCounts, meta: dict[str, Any]) -> Path:
    """Write one shard's arrays and sidecar (the JSON last, so its presence means complete)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shard = Shard(meta["shard"]["index"], meta["shard"]["count"])
    arrays = {k: np.ascontiguousarray(getattr(counts, k)) for k in _ARRAYS}
    save_file(arrays, str(out / f"{shard.stem}.safetensors"))
    record = {**meta, "query_ids": counts.query_ids}
    tmp = out / f".{shard.stem}.json.tmp"
    tmp.write_text(json.dumps(record, sort_keys=True, indent=1) + "\n")
    tmp.replace(out / f"{shard.stem}.json")
    return out / f"{shard.stem}.json"


def evaluate_shard(
    submission: str | Path | Submission,
    benchmark: str | Path | Benchmark | None,
    shard: Shard,
    out_dir: str | Path,
    config: EvalConfig | None = None,
    options: RunOptions | None = None,
) -> Path:
    """Score one shard and write its partial into ``out_dir``; return the sidecar's path."""
    counts, meta = score_shard(submission, benchmark, shard, config, options)
    return write_partial(out_dir, counts, meta)


def _fail(path: Path | None, field: str, problem: str, fix: str) -> AttribBenchError:
    return AttribBenchError(path, field, problem, fix)


def _read_partial(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _fail(
            path, "partial", f"unreadable ({exc.__class__.__name__})", "rerun that shard"
        ) from None
    if not isinstance(meta, dict) or meta.get("partial_version") != PARTIAL_VERSION:
        raise _fail(path, "partial_version", "not a partial of this harness", "rerun that shard")
    tensors = path.with_suffix(".safetensors")
    try:
        arrays = load_file(str(tensors))
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise _fail(
            tensors, "partial", f"unreadable ({exc.__class__.__name__})", "rerun that shard"
        ) from None
    if set(arrays) != set(_ARRAYS):
        raise _fail(tensors, "partial", "wrong arrays", "rerun that shard")
    return meta, arrays


def _find_partials(dirs: list[str | Path]) -> list[Path]:
    found: dict[str, Path] = {}
    for d in dirs:
        d = Path(d)
        if not d.is_dir():
            raise _fail(d, "merge", "not a folder", "pass the --partial-out folder(s)")
        for p in sorted(d.iterdir()):
            if _NAME.match(p.name):
                if p.name in found and found[p.name].resolve() != p.resolve():
                    raise _fail(
                        p, "shard", f"also in {found[p.name].parent}", "keep one copy of each"
                    )
                found[p.name] = p
    if not found:
        raise _fail(Path(dirs[0]), "merge", "no partial-*.json files", "run evaluate --shard")
    return [found[k] for k in sorted(found)]


def read_partials(
    dirs: list[str | Path],
) -> tuple[dict[str, Any], scoring.RankCounts]:
    """Check the partials in ``dirs`` (same inputs and settings, every shard of one split,
    disjoint and covering) and sum them; return the first sidecar and the merged counts."""
    paths = _find_partials(dirs)
    first: dict[str, Any] | None = None
    merged: scoring.RankCounts | None = None
    seen: set[int] = set()
    for path in paths:
        meta, arrays = _read_partial(path)
        shard = meta.get("shard", {})
        if first is None:
            first = meta
        for key in ("benchmark", "submission", "settings", "num_distractors", "query_ids"):
            if meta.get(key) != first.get(key):
                raise _fail(
                    path, key, f"differs from {paths[0].name}'s", "merge partials of one run only"
                )
        n, count, index = meta["num_distractors"], shard.get("count"), shard.get("index")
        if count != first["shard"]["count"]:
            raise _fail(
                path, "shard.count", f"{count} vs {first['shard']['count']}", "merge one split"
            )
        if not isinstance(index, int) or not 0 <= index < count or index in seen:
            raise _fail(path, "shard.index", f"{index!r} repeated or out of range", "rerun it")
        seen.add(index)
        expect = Shard(index, count).range(n)
        if (shard.get("start"), shard.get("stop")) != expect:
            raise _fail(path, "shard", f"rows do not match shard {index}/{count}", "rerun it")
        q = len(first["query_ids"])
        if arrays["above"].shape[0] != q or arrays["top_index"].shape[0] != q:
            raise _fail(path, "partial", "array shapes do not match the queries", "rerun it")
        part = scoring.RankCounts(
            list(meta["query_ids"]),
            [()] * q,  # exemplar ids are taken from the benchmark when the result is built
            *(arrays[k] for k in _ARRAYS),
        )
        if merged is None:
            top = part.top_index
            merged = scoring.RankCounts(
                part.query_ids,
                part.exemplar_ids,
                part.exemplar_scores,
                part.above,
                part.ties,
                part.unresolved,
                np.where(top >= 0, top + expect[0], -1),
                part.top_scores,
            )
        else:
            if not np.array_equal(part.exemplar_scores, merged.exemplar_scores, equal_nan=True):
                raise _fail(path, "exemplar_scores", "differ between shards", "rerun it")
            merged = merged.merge(part, expect[0])
    if first is None or merged is None:  # _find_partials refuses an empty list already
        raise _fail(Path(dirs[0]), "merge", "no partial-*.json files", "run evaluate --shard")
    missing = sorted(set(range(first["shard"]["count"])) - seen)
    if missing:
        raise _fail(
            Path(dirs[0]),
            "merge",
            f"shard(s) {', '.join(map(str, missing[:5]))} of {first['shard']['count']} missing",
            "run those shards first",
        )
    return first, merged


def merge(
    dirs: list[str | Path],
    submission: str | Path | None = None,
    benchmark: str | Path | None = None,
) -> dict[str, Any]:
    """The result of a sharded run: partials checked and summed, then scored as usual.

    The submission and benchmark are reloaded (from the sidecar's paths unless given) and
    must hash to what the shards scored.
    """
    t0 = time.perf_counter()
    meta, counts = read_partials(dirs)
    baseline = meta["submission"].get("baseline")
    if submission is None and isinstance(baseline, dict):
        from baselines.models import baseline_submission

        submission = baseline_submission(str(baseline.get("name")), baseline.get("weights"))
    sub, bench = load_inputs(
        submission or meta["submission"]["path"], benchmark or meta["benchmark"]["root"]
    )
    where = Path(dirs[0])
    if sub.sha256 != meta["submission"]["sha256"]:
        raise _fail(
            where,
            "submission.sha256",
            "the submission changed since the shards ran",
            "rerun the shards",
        )
    if bench.manifest_sha256 != meta["benchmark"]["manifest_sha256"]:
        raise _fail(
            where,
            "benchmark.manifest_sha256",
            "another benchmark build",
            "pass the benchmark the shards scored",
        )
    config = config_from_settings(meta["settings"], where)
    ex_ids = [bench.model(q.model_id).exemplar_ids for q in bench.evaluated_queries]
    if [q.query_id for q in bench.evaluated_queries] != counts.query_ids:
        raise _fail(where, "query_ids", "do not match the benchmark", "rerun the shards")
    counts.exemplar_ids = ex_ids
    timings: dict[str, float] = {}
    stored = dict(meta.get("stored") or {})
    return result_from_counts(sub, bench, config, counts, meta["device"], timings, stored, t0)


def config_from_settings(settings: dict[str, Any], where: Path | None) -> EvalConfig:
    """The EvalConfig whose ``settings()`` are ``settings`` (checked by round trip)."""
    from benchmark.types import TiePolicy

    fields = ("seed", "bootstrap_samples", "ci_level", "top_n", "store_top", "ece_bins")
    try:
        config = EvalConfig(
            tie_policy=TiePolicy(settings["tie_policy"]), **{k: settings[k] for k in fields}
        )
    except (KeyError, ValueError, TypeError):
        config = None
    if config is None or config.settings() != settings:
        raise _fail(where, "settings", "not settings of this harness", "rerun the shards")
    return config


def torch_counts(counts: scoring.RankCounts) -> dict[str, torch.Tensor]:
    """The arrays of ``counts`` as tensors (for collectives in benchmark.distributed)."""
    return {k: torch.from_numpy(np.ascontiguousarray(getattr(counts, k))) for k in _ARRAYS}
