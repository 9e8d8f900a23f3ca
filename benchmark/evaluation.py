"""The one orchestrator: benchmark + submission -> rank counts -> metrics -> result dict."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmark import calibration as calib
from benchmark import features as feat
from benchmark import scoring, stats
from benchmark.benchmarks import resolve_benchmark
from benchmark.calibration import candidate_sets
from benchmark.errors import AttribBenchError, SubmissionError
from benchmark.metrics import MEASURES, RECALL_KS, per_query_bounds
from benchmark.progress import progress_bar
from benchmark.results import build_result
from benchmark.sandbox import SandboxOptions, extract_isolated
from benchmark.splits import Benchmark
from benchmark.submission import (
    Submission,
    check_benchmark,
    is_builtin,
    load_dense,
    load_extractor,
    load_features,
    load_submission,
    load_topk,
)
from benchmark.types import TEST_CASES, Part, TiePolicy


@dataclass(frozen=True)
class EvalConfig:
    """Everything that can change a result; recorded in it under ``settings``."""

    seed: int = 0
    tie_policy: TiePolicy = TiePolicy.PESSIMISTIC
    bootstrap_samples: int = stats.DEFAULT_SAMPLES
    ci_level: float = stats.DEFAULT_LEVEL
    top_n: int = scoring.DEFAULT_TOP_N  # distractors per query kept for calibration
    store_top: int = 10  # of those, stored per query in the result (for reports)
    ece_bins: int = 15

    def __post_init__(self) -> None:
        # Checked here, before any work: a seed numpy refuses or a bootstrap too large for
        # memory is one line, not a traceback after scoring (caps in benchmark.stats).
        stats.check_seed(self.seed, "--seed")
        stats.check_samples(self.bootstrap_samples, "--bootstrap-samples")
        stats.check_level(self.ci_level, "--ci-level")
        if self.top_n < 0 or self.store_top < 0 or self.store_top > max(self.top_n, 0):
            raise AttribBenchError(
                None, "top_n", "need 0 <= store_top <= top_n", "use the defaults"
            )

    def settings(self) -> dict[str, Any]:
        out = asdict(self)
        out["tie_policy"] = self.tie_policy.value
        out["recall_ks"] = list(RECALL_KS)
        out["calibration_candidates"] = (
            f"top {self.top_n} distractors by score plus all of the query's exemplars"
        )
        return out

    @classmethod
    def canonical(cls) -> EvalConfig:
        """The one configuration leaderboard entries are scored with: pessimistic ties (so a
        constant scorer cannot win), the default bootstrap (samples, CI level, seed) and the
        default calibration candidates (top_n, store_top, ece_bins). Other configurations are
        for diagnosis only."""
        return cls()

    @classmethod
    def canonical_difference(cls, settings: dict[str, Any]) -> str | None:
        """None if a result's ``settings`` are the canonical ones; else the first field that
        differs, as one phrase ("tie_policy is 'optimistic', canonical is 'pessimistic'")."""
        canonical = cls.canonical().settings()
        if not isinstance(settings, dict):
            return "settings are not an object"
        for key in [*canonical, *sorted(k for k in settings if k not in canonical)]:
            if key not in settings:
                return f"{key} is missing"
            if key not in canonical:
                return f"{key} is not a setting of this harness"
            mine, theirs = canonical[key], settings[key]
            if type(mine) is not type(theirs) or mine != theirs:
                return f"{key} is {theirs!r}, canonical is {mine!r}"
        return None

    @classmethod
    def is_canonical(cls, settings: dict[str, Any]) -> bool:
        return cls.canonical_difference(settings) is None


@dataclass(frozen=True)
class RunOptions:
    """What may differ between two runs without changing the result."""

    device: str | None = None
    batch_size: int | None = None
    progress: bool = True
    cache: bool = True
    #: How submitted extractor code runs (backend, limits, --trust-code); see benchmark.sandbox.
    sandbox: SandboxOptions = field(default_factory=SandboxOptions)

    def __post_init__(self) -> None:
        feat.check_batch_size(self.batch_size)


@dataclass(frozen=True)
class UserExtractor(Submission):
    """An extractor object from the caller's own Python session (``benchmark.evaluate(obj)``).

    It runs in-process, like the rest of the caller's code: there is no submitted code to
    sandbox, but also no files to hash or re-run, so its results record
    ``environment.isolation = "in-process (user object)"`` and ``submission.origin`` and a
    results store refuses them (save it as a submission folder to enter a leaderboard).
    """

    extractor: Any = field(default=None, compare=False)


def evaluate(
    submission: str | Path | Submission,
    benchmark: str | Path | Benchmark | None = None,
    config: EvalConfig | None = None,
    options: RunOptions | None = None,
) -> dict[str, Any]:
    """Score a submission on a benchmark; return the schema-valid result dict.

    Without ``benchmark``: the one the submission's ``benchmark`` field names, else the default.
    """
    config = config or EvalConfig()
    options = options or RunOptions()
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    sub = submission if isinstance(submission, Submission) else load_submission(submission)
    if benchmark is None and sub.config.get("benchmark"):
        # Precomputed files name the benchmark they were made for: that is the one to use.
        benchmark = sub.config["benchmark"].partition("@")[0]
    bench = benchmark if isinstance(benchmark, Benchmark) else resolve_benchmark(benchmark)
    check_benchmark(sub, bench)
    timings["load_s"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    stored: dict[str, Any] = {}
    counts, device = rank_counts(sub, bench, config, options, timings, stored)
    timings["scoring_s"] = time.perf_counter() - t1 - timings.get("features_s", 0.0)
    return result_from_counts(sub, bench, config, counts, device, timings, stored, t0)


def result_from_counts(
    sub: Submission,
    bench: Benchmark,
    config: EvalConfig,
    counts: scoring.RankCounts,
    device: torch.device | str,
    timings: dict[str, float],
    stored: dict[str, Any],
    t0: float,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Metrics, calibration and the result dict from finished counts. Shared by one-process,
    merged (benchmark.shards) and distributed runs so all three write the same bytes;
    ``extra`` (approximate runs only) adds a non-canonical ``settings`` entry and flags."""
    t2 = time.perf_counter()
    cells, flags = aggregate(counts, bench, config)
    if extra:
        flags = sorted({*flags, *extra["flags"]})
    calibration = calibrate(counts, bench, config, stored.get("calibrator"))
    timings["metrics_s"] = time.perf_counter() - t2
    timings["total_s"] = time.perf_counter() - t0
    result = build_result(
        bench,
        sub,
        {**config.settings(), **(extra["settings"] if extra else {})},
        cells,
        calibration,
        counts,
        flags,
        timings,
        str(device),
        config.store_top,
    )
    if "isolation" in stored:  # how the extractor's code ran (bwrap, unshare, none, in-process)
        result["environment"]["isolation"] = stored["isolation"]
    return result


# --------------------------------------------------------------------------------------------
# rank counts for each submission kind


def _exemplar_layout(bench: Benchmark) -> tuple[list[tuple[str, ...]], list[list[int]]]:
    """Per evaluated query: its exemplar ids and their columns in ``candidate_ids``."""
    column = {c: i for i, c in enumerate(bench.candidate_ids)}
    ids = [bench.model(q.model_id).exemplar_ids for q in bench.evaluated_queries]
    return ids, [[column[e] for e in ex] for ex in ids]


def rank_counts(
    sub: Submission,
    bench: Benchmark,
    config: EvalConfig,
    options: RunOptions,
    timings: dict[str, float],
    stored: dict[str, Any] | None = None,
    distractors: tuple[int, int] | None = None,
    score=scoring.score_features,
) -> tuple[scoring.RankCounts, torch.device | str]:
    """Rank counts of every evaluated query; ``stored`` receives an extractor's calibrator.

    ``distractors`` = (start, stop) scores only that contiguous range of distractor rows
    (a shard, benchmark.shards; top indices are then relative to ``start``), features and
    extractor submissions only. ``score`` replaces the exact scorer (benchmark.approximate).
    """
    qids = [q.query_id for q in bench.evaluated_queries]
    ex_ids, ex_cols = _exemplar_layout(bench)
    n_d = len(bench.distractor_ids)
    d0, d1 = distractors or (0, n_d)
    kw = {"query_ids": qids, "exemplar_ids": ex_ids, "top_n": config.top_n}
    if sub.kind == "similarity" and sub.config["similarity"]["format"] == "dense":
        matrix = load_dense(sub, bench)
        with progress_bar(len(qids), "scoring queries", options.progress) as bar:
            return scoring.score_dense(matrix, n_d, ex_cols, progress=bar, **kw), "cpu"
    if sub.kind == "similarity":
        top = load_topk(sub, bench)
        return scoring.score_topk(
            top.indices, top.scores, top.positive_scores, n_d, ex_cols, **kw
        ), "cpu"
    if sub.kind == "features":
        arrays = load_features(sub, bench)
        queries = torch.from_numpy(np.asarray(arrays.queries[arrays.query_rows], np.float32))
        rows = arrays.candidate_rows
        exemplars = torch.from_numpy(np.asarray(arrays.candidates[rows[n_d:]], np.float32))
        gallery = _rows_reader(arrays.candidates, rows[d0:d1])
        device: torch.device | str = "cpu"
    else:
        t = time.perf_counter()
        queries, exemplars, gallery, device = extract_features(
            sub, bench, options, stored, distractors
        )
        timings["features_s"] = time.perf_counter() - t
    local_cols = [[c - n_d for c in cols] for cols in ex_cols]
    with progress_bar(d1 - d0, "scoring distractors", options.progress) as bar:
        counts = score(
            queries,
            exemplars,
            local_cols,
            gallery,
            progress=bar,
            distractor_ids=bench.distractor_ids[d0:d1],
            source=sub.yaml_path,
            **kw,
        )
    return counts, device


def _rows_reader(array: np.ndarray, rows: np.ndarray):
    """Chunks of ``array[rows]`` as float32 tensors, reading a slice when rows are in order."""
    contiguous = len(rows) == 0 or bool((np.diff(rows) == 1).all())

    def chunks(size: int) -> Iterator[torch.Tensor]:
        for a in range(0, len(rows), size):
            if contiguous:
                block = array[rows[0] + a : rows[0] + min(a + size, len(rows))]
            else:
                block = array[rows[a : a + size]]
            yield torch.from_numpy(np.array(block, np.float32))

    return chunks


def extract_features(
    sub: Submission,
    bench: Benchmark,
    options: RunOptions,
    stored: dict[str, Any] | None = None,
    distractors: tuple[int, int] | None = None,
):
    """Query, exemplar and distractor features of an extractor submission (distractor rows
    ``distractors`` = (start, stop) only, when given: a shard of a sharded run).

    A submitted extractor runs in a sandboxed child (:mod:`benchmark.sandbox`): this process
    never imports it, keys its cache by the submission's file hashes and ignores any
    calibrator it claims to ship. Built-in catalog baselines (``baseline_submission``: harness
    code and pinned weights, no submitted code) run here, so tuned heads share their
    backbone's cached features with ``train-tuned`` and their stored calibrators apply.
    """
    device = feat.pick_device(options.device)
    batch = options.batch_size or sub.config["extractor"].get("batch_size")
    feat.check_batch_size(batch)
    qids = [q.query_id for q in bench.evaluated_queries]
    ex_ids = list(bench.evaluated_exemplar_ids)
    d_ids = list(bench.distractor_ids)
    d_ids = d_ids[distractors[0] : distractors[1]] if distractors else d_ids
    d_wanted = set(d_ids) if distractors else None
    total = len(qids) + len(ex_ids) + len(d_ids)
    module = sub.config["extractor"]["entry"].partition(":")[0]
    source = str(sub.root / module) if module.endswith(".py") else module
    user = sub.extractor if isinstance(sub, UserExtractor) else None
    if not is_builtin(sub) and user is None:
        cache = feat.FeatureCache(feat.submission_cache_key(sub.sha256)) if options.cache else None
        tables = [("queries", set(qids), "query"), ("exemplars", set(ex_ids), "gallery"),
                  ("distractors", d_wanted, "gallery")]
        with progress_bar(total, "extracting features", options.progress) as bar:
            rows, backend = extract_isolated(
                sub, bench, tables, cache=cache, device=device, batch_size=batch,
                options=options.sandbox, source=source, progress=bar,
            )
        if stored is not None:
            stored["isolation"] = backend if backend != "none" else "none (--trust-code)"
        queries = feat.stack(rows["queries"], qids)
        exemplars = feat.stack(rows["exemplars"], ex_ids)
        gallery = feat.stack(rows["distractors"], d_ids)
        return queries, exemplars, _unit_gallery(gallery, d_ids, sub), device
    extractor = user if user is not None else load_extractor(sub)
    if hasattr(extractor, "to"):
        extractor = extractor.to(device) or extractor
    if stored is not None:
        stored["isolation"] = (
            "in-process (user object)" if user is not None else "in-process (built-in baseline)"
        )
        if user is None and callable(getattr(extractor, "stored_calibrator", None)):
            stored["calibrator"] = extractor.stored_calibrator(bench.name, bench.version)
    # An extractor with a ``backbone`` and ``project`` (tuned heads) caches the backbone's
    # features, so retraining heads never re-runs the backbone.
    project = getattr(extractor, "project", None)
    runner = getattr(extractor, "backbone", None) if project else None
    runner = runner or extractor
    cache = feat.FeatureCache(feat.cache_key(runner, sub.sha256)) if options.cache else None
    with progress_bar(total, "extracting features", options.progress) as bar:
        common = {
            "cache": cache,
            "device": device,
            "batch_size": batch,
            "progress": bar,
            "source": source,
            "runner": feat._Runner(runner, None, device, 0, source),
        }
        q = feat.extract_table(runner, bench, "queries", set(qids), role="query", **common)
        x = feat.extract_table(runner, bench, "exemplars", set(ex_ids), role="gallery", **common)
        d = feat.extract_table(runner, bench, "distractors", d_wanted, role="gallery", **common)
    queries = feat.stack(q, qids)
    exemplars = feat.stack(x, ex_ids)
    distractors = feat.stack(d, d_ids)
    if runner is not extractor:
        with torch.inference_mode():
            queries = project(queries, "synth").cpu()
            exemplars = project(exemplars, "real").cpu()
            distractors = project(distractors, "real").cpu()
    if queries.shape[1] != distractors.shape[1]:
        raise SubmissionError(
            sub.yaml_path,
            "extractor",
            f"query features have dim "
            f"{queries.shape[1]} but gallery features {distractors.shape[1]}",
            "embed_query and embed must return the same dim",
        )

    return queries, exemplars, _unit_gallery(distractors, d_ids, sub), device


def _unit_gallery(distractors: torch.Tensor, ids: list[str], sub: Submission):
    """Extracted distractor features, normalized once (in place) before scoring streams them
    (scoring.UnitGallery); an all-zero row is named as the scorer would name it."""
    return scoring.UnitGallery.normalize(distractors, ids, sub.yaml_path)


# --------------------------------------------------------------------------------------------
# metrics and calibration


def query_metrics(counts: scoring.RankCounts, policy: TiePolicy):
    """(lower, upper) per-query values of every measure."""
    return per_query_bounds(counts.above, counts.ties, counts.unresolved, policy)


def aggregate(counts: scoring.RankCounts, bench: Benchmark, config: EvalConfig):
    """Mean and cluster-bootstrap CI of every measure per test case x prompt type."""
    lower, upper = query_metrics(counts, config.tie_policy)
    queries = bench.evaluated_queries
    parts = np.array([q.part.value for q in queries])
    ptypes = np.array([q.prompt_type.value for q in queries])
    models = np.array([q.model_id for q in queries])
    cells, flags = [], []
    for part in TEST_CASES:
        for ptype in sorted(set(ptypes[parts == part.value])):
            sel = (parts == part.value) & (ptypes == ptype)
            stream = f"{part.value}/{ptype}"
            inverse, draws = stats.cluster_resamples(
                models[sel], config.seed, stream, config.bootstrap_samples
            )
            values = {}
            for m in MEASURES:
                lo, hi = lower[m.name][sel], upper[m.name][sel]
                iv_lo = stats.percentile_interval(
                    float(lo.mean()), stats.resampled_means(lo, inverse, draws), config.ci_level
                )
                if np.array_equal(lo, hi):
                    values[m.name] = {
                        "value": iv_lo.value,
                        "ci_low": iv_lo.low,
                        "ci_high": iv_lo.high,
                    }
                    continue
                iv_hi = stats.percentile_interval(
                    float(hi.mean()), stats.resampled_means(hi, inverse, draws), config.ci_level
                )
                values[m.name] = {
                    "value": None,
                    "lower": iv_lo.value,
                    "upper": iv_hi.value,
                    "ci_low": iv_lo.low,
                    "ci_high": iv_hi.high,
                }
                flags.append(
                    f"{stream}: {m.name} is bounded, not exact: a top-K list does not "
                    "order every distractor against every exemplar"
                )
            cells.append(
                {
                    "test_case": part.value,
                    "prompt_type": ptype,
                    "num_models": len(set(models[sel])),
                    "num_queries": int(sel.sum()),
                    "metrics": values,
                }
            )
    return cells, sorted(set(flags))


def calibrate(
    counts: scoring.RankCounts,
    bench: Benchmark,
    config: EvalConfig,
    stored: dict[str, Any] | None = None,
):
    """Fit AbC's calibrator on ``val`` (or use ``stored``, one the submission ships, fitted on
    this benchmark's val); report it on every test cell and on all test queries."""
    parts = np.array([q.part.value for q in bench.evaluated_queries])
    val = np.flatnonzero(parts == Part.VAL.value)
    if config.top_n == 0:
        return {"skipped": "top_n = 0: no distractor scores were kept"}
    if stored is not None:
        cal = calib.Calibrator(float(stored["temperature"]), float(stored["threshold"]))
        fitted_on = f"val, stored with the submission ({stored.get('source', 'extractor')})"
    elif len(val) == 0:
        return {"skipped": "the benchmark has no val queries to fit the calibrator on"}
    else:
        cal = calib.fit_calibrator(*candidate_sets(counts, val))
        fitted_on = "val"
    ptypes = np.array([q.prompt_type.value for q in bench.evaluated_queries])
    test = np.flatnonzero(parts != Part.VAL.value)
    cells = []
    for part in TEST_CASES:
        for ptype in sorted(set(ptypes[parts == part.value])):
            rows = np.flatnonzero((parts == part.value) & (ptypes == ptype))
            m = calib.calibration_metrics(cal, *candidate_sets(counts, rows), bins=config.ece_bins)
            m.pop("reliability")
            cells.append({"test_case": part.value, "prompt_type": ptype, **m})
    return {
        "fitted_on": fitted_on,
        "num_fit_queries": len(val),
        "calibrator": cal.to_dict(),
        "test": calib.calibration_metrics(cal, *candidate_sets(counts, test), bins=config.ece_bins),
        "cells": cells,
    }
