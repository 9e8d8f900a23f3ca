"""How the leaderboard ranks entries: one headline score and the average rank over cells.

- **headline**: the mean, over a result's test cells (test case x prompt type, eight for
  AbC), of the headline measure (mAP; declared in the measure registry,
  ``benchmark.metrics.MEASURES``, when it marks one). A bounded estimate (``value`` null,
  from a top-K submission) counts with its lower end, so an entry never ranks on a value it
  may not reach.
- **average rank**: within each cell, the entries of one benchmark version are ranked by the
  headline measure (1 = best; tied entries share the mean of the ranks they span, as
  ``scipy.stats.rankdata(method="average")``); an entry's average rank is the mean over
  the cells it has. It tells a method that is best in most cells from one that wins the mean
  through a single cell.

The board is sorted by headline (best first), then average rank, then name: a total order,
so the same store always gives the same page.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

FALLBACK_HEADLINE = "mAP"


class Ranked(Protocol):
    """A leaderboard entry as ranking sees it (``benchmark.leaderboard.Entry``)."""

    @property
    def benchmark(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def result(self) -> dict[str, Any]: ...


E = TypeVar("E", bound=Ranked)


def headline_measure() -> str:
    """The name of the registry's headline measure (``Measure.headline``), or mAP while the
    registry does not mark one."""
    from benchmark import metrics

    for m in getattr(metrics, "MEASURES", ()):
        if getattr(m, "headline", False):
            return str(m.name)
    return FALLBACK_HEADLINE


def point(estimate: dict[str, Any]) -> float:
    """An estimate's value, or its lower bound when only bounds are known."""
    return float(estimate["value"] if estimate["value"] is not None else estimate["lower"])


def cell_values(result: dict[str, Any], measure: str) -> dict[tuple[str, str], float]:
    """``measure`` per (test case, prompt type) cell of a result."""
    return {
        (c["test_case"], c["prompt_type"]): point(c["metrics"][measure])
        for c in result["metrics"]
        if measure in c["metrics"]
    }


def headline_score(result: dict[str, Any], measure: str | None = None) -> float:
    """The mean of ``measure`` (default: the headline measure) over the result's cells.

    >>> cell = lambda v: {"test_case": "object-seen", "prompt_type": "gpt",
    ...                   "metrics": {"mAP": {"value": v, "ci_low": v, "ci_high": v}}}
    >>> headline_score({"metrics": [cell(0.2), cell(0.4)]}, "mAP")
    0.30000000000000004
    """
    measure = measure or headline_measure()
    values = [point(c["metrics"][measure]) for c in result["metrics"]]
    return sum(values) / len(values) if values else 0.0


def average_ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks of ``values``, highest first; tied values share their mean rank.

    >>> average_ranks([0.5, 0.9, 0.5, 0.1])
    [2.5, 1.0, 2.5, 4.0]
    """
    order = sorted(range(len(values)), key=lambda i: -values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        shared = (start + end) / 2 + 1  # mean of the 1-based positions start..end
        for i in order[start : end + 1]:
            ranks[i] = shared
        start = end + 1
    return ranks


def mean_cell_ranks(results: Sequence[dict[str, Any]], measure: str | None = None) -> list[float]:
    """Per result (all of one benchmark version): its rank in each cell by ``measure``,
    averaged over the cells it has."""
    measure = measure or headline_measure()
    per_result = [cell_values(r, measure) for r in results]
    cells = sorted({c for values in per_result for c in values})
    totals = [0.0] * len(results)
    counts = [0] * len(results)
    for cell in cells:
        members = [i for i, values in enumerate(per_result) if cell in values]
        for i, rank in zip(
            members, average_ranks([per_result[i][cell] for i in members]), strict=True
        ):
            totals[i] += rank
            counts[i] += 1
    return [t / n if n else float(len(results)) for t, n in zip(totals, counts, strict=True)]


def rank_order(
    names: Sequence[str], headlines: Sequence[float], avg_ranks: Sequence[float]
) -> list[int]:
    """Indices best first: headline descending, then average rank, then name."""
    return sorted(range(len(names)), key=lambda i: (-headlines[i], avg_ranks[i], names[i]))


def ranked(entries: Sequence[E]) -> list[tuple[E, float, float]]:
    """``(entry, headline, average rank)`` best first: per benchmark version (sorted), by
    headline, then average rank, then name; ranks are among the same version's entries."""
    by_bench: dict[str, list[E]] = {}
    for e in entries:
        by_bench.setdefault(e.benchmark, []).append(e)
    out = []
    for _, group in sorted(by_bench.items()):
        heads = [headline_score(e.result) for e in group]
        avg = mean_cell_ranks([e.result for e in group])
        for i in rank_order([e.name for e in group], heads, avg):
            out.append((group[i], heads[i], avg[i]))
    return out
