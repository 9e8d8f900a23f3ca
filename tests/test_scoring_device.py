"""The device scoring path (benchmark.scoring_device) against the default CPU engine.

The device path is plain torch, so ``device="cpu"`` runs the very code a GPU runs; these tests
hold it to the default engine's counts on exact (dyadic) scores, and hold its half-precision
mode, whose near-threshold rows are re-scored in float32, to float64 counts on data built so
that half precision alone cannot tell the scores apart. Tests marked ``gpu`` repeat the
comparison on CUDA and are skipped without it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmark import scoring, scoring_device
from benchmark.errors import AttribBenchError
from tests.test_scoring import dyadic_features, make_case, naive

HAS_CUDA = torch.cuda.is_available()


@pytest.fixture
def mid_device_tiles(monkeypatch):
    """Partial tiles, but few enough of them for the larger half-precision cases."""
    monkeypatch.setattr(scoring_device, "DEVICE_QUERY_BLOCK", 5)
    monkeypatch.setattr(scoring_device, "DEVICE_CHUNK", 250)
    monkeypatch.setattr(scoring_device, "PAIR_BLOCK", 7)


@pytest.fixture
def small_device_tiles(monkeypatch):
    """Tiles that do not divide the data: partial query blocks and partial chunks."""
    monkeypatch.setattr(scoring_device, "DEVICE_QUERY_BLOCK", 7)
    monkeypatch.setattr(scoring_device, "DEVICE_CHUNK", 13)


def run(q, x, d, ex, top_n=20, **kw):
    def chunks(size):
        for a in range(0, len(d), size):
            yield torch.from_numpy(d[a : a + size])

    return scoring.score_features(
        torch.from_numpy(q),
        torch.from_numpy(x),
        ex,
        chunks,
        query_ids=[str(i) for i in range(len(q))],
        exemplar_ids=[tuple(map(str, e)) for e in ex],
        top_n=top_n,
        **kw,
    )


def assert_same(a: scoring.RankCounts, b: scoring.RankCounts) -> None:
    for name in ("above", "ties", "unresolved", "top_scores", "top_index"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert np.array_equal(a.exemplar_scores, b.exemplar_scores, equal_nan=True)


def assert_top_index_valid(rc: scoring.RankCounts, q, d, atol: float = 0.0) -> None:
    """Each reported top index names a distinct distractor with the reported score."""
    s = q.astype(np.float64) @ d.T.astype(np.float64)
    for i in range(len(q)):
        ok = rc.top_index[i] >= 0
        assert np.allclose(s[i][rc.top_index[i][ok]], rc.top_scores[i][ok], rtol=0, atol=atol)
        assert len(set(rc.top_index[i][ok].tolist())) == int(ok.sum())


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cpu_device_path_equals_default_engine(small_device_tiles, monkeypatch, fused, seed):
    if fused:
        pytest.importorskip("numba")
    monkeypatch.setattr(scoring, "USE_FUSED", fused)
    q, x, d, ex = make_case(seed)
    default = run(q, x, d, ex)
    dev = run(q, x, d, ex, device="cpu")
    assert_same(default, dev)
    assert_top_index_valid(dev, q, d)
    assert int(dev.ties[dev.ties >= 0].sum()) > 0, "the case must exercise ties"


@pytest.mark.parametrize("n_ex", [1, 4])
def test_device_path_one_and_four_exemplars_negative_scores(small_device_tiles, n_ex):
    rng = np.random.default_rng(10 + n_ex)
    q, x, d = dyadic_features(rng, 23), dyadic_features(rng, 40), dyadic_features(rng, 101)
    ex = [sorted(rng.choice(40, size=n_ex, replace=False).tolist()) for _ in range(23)]
    rc = run(q, x, d, ex, device="cpu")
    above, ties, _ = naive(q, x, d, ex)
    assert (rc.exemplar_scores < 0).any(), "the case must hold negative exemplar scores"
    assert rc.above.tolist() == above and rc.ties.tolist() == ties
    assert_same(rc, run(q, x, d, ex))


def test_device_tile_size_does_not_change_counts(monkeypatch):
    q, x, d, ex = make_case(3)
    big = run(q, x, d, ex, device="cpu")
    monkeypatch.setattr(scoring_device, "DEVICE_QUERY_BLOCK", 5)
    monkeypatch.setattr(scoring_device, "DEVICE_CHUNK", 17)
    assert_same(big, run(q, x, d, ex, device="cpu"))


def test_device_top_n_zero_and_larger_than_gallery(small_device_tiles):
    q, x, d, ex = make_case(6, n_d=15)
    for top_n in (0, 40):
        assert_same(run(q, x, d, ex, top_n=top_n), run(q, x, d, ex, top_n=top_n, device="cpu"))


def near_tie_case(seed: int = 0, n_q: int = 12, n_d: int = 150, dim: int = 64):
    """Distractors whose scores sit 1e-4 .. 1e-3 from an exemplar's: too close for half
    precision (whose error here is ~1e-3), far apart for float32 (~1e-7)."""
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(n_q, dim))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    ortho = rng.normal(size=(n_q, n_d + 1, dim))
    ortho -= (ortho @ q[:, :, None]) * q[:, None, :]
    ortho /= np.linalg.norm(ortho, axis=2, keepdims=True)
    base = rng.uniform(0.2, 0.6, size=n_q)
    offsets = rng.integers(-10, 11, size=(n_q, n_d)) * 1e-4 + 5e-5  # never 0: no exact ties
    cos = np.concatenate([base[:, None], base[:, None] + offsets], 1)
    vec = cos[:, :, None] * q[:, None, :] + np.sqrt(1 - cos**2)[:, :, None] * ortho
    # Query i's exemplar is vec[i, 0]; its distractors vec[i, 1:] (all queries share them).
    x = vec[:, 0].astype(np.float32)
    d = vec[:, 1:].reshape(-1, dim).astype(np.float32)
    ex = [[i] for i in range(n_q)]
    # Other queries' distractors score at random against query i: drop the few that land
    # within 1e-5 of an exemplar score, where float32 rounding could flip a comparison.
    gap = np.abs(q @ d.T.astype(np.float64) - np.einsum("qd,qd->q", q, x)[:, None])
    d = d[gap.min(0) > 1e-5]
    return q.astype(np.float32), x, d, ex


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_half_precision_rescoring_keeps_counts_exact(mid_device_tiles, precision):
    q, x, d, ex = near_tie_case()
    want_above, want_ties, s_d = naive(q, x, d, ex)
    # float64 gaps are >= 5e-5, so float32 rounding (~1e-7) cannot flip any comparison.
    s_x = np.einsum("qd,qd->q", q.astype(np.float64), x.astype(np.float64))
    assert np.abs(s_d - s_x[:, None]).min() > 1e-5
    rc = run(q, x, d, ex, device="cpu", precision=precision)
    assert rc.above.tolist() == want_above and rc.ties.tolist() == want_ties
    # Both exact re-scoring routes ran: whole rows near an exemplar score (GEMM), and
    # single top-N candidates near the floor (dot products).
    assert scoring_device.LAST_STATS.rescored_rows > 0
    assert scoring_device.LAST_STATS.rescored_pairs > 0
    # Top-N scores are float32 scores too; re-scored rows come from a GEMM of another shape,
    # so they may differ from the fp32 path's in the last bit, never more.
    f32 = run(q, x, d, ex, device="cpu")
    assert np.array_equal(rc.above, f32.above) and np.array_equal(rc.ties, f32.ties)
    assert np.allclose(rc.top_scores, f32.top_scores, rtol=0, atol=1e-6)
    assert_top_index_valid(rc, q, d, atol=1e-6)


def test_half_precision_without_margin_would_be_wrong(mid_device_tiles, monkeypatch):
    """The data really needs the re-scoring: with no margin, fp16 counts go wrong."""
    q, x, d, ex = near_tie_case()
    want_above, _, _ = naive(q, x, d, ex)
    monkeypatch.setitem(scoring_device.MARGIN, "fp16", 0.0)
    rc = run(q, x, d, ex, device="cpu", precision="fp16", top_n=0)
    assert rc.above.tolist() != want_above


def test_bad_device_and_precision_are_one_line_errors():
    q, x, d, ex = make_case(0, n_q=3, n_d=5)
    with pytest.raises(AttribBenchError, match="device 'nonsense' is not usable"):
        run(q, x, d, ex, device="nonsense")
    with pytest.raises(AttribBenchError, match="unknown precision 'fp8'"):
        run(q, x, d, ex, device="cpu", precision="fp8")
    if not HAS_CUDA:
        with pytest.raises(AttribBenchError, match="device 'cuda' is not usable"):
            run(q, x, d, ex, device="cuda")


def test_device_path_names_zero_distractor_row(small_device_tiles):
    q, x, d, ex = make_case(0, n_d=40)
    d[30] = 0
    names = [f"d{i}" for i in range(len(d))]
    with pytest.raises(AttribBenchError, match="row 'd30' is all zeros"):
        run(q, x, d, ex, device="cpu", distractor_ids=names)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_cuda_equals_cpu_engine(small_device_tiles, precision):
    q, x, d, ex = make_case(0)
    assert_same(run(q, x, d, ex), run(q, x, d, ex, device="cuda", precision=precision))
    q, x, d, ex = near_tie_case()
    want_above, want_ties, _ = naive(q, x, d, ex)
    rc = run(q, x, d, ex, device="cuda", precision=precision)
    assert rc.above.tolist() == want_above and rc.ties.tolist() == want_ties
