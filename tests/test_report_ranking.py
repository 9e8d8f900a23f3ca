"""The numbers behind the leaderboard's order and the reports' chance lines, checked exactly:
average ranks against scipy, the headline against a hand computation, and the chance
formulas against every ordering of small galleries."""

from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np
import pytest
from scipy.stats import rankdata

from benchmark import chance, ranking
from benchmark.report import is_flat, shared_ylim


def _ap(relevant_positions: tuple[int, ...]) -> Fraction:
    """AP of one ranking, from its exemplars' 1-based positions (exact arithmetic)."""
    ranks = sorted(relevant_positions)
    return sum(Fraction(i, r) for i, r in enumerate(ranks, start=1)) / len(ranks)


@pytest.mark.parametrize(("distractors", "exemplars"), [(0, 1), (1, 1), (4, 1), (3, 2), (5, 3)])
def test_expected_ap_is_the_mean_over_every_ordering(distractors, exemplars):
    n = distractors + exemplars
    # Every placement of the exemplars among n positions is equally likely.
    placements = list(itertools.combinations(range(1, n + 1), exemplars))
    exact = sum(_ap(p) for p in placements) / len(placements)
    assert chance.expected_ap(distractors, exemplars) == pytest.approx(float(exact), abs=1e-12)


@pytest.mark.parametrize(("distractors", "exemplars"), [(4, 1), (3, 2), (5, 3)])
def test_expected_recall_is_the_mean_over_every_ordering(distractors, exemplars):
    n = distractors + exemplars
    placements = list(itertools.combinations(range(1, n + 1), exemplars))
    for k in range(1, n + 2):
        exact = Fraction(sum(sum(r <= k for r in p) for p in placements))
        exact /= len(placements) * exemplars
        assert chance.expected_recall(k, distractors, exemplars) == pytest.approx(float(exact))


def test_expected_ap_limits():
    assert chance.expected_ap(9, 1) == pytest.approx(chance.harmonic(10) / 10)
    assert chance.expected_ap(0, 7) == 1.0  # every candidate an exemplar
    assert chance.expected_ap(1000, 1) < chance.expected_ap(1000, 5) < 0.02
    with pytest.raises(ValueError):
        chance.expected_ap(5, 0)


def test_cell_chance_averages_each_querys_own_exemplar_count():
    result = {
        "queries": [
            {"test_case": "object-seen", "prompt_type": "gpt", "exemplars": [{}]},
            {"test_case": "object-seen", "prompt_type": "gpt", "exemplars": [{}, {}, {}]},
            {"test_case": "style-seen", "prompt_type": "media", "exemplars": [{}]},
        ]
    }
    ap = chance.cell_chance(result, 20, "mAP")
    assert ap[("object-seen", "gpt")] == pytest.approx(
        (chance.expected_ap(20, 1) + chance.expected_ap(20, 3)) / 2
    )
    r10 = chance.cell_chance(result, 20, "recall@10")
    assert r10[("style-seen", "media")] == pytest.approx(10 / 21)
    assert r10[("object-seen", "gpt")] == pytest.approx((10 / 21 + 10 / 23) / 2)


# --------------------------------------------------------------------------------------------
# ranking


@pytest.mark.parametrize(
    "values",
    [[0.5, 0.9, 0.5, 0.1], [0.3, 0.3, 0.3], [1.0], [0.2, -0.1, 0.2, 0.2, -0.1, 0.7], []],
)
def test_average_ranks_match_scipy_average_method(values):
    expected = rankdata([-v for v in values], method="average") if values else []
    assert ranking.average_ranks(values) == list(np.asarray(expected, dtype=float))


def _result(name: str, maps: list[float], bounded: bool = False) -> dict:
    cases = ["object-seen", "object-unseen", "style-seen", "style-unseen"]
    cells = [(c, p) for c in cases for p in ("gpt", "media")]
    metrics = []
    for (case, prompt), v in zip(cells, maps, strict=True):
        est = (
            {"value": None, "lower": v, "upper": v + 0.1, "ci_low": v, "ci_high": v}
            if bounded
            else {"value": v, "ci_low": v, "ci_high": v}
        )
        metrics.append({"test_case": case, "prompt_type": prompt, "metrics": {"mAP": est}})
    return {"submission": {"name": name}, "metrics": metrics}


def test_headline_is_the_mean_map_over_the_eight_cells_and_ranks_average_with_ties():
    a = _result("a", [0.5] * 8)  # mean 0.5, best or tied-best everywhere but one cell
    b = _result("b", [0.5] * 7 + [0.9])  # mean 0.55: one big cell
    c = _result("c", [0.1] * 8, bounded=True)  # bounded: ranks on its lower ends
    assert ranking.headline_measure() == "mAP"
    heads = [ranking.headline_score(r) for r in (a, b, c)]
    assert heads == pytest.approx([0.5, 0.55, 0.1])
    avg = ranking.mean_cell_ranks([a, b, c])
    # a and b tie (1.5 each) in seven cells; b wins the last one.
    assert avg == pytest.approx([(7 * 1.5 + 2) / 8, (7 * 1.5 + 1) / 8, 3.0])
    assert ranking.rank_order(["a", "b", "c"], heads, avg) == [1, 0, 2]
    # Equal headlines: the better average rank first, then the name.
    assert ranking.rank_order(["z", "y", "x"], [0.5, 0.5, 0.5], [2.0, 1.0, 2.0]) == [1, 2, 0]


def test_shared_ylim_rounds_up_the_largest_interval_end():
    results = [_result("a", [0.01] * 8), _result("b", [0.01] * 7 + [0.123])]
    results[0]["metrics"][0]["metrics"]["recall@10"] = {
        "value": 0.3,
        "ci_low": 0.2,
        "ci_high": 0.41,
    }
    assert shared_ylim(results) == {"mAP": 0.15, "recall@10": 0.45}
    assert shared_ylim([_result("a", [0.001] * 8)], ("mAP",)) == {"mAP": 0.05}


def test_a_calibrator_with_a_huge_threshold_is_flat():
    assert is_flat({"calibrator": {"temperature": 1e-4, "threshold": 3.5e7}})
    assert not is_flat({"calibrator": {"temperature": 0.05, "threshold": 1.99}})
    assert not is_flat({"skipped": "no val queries"})


def test_ranked_orders_each_benchmark_version_apart():
    from types import SimpleNamespace

    def entry(bench, name, maps):
        return SimpleNamespace(benchmark=bench, name=name, result=_result(name, maps))

    board = [
        entry("b@2", "low", [0.1] * 8),
        entry("b@1", "only", [0.05] * 8),  # alone in its version: rank 1 in every cell
        entry("b@2", "high", [0.3] * 8),
    ]
    out = [(e.benchmark, e.name, round(h, 6), avg) for e, h, avg in ranking.ranked(board)]
    assert out == [("b@1", "only", 0.05, 1.0), ("b@2", "high", 0.3, 1.0), ("b@2", "low", 0.1, 2.0)]
