"""Cluster bootstrap confidence intervals over customized models.

Queries sampled from one customized model share its exemplars and are not independent, so
resampling draws *models* with replacement and recomputes the query-weighted mean (the metric
is a plain mean over queries). Random streams are derived from (seed, cell name), so a cell's
interval does not depend on which other cells were computed.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

DEFAULT_SAMPLES = 1000
DEFAULT_LEVEL = 0.95


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
        (cluster_of_query [Q] as indices into the distinct clusters, counts [B, C]: how often
        each distinct cluster is drawn in each resample).
    """
    uniq, inverse = np.unique(clusters, return_inverse=True)
    rng = np.random.default_rng([seed, zlib.crc32(stream.encode())])
    draws = rng.integers(0, len(uniq), size=(samples, len(uniq)))
    counts = np.zeros((samples, len(uniq)), dtype=np.int64)
    np.add.at(counts, (np.arange(samples)[:, None], draws), 1)
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
