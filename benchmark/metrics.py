"""AbC's retrieval metrics as pure functions of exemplar rank counts.

For a query with exemplar set E, scoring is summarised per exemplar by three counts over the
query's distractors: ``above`` (strictly higher score), ``ties`` (exactly equal score) and
``unresolved`` (distractors whose order relative to the exemplar a top-K submission does not
determine; 0 for exact scoring). Sorting the exemplars best first, the i-th exemplar's rank in
the full ranking of distractors + E is::

    rank_i = i + above_i + (ties_i if pessimistic else 0)     (+ up to unresolved_i)

Ties among a query's own exemplars never change any metric. From the ranks r_1 < ... < r_|E|:

- ``AP = (1/|E|) * sum_i i / r_i``     (uninterpolated, full ranking, no cutoff)
- ``recall@K = |{i : r_i <= K}| / |E|``  (a fraction of exemplars; < 1 whenever |E| > K)
- ``hit@K = 1 if r_1 <= K``, ``RR = 1 / r_1``

Arrays are padded to the largest exemplar count; padding positions hold -1 counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from benchmark.types import TiePolicy

RECALL_KS: tuple[int, ...] = (5, 10, 100)


@dataclass(frozen=True)
class Measure:
    """A metric's identity: its name in results and whether higher is better."""

    name: str
    higher_is_better: bool = True


MEASURES: tuple[Measure, ...] = (
    Measure("mAP"),
    *(Measure(f"recall@{k}") for k in RECALL_KS),
    *(Measure(f"hit@{k}") for k in RECALL_KS),
    Measure("MRR"),
)
MAIN_MEASURE = "mAP"


def exemplar_ranks(
    above: np.ndarray,
    ties: np.ndarray,
    unresolved: np.ndarray,
    policy: TiePolicy = TiePolicy.PESSIMISTIC,
) -> tuple[np.ndarray, np.ndarray]:
    """Best and worst possible 1-based ranks of each query's exemplars, sorted best first.

    Args:
        above, ties, unresolved: int arrays [Q, E]; padding entries are -1.
        policy: where exemplars go among tied distractors.

    Returns:
        (rank_lo, rank_hi): float arrays [Q, E], ascending per row, ``inf`` in padding.
        They are equal wherever scoring was exact.

    Example:
        >>> lo, hi = exemplar_ranks(np.array([[3, 0]]), np.array([[1, 0]]), np.zeros((1, 2), int))
        >>> lo.tolist()
        [[1.0, 6.0]]
    """
    valid = above >= 0
    base = above + (ties if TiePolicy(policy) is TiePolicy.PESSIMISTIC else 0)
    key_lo = np.where(valid, base, np.iinfo(np.int64).max).astype(np.int64)
    key_hi = np.where(valid, base + unresolved, np.iinfo(np.int64).max).astype(np.int64)
    # Sorting by the count key orders exemplars by score; equal keys are interchangeable.
    key_lo = np.sort(key_lo, axis=1)
    key_hi = np.sort(key_hi, axis=1)
    position = np.arange(1, above.shape[1] + 1, dtype=np.float64)
    sorted_valid = np.sort(~valid, axis=1) == 0  # valid entries first after sorting
    rank_lo = np.where(sorted_valid, key_lo + position, np.inf)
    rank_hi = np.where(sorted_valid, key_hi + position, np.inf)
    return rank_lo, rank_hi


def average_precision(ranks: np.ndarray) -> np.ndarray:
    """Full-ranking AP per query from sorted ranks [Q, E] (``inf`` padding)."""
    n = np.isfinite(ranks).sum(axis=1)
    position = np.arange(1, ranks.shape[1] + 1, dtype=np.float64)
    precision = np.where(np.isfinite(ranks), position / ranks, 0.0)
    return precision.sum(axis=1) / n


def recall_at(ranks: np.ndarray, k: int) -> np.ndarray:
    """Fraction of each query's exemplars ranked within the top ``k``."""
    n = np.isfinite(ranks).sum(axis=1)
    return (ranks <= k).sum(axis=1) / n


def hit_at(ranks: np.ndarray, k: int) -> np.ndarray:
    """1.0 where the best-ranked exemplar is within the top ``k``."""
    return (ranks[:, 0] <= k).astype(np.float64)


def reciprocal_rank(ranks: np.ndarray) -> np.ndarray:
    return 1.0 / ranks[:, 0]


def per_query_metrics(ranks: np.ndarray) -> dict[str, np.ndarray]:
    """Every measure in :data:`MEASURES` for each query, from sorted ranks."""
    out = {"mAP": average_precision(ranks)}
    for k in RECALL_KS:
        out[f"recall@{k}"] = recall_at(ranks, k)
    for k in RECALL_KS:
        out[f"hit@{k}"] = hit_at(ranks, k)
    out["MRR"] = reciprocal_rank(ranks)
    return out


def per_query_bounds(
    above: np.ndarray,
    ties: np.ndarray,
    unresolved: np.ndarray,
    policy: TiePolicy = TiePolicy.PESSIMISTIC,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(lower, upper) bounds of every measure per query; equal when scoring was exact.

    All measures decrease as ranks grow, so the worst ranks give the lower bound.
    """
    rank_lo, rank_hi = exemplar_ranks(above, ties, unresolved, policy)
    return per_query_metrics(rank_hi), per_query_metrics(rank_lo)
