"""Metric definitions: hand-computed cases, tie policy, bounds, and pytrec_eval as reference."""

from __future__ import annotations

import numpy as np
import pytest

from benchmark import scoring
from benchmark.metrics import exemplar_ranks, per_query_bounds, per_query_metrics
from benchmark.types import TiePolicy


def counts(above, ties=None, unresolved=None):
    above = np.array(above, dtype=np.int64)
    ties = np.zeros_like(above) if ties is None else np.array(ties, dtype=np.int64)
    unresolved = np.zeros_like(above) if unresolved is None else np.array(unresolved, np.int64)
    pad = above < 0
    return above, np.where(pad, -1, ties), np.where(pad, -1, unresolved)


def metrics_of(above, ties=None, policy=TiePolicy.PESSIMISTIC):
    lo, _ = exemplar_ranks(*counts(above, ties), policy)
    return per_query_metrics(lo)


def test_single_exemplar_ap_is_reciprocal_rank():
    m = metrics_of([[3]])  # three distractors above: rank 4
    assert m["mAP"][0] == pytest.approx(0.25)
    assert m["MRR"][0] == pytest.approx(0.25)
    assert m["recall@5"][0] == 1.0
    assert m["hit@5"][0] == 1.0


def test_two_exemplars_hand_computed():
    # ranks 1 and 7: AP = (1/1 + 2/7) / 2
    m = metrics_of([[5, 0]])
    assert m["mAP"][0] == pytest.approx((1 + 2 / 7) / 2)
    assert m["recall@5"][0] == 0.5
    assert m["recall@10"][0] == 1.0
    assert m["MRR"][0] == 1.0


def test_padding_rows_with_different_exemplar_counts():
    m = metrics_of([[0, -1, -1], [1, 1, 20]])
    assert m["mAP"][0] == 1.0
    # ranks 2, 3, 23 -> (1/2 + 2/3 + 3/23) / 3
    assert m["mAP"][1] == pytest.approx((1 / 2 + 2 / 3 + 3 / 23) / 3)
    assert m["recall@10"][1] == pytest.approx(2 / 3)


def test_more_exemplars_than_k_caps_recall_below_one():
    m = metrics_of([[0] * 12])  # 12 exemplars ranked 1..12: perfect ranking
    assert m["mAP"][0] == 1.0
    assert m["recall@5"][0] == pytest.approx(5 / 12)
    assert m["recall@10"][0] == pytest.approx(10 / 12)
    assert m["recall@100"][0] == 1.0
    assert m["hit@5"][0] == 1.0


def test_tie_policies():
    # two distractors above, three tied with the exemplar
    pess = metrics_of([[2]], [[3]], TiePolicy.PESSIMISTIC)
    opt = metrics_of([[2]], [[3]], TiePolicy.OPTIMISTIC)
    assert pess["mAP"][0] == pytest.approx(1 / 6)
    assert opt["mAP"][0] == pytest.approx(1 / 3)


def test_constant_scorer_cannot_win():
    # every one of 1000 distractors ties with both exemplars
    m = metrics_of([[0, 0]], [[1000, 1000]])
    assert m["mAP"][0] == pytest.approx((1 / 1001 + 2 / 1002) / 2)
    assert m["recall@100"][0] == 0.0


def test_ties_among_own_exemplars_do_not_matter():
    # both exemplars equal, one distractor tied with them: ranks 2 and 3 (pessimistic)
    m = metrics_of([[0, 0]], [[1, 1]])
    assert m["mAP"][0] == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_bounds_bracket_and_collapse_when_exact():
    above, ties, unresolved = counts([[0, 3]], [[0, 0]], [[0, 50]])
    low, high = per_query_bounds(above, ties, unresolved)
    assert low["mAP"][0] == pytest.approx((1 + 2 / 55) / 2)
    assert high["mAP"][0] == pytest.approx((1 + 2 / 5) / 2)
    assert low["recall@10"][0] == 0.5 and high["recall@10"][0] == 1.0
    exact_low, exact_high = per_query_bounds(*counts([[0, 3]]))
    assert exact_low["mAP"][0] == exact_high["mAP"][0]


def test_negative_scores_and_ties_through_the_dense_engine():
    # distractors [-0.2, 0.3, -0.9, -0.5]; the exemplar (column 4) scores -0.5
    matrix = np.array([[-0.2, 0.3, -0.9, -0.5, -0.5]], dtype=np.float32)
    rc = scoring.score_dense(matrix, 4, [[4]], query_ids=["q"], exemplar_ids=[("e",)])
    assert rc.above.tolist() == [[2]] and rc.ties.tolist() == [[1]]
    pess = per_query_bounds(rc.above, rc.ties, rc.unresolved, TiePolicy.PESSIMISTIC)[0]
    opt = per_query_bounds(rc.above, rc.ties, rc.unresolved, TiePolicy.OPTIMISTIC)[0]
    assert pess["mAP"][0] == pytest.approx(1 / 4)
    assert opt["mAP"][0] == pytest.approx(1 / 3)
    assert rc.top_scores[0, :4].tolist() == pytest.approx([0.3, -0.2, -0.5, -0.9])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_pytrec_eval_on_random_rankings(seed):
    pytrec_eval = pytest.importorskip("pytrec_eval")
    rng = np.random.default_rng(seed)
    n_q, n_d = 40, 300
    n_ex = rng.integers(1, 8, size=n_q)
    e_max = int(n_ex.max())
    # continuous scores (no ties) with exemplars shifted up so ranks vary widely
    distractor = rng.normal(size=(n_q, n_d))
    exemplar = rng.normal(loc=rng.uniform(0, 3, size=(n_q, 1)), size=(n_q, e_max))
    matrix = np.concatenate([distractor, exemplar], axis=1).astype(np.float32)
    cols = [list(range(n_d, n_d + k)) for k in n_ex]
    rc = scoring.score_dense(
        matrix,
        n_d,
        cols,
        query_ids=[str(i) for i in range(n_q)],
        exemplar_ids=[tuple(map(str, c)) for c in cols],
    )
    ours = per_query_bounds(rc.above, rc.ties, rc.unresolved)[0]

    qrels, run = {}, {}
    for i in range(n_q):
        qrels[str(i)] = {f"e{j}": 1 for j in range(n_ex[i])}
        run[str(i)] = {f"d{j}": float(matrix[i, j]) for j in range(n_d)}
        run[str(i)].update({f"e{j}": float(matrix[i, n_d + j]) for j in range(n_ex[i])})
    measures = {"map", "recall_5", "recall_10", "recall_100", "recip_rank"}
    ref = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)
    for i in range(n_q):
        r = ref[str(i)]
        assert ours["mAP"][i] == pytest.approx(r["map"], abs=1e-4)
        assert ours["recall@5"][i] == pytest.approx(r["recall_5"], abs=1e-9)
        assert ours["recall@10"][i] == pytest.approx(r["recall_10"], abs=1e-9)
        assert ours["recall@100"][i] == pytest.approx(r["recall_100"], abs=1e-9)
        assert ours["MRR"][i] == pytest.approx(r["recip_rank"], abs=1e-4)


# --------------------------------------------------------------------------------------------
# recall_norm@K = hits / min(K, |E|) (issue 10 item 6): beside AbC's recall, never instead of it


def test_recall_norm_hand_computed_with_ties_and_negative_scores():
    # 7 exemplars, all scoring -0.2 (tied with each other); distractors [-0.1, -0.2, -0.5, -0.6]:
    # each exemplar has 1 distractor above and 1 tied. Pessimistic ranks 3..9, optimistic 2..8.
    matrix = np.array([[-0.1, -0.2, -0.5, -0.6] + [-0.2] * 7], dtype=np.float32)
    rc = scoring.score_dense(
        matrix, 4, [list(range(4, 11))], query_ids=["q"], exemplar_ids=[tuple("abcdefg")]
    )
    pess = per_query_bounds(rc.above, rc.ties, rc.unresolved, TiePolicy.PESSIMISTIC)[0]
    opt = per_query_bounds(rc.above, rc.ties, rc.unresolved, TiePolicy.OPTIMISTIC)[0]
    assert pess["recall@5"][0] == pytest.approx(3 / 7)  # ranks 3, 4, 5 of 7 exemplars
    assert pess["recall_norm@5"][0] == pytest.approx(3 / 5)
    assert opt["recall@5"][0] == pytest.approx(4 / 7)  # ranks 2, 3, 4, 5
    assert opt["recall_norm@5"][0] == pytest.approx(4 / 5)
    assert pess["recall@10"][0] == 1.0 and pess["recall_norm@10"][0] == 1.0  # 7 / min(10, 7)
    assert pess["recall_norm@100"][0] == 1.0


def test_recall_norm_reaches_one_where_abc_recall_cannot():
    m = metrics_of([[0] * 12, [0, 3, -1] + [-1] * 9])  # 12 perfect exemplars; ranks 1 and 5
    assert m["recall@10"][0] == pytest.approx(10 / 12)
    assert m["recall_norm@10"][0] == 1.0  # 10 hits / min(10, 12)
    assert m["recall_norm@5"][0] == 1.0
    assert m["recall_norm@5"][1] == m["recall@5"][1] == 1.0  # |E| = 2 <= K: the two agree
    assert m["recall_norm@100"][1] == 1.0


def test_recall_norm_bounds_for_topk_submissions():
    # one exemplar at rank 2, one somewhere in ranks 4..54: unresolved by a top-K list
    low, high = per_query_bounds(*counts([[1, 2]], [[0, 0]], [[0, 50]]))
    assert low["recall_norm@5"][0] == 0.5 and high["recall_norm@5"][0] == 1.0


def _reference_recall_norm(scores: np.ndarray, is_ex: np.ndarray, k: int) -> float:
    """Independent oracle: sort the full candidate list (exemplars after tied distractors, the
    pessimistic policy) and count exemplars in the first k."""
    order = sorted(range(len(scores)), key=lambda j: (-scores[j], bool(is_ex[j])))
    hits = sum(bool(is_ex[j]) for j in order[:k])
    return hits / min(k, int(is_ex.sum()))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recall_norm_matches_an_independent_sort_with_ties_and_negative_scores(seed):
    rng = np.random.default_rng(seed)
    n_q, n_d = 30, 150
    n_ex = rng.integers(1, 16, size=n_q)  # some queries with |E| > 5 and > 10
    e_max = int(n_ex.max())
    # scores on a coarse grid in [-1, 1]: many exact ties, most of them negative
    matrix = np.round(rng.uniform(-1, 1, size=(n_q, n_d + e_max)) * 8) / 8
    matrix[:, n_d:] += np.round(rng.uniform(0, 0.5, size=(n_q, 1)) * 8) / 8
    matrix = matrix.astype(np.float32)
    cols = [list(range(n_d, n_d + k)) for k in n_ex]
    rc = scoring.score_dense(
        matrix,
        n_d,
        cols,
        query_ids=[str(i) for i in range(n_q)],
        exemplar_ids=[tuple(map(str, c)) for c in cols],
    )
    assert rc.ties.max() > 0  # the data really has ties with distractors
    ours = per_query_bounds(rc.above, rc.ties, rc.unresolved)[0]
    for i in range(n_q):
        scores = matrix[i, : n_d + n_ex[i]].astype(np.float64)
        is_ex = np.arange(n_d + n_ex[i]) >= n_d
        for k in (5, 10, 100):
            want = _reference_recall_norm(scores, is_ex, k)
            assert ours[f"recall_norm@{k}"][i] == pytest.approx(want, abs=1e-12)
            assert ours[f"recall_norm@{k}"][i] >= ours[f"recall@{k}"][i]


def test_measure_registry_is_the_one_source():
    from benchmark.metrics import HEADLINE, MEASURES, SHOWN, measure

    names = [m.name for m in MEASURES]
    assert len(names) == len(set(names))
    assert [m.name for m in MEASURES if m.headline] == [HEADLINE] == ["mAP"]
    assert SHOWN == ("mAP", "recall@5", "recall@10", "recall@100")  # recall_norm: JSON only
    assert all(f"recall_norm@{k}" in names for k in (5, 10, 100))
    assert all(m.higher_is_better for m in MEASURES)
    with pytest.raises(KeyError, match="unknown measure 'recall@7'"):
        measure("recall@7")
    ranks = np.array([[1.0, 7.0], [3.0, np.inf]])
    assert set(per_query_metrics(ranks)) == set(names)
