"""What each measure is worth for a random ranking: the chance lines of the report's plots.

For one query, a random ranking is a uniformly random order of its N = N_d + |E| candidates
(N_d distractors, |E| = R exemplars). Both expectations are exact, in closed form:

- **Recall@K**: the number of exemplars in the top K is hypergeometric with mean
  R * min(K, N) / N, so E[recall@K] = min(K, N) / N (whatever R).
- **AP** = (1/R) sum over positions i of [i is an exemplar] * precision@i. Position i holds
  an exemplar with probability R/N; given that, the i - 1 positions above it hold
  (i - 1)(R - 1)/(N - 1) exemplars on average, so
  E[AP] = (1/N) * sum_{i=1..N} (1 + (i - 1)(R - 1)/(N - 1)) / i
        = (H_N + (R - 1)/(N - 1) * (N - H_N)) / N,   H_N the N-th harmonic number
  (H_N / N for one exemplar; 1 when every candidate is an exemplar).

A cell's chance level is the mean over its queries, each with its own exemplar count; the
tests check both formulas against every ordering of small galleries.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np


def harmonic(n: int) -> float:
    """H_n = 1 + 1/2 + ... + 1/n (0 for n = 0)."""
    return float(np.sum(1.0 / np.arange(1, n + 1))) if n > 0 else 0.0


def expected_ap(num_distractors: int, num_exemplars: int) -> float:
    """E[AP] of a uniformly random ranking of ``num_distractors + num_exemplars`` candidates.

    >>> round(expected_ap(1, 1), 4)  # the exemplar is first (AP 1) or second (AP 1/2)
    0.75
    """
    n, r = num_distractors + num_exemplars, num_exemplars
    if r < 1:
        raise ValueError("a query needs at least one exemplar")
    if n == 1:
        return 1.0
    h = harmonic(n)
    return (h + (r - 1) / (n - 1) * (n - h)) / n


def expected_recall(k: int | np.ndarray, num_distractors: int, num_exemplars: int):
    """E[recall@K] of a uniformly random ranking: min(K, N) / N.

    >>> float(expected_recall(10, 95, 5))
    0.1
    """
    n = num_distractors + num_exemplars
    return np.minimum(k, n) / n


def _exemplar_counts(queries: Iterable[dict[str, Any]]) -> list[int]:
    return [len(q["exemplars"]) for q in queries]


def cell_chance(
    result: dict[str, Any], num_distractors: int, measure: str
) -> dict[tuple[str, str], float]:
    """Per (test case, prompt type) cell: the mean chance level of ``measure`` (``mAP`` or
    ``recall@K``) over the cell's queries, for a gallery of ``num_distractors``."""
    by_cell: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for q in result["queries"]:
        by_cell.setdefault((q["test_case"], q["prompt_type"]), []).append(q)
    out = {}
    for cell, queries in by_cell.items():
        counts = _exemplar_counts(queries)
        if measure == "mAP":
            values = [expected_ap(num_distractors, r) for r in counts]
        elif measure.startswith("recall@"):
            k = int(measure.removeprefix("recall@"))
            values = [float(expected_recall(k, num_distractors, r)) for r in counts]
        else:
            raise ValueError(f"no chance level for {measure}")
        out[cell] = float(np.mean(values))
    return out


def recall_curve_chance(result: dict[str, Any], ks: np.ndarray, num_distractors: int) -> np.ndarray:
    """E[recall@K] at each K, averaged over every query of the result."""
    counts = _exemplar_counts(result["queries"])
    return np.mean([expected_recall(ks, num_distractors, r) for r in counts], axis=0)
