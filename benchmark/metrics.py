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
- ``recall_norm@K = |{i : r_i <= K}| / min(K, |E|)``  (reaches 1; some papers' recall,
  reported beside AbC's recall, never instead of it)
- ``hit@K = 1 if r_1 <= K``, ``RR = 1 / r_1``

Arrays are padded to the largest exemplar count; padding positions hold -1 counts.

Each measure is one :class:`Measure` value in :data:`MEASURES` (name, per-query function,
direction, whether tables show it, whether it is the leaderboard's headline).
Tables, the site, reports and :class:`benchmark.api.Result` read these, never a list of
their own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np

from benchmark.types import TiePolicy

RECALL_KS: tuple[int, ...] = (5, 10, 100)


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
    """Full-ranking AP per query from sorted ranks [Q, E] (``inf`` padding).

    Example:
        >>> average_precision(np.array([[1.0, 7.0], [4.0, np.inf]])).round(4).tolist()
        [0.6429, 0.25]
    """
    n = np.isfinite(ranks).sum(axis=1)
    position = np.arange(1, ranks.shape[1] + 1, dtype=np.float64)
    precision = np.where(np.isfinite(ranks), position / ranks, 0.0)
    return precision.sum(axis=1) / n


def recall_at(ranks: np.ndarray, k: int) -> np.ndarray:
    """Fraction of each query's exemplars ranked within the top ``k`` (AbC's recall: below 1
    whenever the query has more than ``k`` exemplars).

    Example:
        >>> recall_at(np.array([[1.0, 2.0, 30.0], [3.0, np.inf, np.inf]]), 2).tolist()
        [0.6666666666666666, 0.0]
    """
    n = np.isfinite(ranks).sum(axis=1)
    return (ranks <= k).sum(axis=1) / n


def recall_norm_at(ranks: np.ndarray, k: int) -> np.ndarray:
    """Exemplars within the top ``k`` over ``min(k, |E|)``: 1.0 when the top ``k`` is as full
    of exemplars as it can be (the convention of papers that normalise recall this way).

    Example:
        >>> ranks = np.array([[1.0, 2.0, 30.0], [3.0, np.inf, np.inf]])
        >>> recall_norm_at(ranks, 2).tolist()  # 2 hits / min(2, 3); 0 hits / min(2, 1)
        [1.0, 0.0]
    """
    n = np.isfinite(ranks).sum(axis=1)
    return (ranks <= k).sum(axis=1) / np.minimum(k, n)


def hit_at(ranks: np.ndarray, k: int) -> np.ndarray:
    """1.0 where the best-ranked exemplar is within the top ``k``.

    Example:
        >>> hit_at(np.array([[4.0, 9.0], [6.0, np.inf]]), 5).tolist()
        [1.0, 0.0]
    """
    return (ranks[:, 0] <= k).astype(np.float64)


def reciprocal_rank(ranks: np.ndarray) -> np.ndarray:
    """1 / rank of each query's best-ranked exemplar.

    Example:
        >>> reciprocal_rank(np.array([[4.0, 9.0], [1.0, np.inf]])).tolist()
        [0.25, 1.0]
    """
    return 1.0 / ranks[:, 0]


# --------------------------------------------------------------------------------------------
# the measure registry


@dataclass(frozen=True)
class Measure:
    """One measure as a value: its name in results, how it is computed per query (from sorted
    exemplar ranks [Q, E], ``inf`` padding), its direction and whether tables show it."""

    name: str
    per_query: Callable[[np.ndarray], np.ndarray]
    label: str
    higher_is_better: bool = True
    shown: bool = False  # a column of the CLI table, the site and the report
    #: The one headline measure: its mean over a result's test cells ranks the leaderboard
    #: (``benchmark.ranking.headline_score``) and is ``Result.headline``.
    headline: bool = False


MEASURES: tuple[Measure, ...] = (
    Measure(
        "mAP",
        average_precision,
        "average precision over the full ranking",
        shown=True,
        headline=True,
    ),
    *(
        Measure(
            f"recall@{k}", partial(recall_at, k=k), f"exemplars in the top {k} / |E|", shown=True
        )
        for k in RECALL_KS
    ),
    *(
        Measure(
            f"recall_norm@{k}",
            partial(recall_norm_at, k=k),
            f"exemplars in the top {k} / min({k}, |E|) (not the AbC recall)",
        )
        for k in RECALL_KS
    ),
    *(Measure(f"hit@{k}", partial(hit_at, k=k), f"an exemplar in the top {k}") for k in RECALL_KS),
    Measure("MRR", reciprocal_rank, "1 / rank of the best exemplar"),
)
#: The name of the headline measure (the registry marks exactly one).
HEADLINE: str = next(m.name for m in MEASURES if m.headline)
#: The columns tables show, in order.
SHOWN: tuple[str, ...] = tuple(m.name for m in MEASURES if m.shown)


def measure(name: str) -> Measure:
    """The registered measure called ``name``.

    Example:
        >>> measure("recall_norm@10").label
        'exemplars in the top 10 / min(10, |E|) (not the AbC recall)'
    """
    for m in MEASURES:
        if m.name == name:
            return m
    raise KeyError(f"unknown measure {name!r}; known: {', '.join(m.name for m in MEASURES)}")


def per_query_metrics(ranks: np.ndarray) -> dict[str, np.ndarray]:
    """Every measure in :data:`MEASURES` for each query, from sorted ranks.

    Example:
        >>> m = per_query_metrics(np.array([[1.0, 7.0]]))
        >>> round(float(m["mAP"][0]), 4), float(m["recall@5"][0]), float(m["recall_norm@5"][0])
        (0.6429, 0.5, 0.5)
    """
    return {m.name: m.per_query(ranks) for m in MEASURES}


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
