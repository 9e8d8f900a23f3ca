"""Approximate mode: the recall loss it reports is the loss measured independently against
the exact scorer; exhaustive search reproduces exact counts; results are flagged and the
store refuses them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmark import scoring
from benchmark.approximate import (
    ApproxOptions,
    evaluate_approximate,
    sample_rows,
    score_approximate,
)
from benchmark.errors import AttribBenchError
from benchmark.evaluation import RunOptions
from benchmark.store import check_storable
from tests.test_shards import write_features


def synthetic(seed: int = 3, q: int = 150, d: int = 2000, dim: int = 16):
    """Clustered features (so IVF with few probes misses neighbours), 1-4 exemplars each."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(20, dim, generator=g)
    pick = torch.randint(0, 20, (d + q * 4 + q,), generator=g)
    pts = centers[pick] + 0.6 * torch.randn(len(pick), dim, generator=g)
    distractors, exemplars, queries = pts[:d], pts[d : d + 4 * q], pts[d + 4 * q :]
    n_ex = torch.randint(1, 5, (q,), generator=g).tolist()
    index = [[4 * i + j for j in range(k)] for i, k in enumerate(n_ex)]
    kw = {
        "query_ids": [f"q{i}" for i in range(q)],
        "exemplar_ids": [tuple(f"x{j}" for j in row) for row in index],
        "top_n": 20,
    }
    return queries, exemplars, index, distractors, kw


def chunks_of(x):
    return lambda size: (x[a : a + size] for a in range(0, len(x), size))


@pytest.mark.parametrize(
    "opts",
    [
        ApproxOptions("ivf", candidates=30, nlist=40, nprobe=1, sample=60, seed=1),
        ApproxOptions("hnsw", candidates=25, hnsw_m=4, ef_search=25, sample=60, seed=2),
    ],
)
def test_reported_recall_loss_equals_the_loss_against_the_exact_scorer(opts):
    queries, exemplars, index, distractors, kw = synthetic()
    report: dict = {}
    approx = score_approximate(
        queries, exemplars, index, chunks_of(distractors), opts=opts, report=report, **kw
    )
    exact = scoring.score_features(queries, exemplars, index, chunks_of(distractors), **kw)
    rows = sample_rows(len(queries), opts)
    assert len(rows) == 60
    # independently: which exemplar counts and top-N entries of the sampled queries differ
    real = exact.above[rows] >= 0
    differ = (approx.above[rows] != exact.above[rows]) | (approx.ties[rows] != exact.ties[rows])
    expected = (differ & real).sum() / real.sum()
    top_lost = np.mean(
        [1 - len(set(approx.top_index[r]) & set(exact.top_index[r])) / 20 for r in rows]
    )

    def mean_ap(c) -> float:
        """By hand: the k-th best exemplar (0-based) ranks after k exemplars and its
        distractors above or tied (pessimistic); precision there is (k + 1) / rank."""
        aps = []
        for r in rows:
            d = np.sort(c.above[r, : len(index[r])] + c.ties[r, : len(index[r])])
            aps.append(np.mean([(k + 1) / (k + 1 + x) for k, x in enumerate(d)]))
        return float(np.mean(aps))

    loss = report["recall"]
    assert expected > 0, "the index must miss something for this test to mean anything"
    assert loss["exemplar_counts_differ"] == pytest.approx(expected, abs=1e-12)
    assert loss["top_n_recall_loss"] == pytest.approx(top_lost, abs=1e-12)
    assert loss["metric_difference"]["mAP"] == pytest.approx(
        abs(mean_ap(approx) - mean_ap(exact)), abs=1e-9
    )
    assert loss["max_metric_difference"] >= loss["metric_difference"]["mAP"] > 0
    # missed distractors can only make counts smaller
    assert (approx.above <= exact.above).all()


def test_exhaustive_search_reproduces_exact_counts():
    queries, exemplars, index, distractors, kw = synthetic(q=40, d=300)
    opts = ApproxOptions("ivf", candidates=300, nlist=8, nprobe=8, sample=40)
    report: dict = {}
    approx = score_approximate(
        queries, exemplars, index, chunks_of(distractors), opts=opts, report=report, **kw
    )
    exact = scoring.score_features(queries, exemplars, index, chunks_of(distractors), **kw)
    np.testing.assert_array_equal(approx.above, exact.above)
    np.testing.assert_array_equal(approx.ties, exact.ties)
    np.testing.assert_array_equal(approx.top_index, exact.top_index)
    assert report["recall"]["exemplar_counts_differ"] == 0
    assert report["recall"]["max_metric_difference"] == 0


def test_approximate_results_are_flagged_and_refused_by_the_store(tiny, tmp_path):
    sub = write_features(tmp_path / "sub", tiny)
    opts = ApproxOptions("hnsw", candidates=100, sample=50)
    result = evaluate_approximate(sub, tiny, options=RunOptions(progress=False), approx=opts)
    assert result["settings"]["approximate"]["method"] == "hnsw"
    assert result["settings"]["approximate"]["recall"]["sample_queries"] == 50
    assert any(f.startswith("approximate (hnsw): not canonical") for f in result["flags"])
    with pytest.raises(AttribBenchError) as exc:
        check_storable(result)
    assert "approximate" in str(exc.value) and "\n" not in str(exc.value)


def test_bad_approximate_options_are_one_line():
    with pytest.raises(AttribBenchError, match="ivf or hnsw"):
        ApproxOptions("lsh")
    with pytest.raises(AttribBenchError, match="--nprobe"):
        ApproxOptions(nprobe=0)
