"""Cluster bootstrap confidence intervals over customized models.

Queries sampled from one customized model share its exemplars and are not independent, so
resampling draws *models* with replacement and recomputes the query-weighted mean (the metric
is a plain mean over queries). Random streams are derived from (seed, cell name), so a cell's
interval does not depend on which other cells were computed.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmark.errors import AttribBenchError

DEFAULT_SAMPLES = 1000
DEFAULT_LEVEL = 0.95
#: Most bootstrap resamples accepted. Percentile intervals stop changing long before this
#: (their Monte Carlo error shrinks as 1/sqrt(B): ~0.002 at 100,000 for a 0.95 interval), and
#: the resample count table is B x models float64: 0.47 GB for AbC's largest cell (593
#: models) at the cap, built in blocks, with no other B-sized temporary.
MAX_SAMPLES = 100_000
#: Seeds feed numpy's SeedSequence and are stored in result JSON: 0 <= seed < 2**63.
MAX_SEED = 2**63 - 1
_BLOCK = 4096  # resamples drawn per step (the stream is identical to one big draw)


def check_seed(seed: Any, field: str = "--seed") -> int:
    """The seed, if it is an integer in [0, 2**63); else one clear error."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise AttribBenchError(None, field, f"{seed!r} is not an integer", "use e.g. 0")
    if not 0 <= seed <= MAX_SEED:
        raise AttribBenchError(
            None, field, f"{seed} is outside [0, 2**63 - 1]", "use a non-negative seed, e.g. 0"
        )
    return int(seed)


def check_samples(samples: Any, field: str = "--bootstrap-samples") -> int:
    """The number of bootstrap resamples, if it is an integer in [1, MAX_SAMPLES]."""
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)):
        raise AttribBenchError(
            None, field, f"{samples!r} is not an integer", f"use the default of {DEFAULT_SAMPLES}"
        )
    if not 1 <= samples <= MAX_SAMPLES:
        raise AttribBenchError(
            None,
            field,
            f"{samples} is outside [1, {MAX_SAMPLES:,}], the most resamples accepted",
            f"use the default of {DEFAULT_SAMPLES}",
        )
    return int(samples)


def check_level(level: Any, field: str = "--ci-level") -> float:
    """The confidence level, if it is a number strictly between 0 and 1."""
    ok = isinstance(level, (int, float, np.floating)) and not isinstance(level, bool)
    if not ok or not math.isfinite(level) or not 0.0 < level < 1.0:
        raise AttribBenchError(
            None, field, f"{level!r} is not strictly between 0 and 1", f"use {DEFAULT_LEVEL}"
        )
    return float(level)


@dataclass(frozen=True)
class Interval:
    value: float
    low: float
    high: float


def cluster_resamples(
    clusters: np.ndarray, seed: int, stream: str, samples: int = DEFAULT_SAMPLES
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``samples`` resamples of the distinct clusters.

    Returns:
        (cluster_of_query [Q] as indices into the distinct clusters, counts [B, C] float64:
        how often each distinct cluster is drawn in each resample; small integers, exact).

    Raises:
        AttribBenchError: a negative or too large seed, or ``samples`` outside
        [1, MAX_SAMPLES].
    """
    seed = check_seed(seed)
    samples = check_samples(samples, "samples")
    uniq, inverse = np.unique(clusters, return_inverse=True)
    n = len(uniq)
    rng = np.random.default_rng([seed, zlib.crc32(stream.encode())])
    # Drawn block by block: numpy's stream is the same as one [samples, n] draw, but only a
    # block of draws is alive at a time. float64 counts feed the matrix products directly.
    counts = np.zeros((samples, n), dtype=np.float64)
    for start in range(0, samples, _BLOCK):
        rows = min(_BLOCK, samples - start)
        draws = rng.integers(0, n, size=(rows, n))
        np.add.at(counts[start : start + rows], (np.arange(rows)[:, None], draws), 1.0)
    return inverse, counts


def resampled_means(values: np.ndarray, inverse: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Query-weighted mean of ``values`` under each cluster resample [B]."""
    n_clusters = counts.shape[1]
    sums = np.bincount(inverse, weights=values, minlength=n_clusters)
    sizes = np.bincount(inverse, minlength=n_clusters).astype(np.float64)
    return (counts @ sums) / (counts @ sizes)


def percentile_interval(
    value: float, resampled: np.ndarray, level: float = DEFAULT_LEVEL
) -> Interval:
    level = check_level(level, "level")
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(resampled, [alpha, 1.0 - alpha])
    return Interval(float(value), float(low), float(high))


def cluster_bootstrap(
    values: np.ndarray,
    clusters: np.ndarray,
    *,
    seed: int,
    stream: str,
    samples: int = DEFAULT_SAMPLES,
    level: float = DEFAULT_LEVEL,
) -> Interval:
    """Mean of ``values`` with a percentile cluster-bootstrap interval.

    Example:
        >>> iv = cluster_bootstrap(np.array([1.0, 1.0, 0.0]), np.array(["a", "a", "b"]),
        ...                        seed=0, stream="doc")
        >>> round(iv.value, 4), iv.low, iv.high
        (0.6667, 0.0, 1.0)
    """
    inverse, counts = cluster_resamples(clusters, seed, stream, samples)
    return percentile_interval(
        float(values.mean()), resampled_means(values, inverse, counts), level
    )


def paired_difference(
    a: np.ndarray,
    b: np.ndarray,
    clusters: np.ndarray,
    *,
    seed: int,
    stream: str,
    samples: int = DEFAULT_SAMPLES,
    level: float = DEFAULT_LEVEL,
) -> Interval:
    """Mean of ``a - b`` over the same queries, resampling models jointly for both."""
    return cluster_bootstrap(
        a - b, clusters, seed=seed, stream=stream, samples=samples, level=level
    )
