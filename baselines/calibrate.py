"""Stored calibrators of catalog baselines (``attrib-bench baselines calibrate``).

A baseline's calibrator is fitted once on a benchmark's val part and stored beside the catalog
(``baselines/calibrators/NAME.BENCHMARK@VERSION.json``) with the feature key it was fitted on,
so ``evaluate`` reuses it only for exactly the same features (same code, weights, settings).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from baselines.catalog import calibrator_path, split_name
from benchmark.errors import AttribBenchError
from benchmark.fileio import write_json


def calibrator_record(name: str, bench: Any, weights: str | Path | None = None) -> dict[str, Any]:
    """Fit AbC's calibrator of baseline ``name`` on ``bench``'s val part (always a fresh fit)
    and return the record to store: baseline, benchmark, version, feature key, fit size,
    top_n and the calibrator.

    Raises:
        AttribBenchError: ``name`` is a tuned head (its file stores its calibrator already),
            or the benchmark has no val part to fit on.
    """
    from baselines.models import baseline_submission, load_baseline
    from benchmark.evaluation import EvalConfig, RunOptions, calibrate, rank_counts

    if split_name(name)[1] is not None:
        raise AttribBenchError(
            None, name, "tuned heads store their calibrator already", "retrain with train-tuned"
        )
    extractor = load_baseline(name, weights)
    config = EvalConfig()
    counts, _ = rank_counts(
        baseline_submission(name, weights), bench, config, RunOptions(progress=False), {}
    )
    cal = calibrate(counts, bench, config)
    if "calibrator" not in cal:
        raise AttribBenchError(None, name, f"no calibrator: {cal['skipped']}", "use a val part")
    return {
        "baseline": name,
        "benchmark": bench.name,
        "version": bench.version,
        "feature_key": extractor.feature_key,
        "fitted_on": "val",
        "num_fit_queries": cal["num_fit_queries"],
        "top_n": config.top_n,
        "calibrator": cal["calibrator"],
    }


def store_calibrator(record: dict[str, Any], folder: Path | None = None) -> Path:
    """Write ``record`` where ``evaluate`` finds it (``folder``: default the catalog's
    ``baselines/calibrators``); returns the path."""
    path = calibrator_path(record["baseline"], record["benchmark"], record["version"], folder)
    write_json(path, record)
    return path
