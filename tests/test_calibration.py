"""Tests for benchmark.calibration (AbC-style temperature + threshold calibrator)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from benchmark.calibration import EPS, Calibrator, calibration_metrics, fit_calibrator

TRUE_TAU, TRUE_B = 0.05, -0.001


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def _synthetic(n_queries: int, seed: int, tau: float = TRUE_TAU, b: float = TRUE_B):
    """One exemplar per query drawn from the true calibrator's influence (25..50 candidates)."""
    rng = np.random.default_rng(seed)
    cal = Calibrator(tau, b)
    scores, labels = [], []
    for _ in range(n_queries):
        k = int(rng.integers(25, 51))
        s = rng.normal(0.3, 0.1, size=k)
        y = np.zeros(k, dtype=bool)
        y[rng.choice(k, p=cal.influence(s))] = True
        scores.append(s)
        labels.append(y)
    return scores, labels


# --- influence -------------------------------------------------------------------------------


def test_influence_without_threshold_is_softmax():
    s = np.array([0.9, 0.5, -0.3])
    p = Calibrator(0.1, 0.0).influence(s)
    np.testing.assert_allclose(p, _softmax(s / 0.1), rtol=1e-12)
    # Hand value: weights 1, e^-4, e^-12.
    np.testing.assert_allclose(p[0], 1.0 / (1.0 + math.exp(-4) + math.exp(-12)), rtol=1e-12)


def test_influence_hand_computed_threshold():
    # Weights exp(0)=1 and exp(-ln 2)=0.5, minus 0.25 -> 0.75 and 0.25, sum 1.
    p = Calibrator(1.0, -0.25).influence(np.array([0.0, -math.log(2.0)]))
    np.testing.assert_allclose(p, [0.75, 0.25], rtol=1e-12)


def test_negative_threshold_zeroes_low_candidates_exactly():
    p = Calibrator(1.0, -0.5).influence(np.array([1.0, 0.0, 0.9]))
    assert p[1] == 0.0  # exp(-1) - 0.5 < 0
    assert p[0] > p[2] > 0.0
    assert p.sum() == pytest.approx(1.0, abs=1e-12)


def test_influence_negative_scores_sum_to_one_and_ordered():
    s = np.array([-3.0, -1.2, -7.5, -1.25])
    p = Calibrator(0.5, 0.1).influence(s)
    assert p.shape == s.shape
    assert p.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.all(p > 0)
    assert list(np.argsort(-p)) == [1, 3, 0, 2]


def test_influence_ties_get_equal_mass():
    p = Calibrator(0.05, -0.2).influence(np.array([0.7, 0.2, 0.7, 0.7]))
    assert p[0] == p[2] == p[3]
    assert p[1] == 0.0
    np.testing.assert_allclose(p[[0, 2, 3]], 1 / 3, rtol=1e-12)


def test_influence_shift_invariant_and_stable_for_tiny_temperature():
    s = np.array([0.3, -0.1, 0.25, 0.0])
    cal = Calibrator(0.02, -0.01)
    np.testing.assert_allclose(cal.influence(s + 123.4), cal.influence(s), atol=1e-12)
    p = Calibrator(1e-4, 0.0).influence(s)  # exp(4000) would overflow without the max shift
    assert np.all(np.isfinite(p)) and p[0] == pytest.approx(1.0)


def test_influence_single_candidate_gets_everything():
    np.testing.assert_array_equal(Calibrator(0.1, -0.9).influence(np.array([-5.0])), [1.0])


@pytest.mark.parametrize("bad", [np.array([]), np.zeros((2, 2)), np.array([0.1, np.nan])])
def test_influence_rejects_bad_scores(bad):
    with pytest.raises(ValueError):
        Calibrator(0.1, 0.0).influence(bad)


@pytest.mark.parametrize(
    "tau, b", [(0.0, 0.0), (-1.0, 0.0), (math.nan, 0.0), (0.1, -1.0), (0.1, -2.0), (0.1, math.inf)]
)
def test_calibrator_rejects_bad_parameters(tau, b):
    with pytest.raises(ValueError):
        Calibrator(tau, b)


def test_to_dict_is_plain_floats():
    d = Calibrator(np.float64(0.5), -0.25).to_dict()
    assert d == {"temperature": 0.5, "threshold": -0.25}
    assert all(type(v) is float for v in d.values())


# --- metrics ---------------------------------------------------------------------------------


def _hand_case():
    # tau=1, b=0: p = [.5, .5], [.75, .25], [1.0]; exemplars are the first candidate of each.
    scores = [np.array([0.0, 0.0]), np.array([math.log(3.0), 0.0]), np.array([2.0])]
    labels = [np.array([1, 0]), np.array([1, 0]), np.array([True])]
    return Calibrator(1.0, 0.0), scores, labels


def test_metrics_hand_computed():
    cal, scores, labels = _hand_case()
    m = calibration_metrics(cal, scores, labels, bins=5)
    assert m["num_queries"] == 3 and m["num_candidates"] == 5
    assert m["exemplar_nll"] == pytest.approx((math.log(2) + math.log(4 / 3) + 0.0) / 3)
    assert m["exemplar_mass"] == pytest.approx((0.5 + 0.75 + 1.0) / 3)
    # Bins of width .2: p=.25 (y=0) in bin 1, two p=.5 (y=1, y=0) in bin 2, p=.75 (y=1) in
    # bin 3, p=1.0 (y=1) in the last bin 4. Gaps: .25, 0, .25, 0 -> ECE = (.25 + .25) / 5.
    assert m["ece"] == pytest.approx(0.1)
    rel = m["reliability"]
    assert [r["count"] for r in rel] == [0, 1, 2, 1, 1]
    assert rel[0]["confidence"] is None and rel[0]["accuracy"] is None
    assert rel[2]["confidence"] == pytest.approx(0.5) and rel[2]["accuracy"] == 0.5
    assert rel[4]["confidence"] == 1.0 and rel[4]["accuracy"] == 1.0
    assert rel[4]["lower"] == pytest.approx(0.8) and rel[4]["upper"] == 1.0
    json.dumps(m)  # JSON-ready: no numpy scalars


def test_metrics_multiple_exemplars_and_zeroed_exemplar():
    cal = Calibrator(1.0, 0.0)
    m = calibration_metrics(cal, [np.zeros(4)], [np.array([1, 1, 0, 0])])
    assert m["exemplar_nll"] == pytest.approx(math.log(4))
    assert m["exemplar_mass"] == pytest.approx(0.5)
    # With b=-0.5 the exemplar at score 0 (weight e^-1 - .5 < 0) gets exactly 0 -> floored.
    m = calibration_metrics(Calibrator(1.0, -0.5), [np.array([1.0, 0.0])], [np.array([0, 1])])
    assert m["exemplar_nll"] == pytest.approx(-math.log(EPS))
    assert m["exemplar_mass"] == 0.0


def test_ece_small_when_calibrated_and_counts_sum():
    # One exemplar drawn from p per query makes P(candidate is exemplar) = p exactly.
    scores, labels = _synthetic(600, seed=3)
    good = calibration_metrics(Calibrator(TRUE_TAU, TRUE_B), scores, labels, bins=10)
    # Overconfident. (A near-uniform tau=1 would not do: with one exemplar per query all its
    # p land in the first bin, where mean p == exemplar rate, so its ECE is ~0 too.)
    bad = calibration_metrics(Calibrator(0.005, 0.0), scores, labels, bins=10)
    assert good["ece"] < 0.01
    assert bad["ece"] > 5 * good["ece"]
    assert sum(r["count"] for r in good["reliability"]) == good["num_candidates"]
    assert good["num_candidates"] == sum(len(s) for s in scores)


def test_metrics_rejects_bad_bins():
    cal, scores, labels = _hand_case()
    for bins in (0, -3, 2.5):
        with pytest.raises(ValueError):
            calibration_metrics(cal, scores, labels, bins=bins)


# --- fitting ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fitted():
    train = _synthetic(300, seed=0)
    return fit_calibrator(*train), train


def test_fit_beats_bad_calibrator_and_recovers_temperature(fitted):
    cal, _ = fitted
    held_out = _synthetic(300, seed=1)
    nll_fit = calibration_metrics(cal, *held_out)["exemplar_nll"]
    nll_bad = calibration_metrics(Calibrator(1.0, 0.0), *held_out)["exemplar_nll"]
    nll_true = calibration_metrics(Calibrator(TRUE_TAU, TRUE_B), *held_out)["exemplar_nll"]
    assert nll_fit < nll_bad - 0.5
    assert nll_fit < nll_true + 0.1
    assert TRUE_TAU / 2 < cal.temperature < TRUE_TAU * 2
    assert -1.0 < cal.threshold < 0.1


def test_fit_is_deterministic(fitted):
    cal, train = fitted
    again = fit_calibrator(*train)
    assert again.to_dict() == cal.to_dict()


def test_fit_accepts_multiple_exemplars_and_ragged_queries():
    scores = [np.array([0.9, 0.8, 0.1]), np.array([0.5, 0.45, 0.44, 0.0, -0.2]), np.array([1.0])]
    labels = [np.array([1, 1, 0]), np.array([0, 1, 1, 0, 0]), np.array([1])]
    cal = fit_calibrator(scores, labels, max_iter=50)
    assert cal.temperature > 0 and cal.threshold > -1


@pytest.mark.parametrize(
    "scores, labels, match",
    [
        ([], [], "empty"),
        ([np.array([0.1, 0.2])], [], "label arrays"),
        ([np.array([0.1, 0.2])], [np.array([1, 0, 0])], "shape"),
        ([np.array([0.1, np.nan])], [np.array([1, 0])], "non-finite"),
        ([np.array([0.1, 0.2]), np.array([0.3])], [np.array([1, 0]), np.array([0])], "positive"),
        ([np.array([0.1, 0.2])], [np.array([2, 0])], "0/1"),
    ],
)
def test_bad_inputs_raise(scores, labels, match):
    with pytest.raises(ValueError, match=match):
        fit_calibrator(scores, labels)
    if scores:
        with pytest.raises(ValueError, match=match):
            calibration_metrics(Calibrator(0.1, 0.0), scores, labels)


def test_fit_rejects_bad_max_iter():
    with pytest.raises(ValueError, match="max_iter"):
        fit_calibrator([np.array([0.1])], [np.array([1])], max_iter=0)


def test_reliability_bins_follow_scikit_learn_on_edges():
    """Five equal candidates give p = 0.2 exactly, an inner edge of 5 bins: it counts in the
    lower bin, as in ``sklearn.calibration.calibration_curve``, whose curve we report."""
    from sklearn.calibration import calibration_curve

    cal = Calibrator(1.0, 0.0)
    m = calibration_metrics(cal, [np.zeros(5)], [np.array([1, 0, 0, 0, 0])], bins=5)
    assert [r["count"] for r in m["reliability"]] == [5, 0, 0, 0, 0]
    assert m["reliability"][0]["confidence"] == pytest.approx(0.2)
    assert m["reliability"][0]["accuracy"] == pytest.approx(0.2)
    assert m["ece"] == pytest.approx(0.0, abs=1e-12)
    # The non-empty bins are exactly scikit-learn's curve, on seeded data with negative scores.
    scores, labels = _synthetic(50, seed=7)
    scores = [s - 1.0 for s in scores]
    m = calibration_metrics(cal, scores, labels, bins=7)
    p = np.concatenate([cal.influence(s) for s in scores])
    y = np.concatenate(labels).astype(float)
    acc, conf = calibration_curve(y, p, n_bins=7)
    filled = [r for r in m["reliability"] if r["count"]]
    np.testing.assert_allclose([r["accuracy"] for r in filled], acc, rtol=1e-12)
    np.testing.assert_allclose([r["confidence"] for r in filled], conf, rtol=1e-12)


def test_average_precision_matches_scikit_learn_without_ties():
    """The full-ranking AP of :mod:`benchmark.metrics` against scikit-learn's
    ``average_precision_score`` on tie-free rankings (with ties the two differ: sklearn
    groups tied scores, AbC ranks exemplars pessimistically). Scores are partly negative."""
    from sklearn.metrics import average_precision_score

    from benchmark.metrics import average_precision, exemplar_ranks

    rng = np.random.default_rng(11)
    for n_ex, n_dis in ((1, 10), (3, 40), (7, 200), (12, 25)):
        for _ in range(5):
            scores = rng.permutation(np.linspace(-1.0, 1.0, n_ex + n_dis))  # all distinct
            ex, dis = scores[:n_ex], scores[n_ex:]
            above = (dis[None, :] > ex[:, None]).sum(axis=1)[None, :]
            zeros = np.zeros_like(above)
            ours = average_precision(exemplar_ranks(above, zeros, zeros)[0])[0]
            labels = np.r_[np.ones(n_ex), np.zeros(n_dis)]
            assert ours == pytest.approx(average_precision_score(labels, scores), rel=1e-12)
