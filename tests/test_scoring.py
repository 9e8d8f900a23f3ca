"""The streamed engine against a naive full-matrix reference, on exactly representable scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmark import scoring
from benchmark.metrics import per_query_bounds


def dyadic_features(rng: np.random.Generator, n: int, dim: int = 16) -> np.ndarray:
    """Unit vectors with four entries of +-1/2: every dot product is an exact multiple of 1/4,
    so any GEMM blocking gives identical scores, and ties are plentiful."""
    out = np.zeros((n, dim), np.float32)
    for i in range(n):
        cols = rng.choice(dim, size=4, replace=False)
        out[i, cols] = rng.choice([-0.5, 0.5], size=4)
    return out


@pytest.fixture(autouse=True, params=["fused", "fused-serial", "torch"])
def engine(request, monkeypatch):
    """Every test runs on the numba tile kernel, both on worker threads (3, so shares are
    uneven) and serially, and on the plain torch passes."""
    monkeypatch.setattr(scoring, "USE_FUSED", request.param != "torch")
    monkeypatch.setattr(scoring, "PIPELINE_THREADS", 1 if request.param == "fused-serial" else 3)
    if request.param != "torch":
        pytest.importorskip("numba")
    return request.param


@pytest.fixture
def small_tiles(monkeypatch):
    monkeypatch.setattr(scoring, "QUERY_BLOCK", 7)
    monkeypatch.setattr(scoring, "DISTRACTOR_CHUNK", 13)
    monkeypatch.setattr(scoring, "EXEMPLAR_BLOCK", 5)


def make_case(seed: int = 0, n_q: int = 50, n_x: int = 30, n_d: int = 200):
    rng = np.random.default_rng(seed)
    q, x, d = dyadic_features(rng, n_q), dyadic_features(rng, n_x), dyadic_features(rng, n_d)
    ex = [
        sorted(rng.choice(n_x, size=int(rng.integers(1, 6)), replace=False).tolist())
        for _ in range(n_q)
    ]
    return q, x, d, ex


def naive(q, x, d, ex):
    s_d = q.astype(np.float64) @ d.T.astype(np.float64)
    above, ties = [], []
    for i, cols in enumerate(ex):
        s_e = q[i].astype(np.float64) @ x[cols].T.astype(np.float64)
        above.append([(s_d[i] > s).sum() for s in s_e])
        ties.append([(s_d[i] == s).sum() for s in s_e])
    return above, ties, s_d


def run_features(q, x, d, ex, top_n=20):
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
    )


@pytest.mark.parametrize("seed", [0, 1])
def test_streamed_equals_naive_full_matrix(small_tiles, seed):
    q, x, d, ex = make_case(seed)
    rc = run_features(q, x, d, ex)
    above, ties, s_d = naive(q, x, d, ex)
    for i, cols in enumerate(ex):
        assert rc.above[i, : len(cols)].tolist() == above[i]
        assert rc.ties[i, : len(cols)].tolist() == ties[i]
        assert (rc.above[i, len(cols) :] == -1).all()
        # the top N are the N best distractors by score, then position (ties are plentiful)
        best = np.lexsort((np.arange(len(d)), -s_d[i]))[:20]
        assert rc.top_index[i].tolist() == best.tolist()
        assert rc.top_scores[i].tolist() == s_d[i][best].tolist()
    assert int((rc.ties[rc.ties >= 0]).sum()) > 0, "the case must exercise ties"


def test_tile_size_does_not_change_counts(monkeypatch):
    q, x, d, ex = make_case(3)
    big = run_features(q, x, d, ex)
    seen = []
    rc = scoring.score_features(
        torch.from_numpy(q),
        torch.from_numpy(x),
        ex,
        lambda size: (torch.from_numpy(d[a : a + size]) for a in range(0, len(d), size)),
        query_ids=[str(i) for i in range(len(q))],
        exemplar_ids=[tuple(map(str, e)) for e in ex],
        top_n=20,
        progress=seen.append,
    )
    assert sum(seen) == len(d) and np.array_equal(rc.above, big.above)
    monkeypatch.setattr(scoring, "QUERY_BLOCK", 5)
    monkeypatch.setattr(scoring, "DISTRACTOR_CHUNK", 17)
    small = run_features(q, x, d, ex)
    assert np.array_equal(big.above, small.above) and np.array_equal(big.ties, small.ties)


def test_dense_path_equals_feature_path(small_tiles):
    q, x, d, ex = make_case(4)
    rc_f = run_features(q, x, d, ex)
    matrix = np.concatenate([q @ d.T, q @ x.T], axis=1)  # exact: dyadic scores
    cols = [[len(d) + c for c in e] for e in ex]
    rc_d = scoring.score_dense(
        matrix, len(d), cols, query_ids=rc_f.query_ids, exemplar_ids=rc_f.exemplar_ids, top_n=20
    )
    for name in ("above", "ties", "unresolved"):
        assert np.array_equal(getattr(rc_f, name), getattr(rc_d, name))
    assert np.array_equal(rc_f.top_scores, rc_d.top_scores)


def test_shards_merge_to_the_whole(small_tiles):
    q, x, d, ex = make_case(5)
    whole = run_features(q, x, d, ex)
    a = run_features(q, x, d[:120], ex)
    b = run_features(q, x, d[120:], ex)
    merged = a.merge(b, index_offset=120)
    for name in ("above", "ties", "top_scores", "top_index"):
        assert getattr(merged, name).tobytes() == getattr(whole, name).tobytes(), name


def test_duplicate_distractors_keep_the_first_copies_on_every_engine_and_shard():
    """A gallery where each image appears ~17 times (Gaussian features, default tiles): the
    top 20 are the first copies by position, and two shards merged equal the whole run byte
    for byte (torch.topk alone picks freely among equal scores, which broke both)."""
    rng = np.random.default_rng(11)
    q = rng.standard_normal((50, 32)).astype(np.float32)
    x = rng.standard_normal((50, 32)).astype(np.float32)
    d = rng.standard_normal((300, 32)).astype(np.float32)[rng.integers(0, 300, 5000)]
    ex = [[i] for i in range(50)]
    whole = run_features(q, x, d, ex)
    merged = run_features(q, x, d[:2600], ex).merge(run_features(q, x, d[2600:], ex), 2600)
    for name in ("above", "ties", "top_scores", "top_index"):
        assert getattr(merged, name).tobytes() == getattr(whole, name).tobytes(), name
    for i in range(len(q)):
        s = whole.top_scores[i]
        # within each run of equal scores, positions ascend, and no earlier copy is missing
        for value in np.unique(s):
            kept = whole.top_index[i][s == value]
            assert kept.tolist() == sorted(kept.tolist())
            copies = np.flatnonzero((d == d[kept[0]]).all(1))
            assert kept.tolist() == copies[: len(kept)].tolist()


def test_topk_bounds_contain_the_exact_metrics():
    rng = np.random.default_rng(7)
    n_q, n_d, k = 30, 400, 100
    q = rng.normal(size=(n_q, 8)).astype(np.float32)
    d = rng.normal(size=(n_d, 8)).astype(np.float32)
    x = rng.normal(size=(20, 8)).astype(np.float32)
    ex = [
        sorted(rng.choice(20, size=int(rng.integers(1, 4)), replace=False).tolist())
        for _ in range(n_q)
    ]
    scores = np.concatenate([q @ d.T, q @ x.T], axis=1)
    cols = [[n_d + c for c in e] for e in ex]
    ids = dict(
        query_ids=[str(i) for i in range(n_q)], exemplar_ids=[tuple(map(str, e)) for e in ex]
    )
    exact = scoring.score_dense(scores, n_d, cols, **ids)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    top = scoring.score_topk(
        order,
        np.take_along_axis(scores, order, 1),
        [scores[i, c] for i, c in enumerate(cols)],
        n_d,
        cols,
        **ids,
    )
    ex_lo, ex_hi = per_query_bounds(exact.above, exact.ties, exact.unresolved)
    lo, hi = per_query_bounds(top.above, top.ties, top.unresolved)
    assert not top.exact and exact.exact
    for m in ex_lo:
        assert (lo[m] <= ex_lo[m] + 1e-12).all() and (ex_hi[m] <= hi[m] + 1e-12).all()
    # Where an exemplar sits inside the list, its counts are exact.
    listed = top.unresolved == 0
    assert np.array_equal(top.above[listed], exact.above[listed])


@pytest.mark.parametrize("n_ex", [1, 4])
def test_one_and_four_exemplars_with_negative_scores_and_partial_tiles(small_tiles, n_ex):
    rng = np.random.default_rng(20 + n_ex)
    q, x, d = dyadic_features(rng, 19), dyadic_features(rng, 40), dyadic_features(rng, 150)
    ex = [sorted(rng.choice(40, size=n_ex, replace=False).tolist()) for _ in range(19)]
    rc = run_features(q, x, d, ex, top_n=5)
    above, ties, s_d = naive(q, x, d, ex)
    assert (rc.exemplar_scores < 0).any() and int(rc.ties.sum()) > 0
    assert rc.above.tolist() == above and rc.ties.tolist() == ties
    assert rc.top_scores.tolist() == np.sort(s_d, 1)[:, ::-1][:, :5].tolist()


@pytest.mark.parametrize("n_ex", [1, 4])
def test_a_distractor_copy_of_an_exemplar_ties_with_it(n_ex):
    """Gaussian (not dyadic) features at the default tile sizes: exemplar scores come from a
    GEMM like the distractor tiles, so a distractor that is a copy of an exemplar gets the
    exemplar's score bit for bit and counts as tied, not above or below."""
    rng = np.random.default_rng(n_ex)
    n_q = 300
    q = rng.standard_normal((n_q, 64)).astype(np.float32)
    x = rng.standard_normal((n_q * n_ex, 64)).astype(np.float32)
    d = rng.standard_normal((3000, 64)).astype(np.float32)
    copied = rng.choice(len(x), 40, replace=False)
    d[rng.choice(len(d), 40, replace=False)] = x[copied]
    ex = [list(range(i * n_ex, (i + 1) * n_ex)) for i in range(n_q)]
    rc = run_features(q, x, d, ex)
    assert [int(rc.ties[c // n_ex, c % n_ex]) for c in copied] == [1] * len(copied)


def test_kernel_skips_only_exemplars_nothing_can_reach():
    """The kernel skips an exemplar's pass when no score in the row beats the top-N floor
    and the exemplar scores above it; exemplars at, below and above the floor, rows with and
    without scores beating it, all against numpy."""
    kernels = pytest.importorskip("benchmark._kernels")
    rng = np.random.default_rng(0)
    rows, cols, n_top = 6, 40, 3
    scores = (rng.integers(-8, 9, size=(rows, cols)) / 8).astype(np.float32)
    floor = np.array([1.0, 0.5, 0.25, 0.125, 2.0, -1.0], np.float32)  # row 0/4: nothing beats
    top_val = np.repeat(floor[:, None], n_top, 1).copy()
    top_idx = np.full((rows, n_top), -1, np.int64)
    # per row: one exemplar below, one at, two above the floor (in shuffled order)
    thr = np.stack([floor - 0.25, floor, floor + 0.125, floor + 0.5], 1).astype(np.float32)
    thr = np.take_along_axis(thr, rng.permuted(np.tile(np.arange(4), (rows, 1)), axis=1), 1)
    n = np.full(rows, 4, np.int64)
    above = np.zeros((rows, 4), np.int64)
    ties = np.zeros((rows, 4), np.int64)
    kernels.count_and_insert(scores, thr, n, above, ties, top_val, top_idx, 0)
    assert above.tolist() == (scores[:, None, :] > thr[:, :, None]).sum(2).tolist()
    assert ties.tolist() == (scores[:, None, :] == thr[:, :, None]).sum(2).tolist()


@pytest.mark.parametrize("width", [1, 63, 64, 65, 130, 300])
def test_kernel_top_n_across_hit_blocks_keeps_the_first_of_equal_scores(width):
    """Tiles of every width around the kernel's hit block, many ties: after all tiles, each
    row's top N equals numpy's N best by (score descending, position ascending), and the
    counts equal numpy's."""
    rng = np.random.default_rng(width)
    scores = (rng.integers(-6, 7, size=(5, 700)) / 4).astype(np.float32)
    thr = (rng.integers(-6, 7, size=(5, 3)) / 4).astype(np.float32)
    above, _ = stream_kernel_and_check(scores, thr, np.array([3, 1, 2, 3, 0]), 7, width)
    assert (above[np.array([3, 1, 2, 3, 0])[:, None] <= np.arange(3)[None, :]] == 0).all()


def stream_kernel_and_check(scores, thr, n, n_top, width):
    """Stream ``scores`` through the kernel in tiles of ``width`` (padding thresholds set to
    +inf); every count and the top ``n_top`` (by score, then position) must equal numpy's.
    Returns the above and tied counts."""
    kernels = pytest.importorskip("benchmark._kernels")
    rows, total = scores.shape
    thr = thr.copy()
    thr[np.arange(thr.shape[1])[None, :] >= n[:, None]] = np.inf
    above = np.zeros(thr.shape, np.int64)
    ties = np.zeros(thr.shape, np.int64)
    top_val = np.full((rows, n_top), -np.inf, np.float32)
    top_idx = np.full((rows, n_top), -1, np.int64)
    for c0 in range(0, total, width):
        tile = np.ascontiguousarray(scores[:, c0 : c0 + width])
        kernels.count_and_insert(tile, thr, n.astype(np.int64), above, ties, top_val, top_idx, c0)
    got_idx, got_val = scoring.sort_top(top_idx, top_val.astype(np.float64))
    for i in range(rows):
        best = np.lexsort((np.arange(total), -scores[i]))[:n_top]
        assert got_idx[i].tolist() == best.tolist()
        assert got_val[i].tolist() == scores[i, best].tolist()
        for j in range(n[i]):
            assert above[i, j] == (scores[i] > thr[i, j]).sum()
            assert ties[i, j] == (scores[i] == thr[i, j]).sum()
    return above, ties


@pytest.mark.parametrize("width", [64, 300, 1024])
def test_kernel_counts_exemplars_above_the_floor_from_the_kept_scores(width):
    """Thresholds at the row's own scores of rank 0 to 2,000 (so tied), around the final
    top-20 floor and far below it, with the floor rising inside tiles: exemplars above the
    row's floor are counted from the scores that beat it, the others by full passes; every
    count equals numpy's, and so does the top 20."""
    rng = np.random.default_rng(100 + width)
    scores = (rng.integers(-400, 400, size=(6, 3000)) / 64).astype(np.float32)
    ranked = -np.sort(-scores, axis=1)
    thr = np.stack([ranked[:, r] for r in (0, 5, 19, 20, 21, 40, 2000)], 1)
    thr = np.take_along_axis(thr, rng.permuted(np.tile(np.arange(7), (6, 1)), axis=1), 1)
    n = np.array([7, 7, 3, 1, 5, 0])
    _, ties = stream_kernel_and_check(scores, thr, n, 20, width)
    assert (ties[n[:, None] > np.arange(7)[None, :]] > 0).all()


def test_first_tile_fill_finds_the_kth_best_by_sample_or_whole_row():
    """_kth_best (the first tile's top-N fill) against numpy's sort: rows long enough for
    the sampled bar and too short, Gaussian and heavily tied (the bar's fallback)."""
    kernels = pytest.importorskip("benchmark._kernels")
    rng = np.random.default_rng(5)
    for trial in range(600):
        cols = int(rng.integers(1, 1100))
        k = int(rng.integers(1, min(cols, 120) + 1))
        if trial % 3 == 0:
            row = (rng.integers(-5, 6, cols) / 4).astype(np.float32)
        else:
            row = rng.standard_normal(cols).astype(np.float32)
        stride = cols // (2 * k)
        rank = (16 * k) // (10 * max(stride, 1))
        got = kernels._kth_best(row, k, np.empty(cols, np.float32), stride, rank)
        assert got == np.sort(row)[::-1][k - 1], (trial, cols, k)


def test_sort_top_orders_by_score_then_position_on_both_paths():
    """sort_top's uint64-key path (float32 scores) and its lexsort path (float64 scores, -0.0)
    against numpy's lexsort: ties, -inf empty slots, signed zeros, huge and tiny values."""
    rng = np.random.default_rng(1)
    values = np.array([-np.inf, -1.5, 0.0, -0.0, 0.25, 1e-40, -1e-40, 7.5, 1e30, -3e38], np.float32)
    used = set()
    for trial in range(300):
        r, c = int(rng.integers(1, 20)), int(rng.integers(1, 30))
        s = rng.choice(values, (r, c)).astype(np.float64)
        if trial % 3 == 0:
            s[s == 0] = 0.0  # no negative zero: the key path applies
        if trial % 5 == 1:
            s += 1e-12  # not float32: the lexsort path
        idx = np.stack([rng.permutation(100_000)[:c] for _ in range(r)])
        idx[s == -np.inf] = -1
        used.add(scoring._sort_top_by_key(idx, s) is not None)
        got = scoring.sort_top(idx, s)
        order = np.lexsort((np.where(idx < 0, np.iinfo(np.int64).max, idx), -s), axis=1)
        assert got[0].tolist() == np.take_along_axis(idx, order, 1).tolist()
        assert got[1].tobytes() == np.take_along_axis(s, order, 1).tobytes()
    assert used == {True, False}


def test_best_columns_keeps_the_first_of_equal_scores():
    """best_columns against numpy's lexsort (score descending, column ascending) on heavily
    tied tiles, k from 1 to the width; a row of masked -inf scores keeps its finite ones."""
    rng = np.random.default_rng(9)
    for trial in range(60):
        rows, cols = int(rng.integers(1, 12)), int(rng.integers(1, 300))
        tile = (rng.integers(-4, 5, size=(rows, cols)) / 4).astype(np.float32)
        k = int(rng.integers(1, cols + 1))
        vals, idx = scoring.best_columns(torch.from_numpy(tile), k)
        for i in range(rows):
            best = np.lexsort((np.arange(cols), -tile[i]))[:k]
            assert idx[i].tolist() == best.tolist(), (trial, i)
            assert vals[i].tolist() == tile[i, best].tolist()
    masked = torch.full((1, 50), float("-inf"))
    masked[0, [7, 3, 40]] = torch.tensor([0.5, 0.5, 0.25])
    vals, idx = scoring.best_columns(masked, 5)
    assert idx[0, :3].tolist() == [3, 7, 40] and vals[0, :3].tolist() == [0.5, 0.5, 0.25]
    assert (vals[0, 3:] == float("-inf")).all()


def test_no_top_n_keeps_counts_exact(small_tiles):
    """top_n=0 (counts only): the kernel's branch without a floor counts every exemplar."""
    q, x, d, ex = make_case(6)
    rc = run_features(q, x, d, ex, top_n=0)
    above, ties, _ = naive(q, x, d, ex)
    for i, cols in enumerate(ex):
        assert rc.above[i, : len(cols)].tolist() == above[i]
        assert rc.ties[i, : len(cols)].tolist() == ties[i]
    assert rc.top_index.shape == (len(q), 0)


def test_float64_dense_scores_one_ulp_apart_are_not_tied(small_tiles):
    """A float64 dense file is compared in float64: the kernel's thresholds keep its dtype."""
    base = np.array([0.5, 0.25, -0.125, 0.0])
    matrix = np.zeros((2, 40))
    matrix[:, :30] = np.resize(base, 30)
    matrix[:, 3] = np.nextafter(0.5, 1.0)  # one float64 ulp above the exemplar
    matrix[:, 30] = 0.5  # each query's exemplar
    rc = scoring.score_dense(
        matrix, 30, [[30], [30]], query_ids=["a", "b"], exemplar_ids=[("e",), ("e",)], top_n=5
    )
    expected_above = int((matrix[0, :30] > 0.5).sum())
    expected_ties = int((matrix[0, :30] == 0.5).sum())
    assert expected_above == 1 and expected_ties > 0
    assert rc.above[:, 0].tolist() == [expected_above] * 2
    assert rc.ties[:, 0].tolist() == [expected_ties] * 2


def test_zero_distractor_row_stops_every_engine_with_its_name(small_tiles):
    from benchmark.errors import AttribBenchError

    q, x, d, ex = make_case(7)
    d[150] = 0
    with pytest.raises(AttribBenchError, match="row 'd150' is all zeros"):
        scoring.score_features(
            torch.from_numpy(q),
            torch.from_numpy(x),
            ex,
            lambda size: (torch.from_numpy(d[a : a + size]) for a in range(0, len(d), size)),
            query_ids=[str(i) for i in range(len(q))],
            exemplar_ids=[tuple(map(str, e)) for e in ex],
            distractor_ids=[f"d{i}" for i in range(len(d))],
        )


def test_a_failing_tile_propagates_and_no_thread_is_left_waiting(small_tiles, monkeypatch):
    """An error inside a worker's tile reaches the caller (the producer never blocks on a
    full queue), and the next run starts clean."""
    q, x, d, ex = make_case(8)
    update = scoring._Accumulator.update

    def failing(self, rows, scores, col0):
        if col0 >= 39:
            raise RuntimeError("tile failed")
        update(self, rows, scores, col0)

    monkeypatch.setattr(scoring._Accumulator, "update", failing)
    with pytest.raises(RuntimeError, match="tile failed"):
        run_features(q, x, d, ex)
    monkeypatch.setattr(scoring._Accumulator, "update", update)
    above, _, _ = naive(q, x, d, ex)
    rc = run_features(q, x, d, ex)
    assert [rc.above[i, : len(c)].tolist() for i, c in enumerate(ex)] == above


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_gallery_normalized_up_front_scores_byte_identically(small_tiles, monkeypatch, dtype):
    """UnitGallery normalizes in blocks (here of 37 rows) before scoring; the counts, exemplar
    and top-N scores equal the chunk-by-chunk path's bit for bit, on Gaussian rows of every
    magnitude (1e-30 to 1e30: the rescaled path of normalize), float32 in place or float64."""
    monkeypatch.setattr(scoring.UnitGallery, "BLOCK", 37)
    rng = np.random.default_rng(3)
    q = torch.from_numpy(rng.standard_normal((23, 16)).astype(np.float32))
    x = torch.from_numpy(rng.standard_normal((30, 16)).astype(np.float32))
    d = torch.from_numpy(rng.standard_normal((200, 16))).to(dtype)
    d[::7] *= 1e30
    d[3::7] *= 1e-30
    ex = [sorted(rng.choice(30, size=int(rng.integers(1, 5)), replace=False).tolist()) for _ in q]
    kw = {
        "query_ids": [str(i) for i in range(len(q))],
        "exemplar_ids": [tuple(map(str, e)) for e in ex],
        "top_n": 9,
    }
    chunked = scoring.score_features(
        q, x, ex, lambda size: (d[a : a + size] for a in range(0, len(d), size)), **kw
    )
    raw = d.clone()
    gallery = scoring.UnitGallery.normalize(d)
    assert (gallery.rows.data_ptr() == d.data_ptr()) == (dtype == torch.float32)
    assert not torch.equal(gallery.rows.double(), raw.double())
    up_front = scoring.score_features(q, x, ex, gallery, **kw)
    for name in ("exemplar_scores", "above", "ties", "top_index", "top_scores"):
        assert getattr(up_front, name).tobytes() == getattr(chunked, name).tobytes(), name


def test_a_zero_row_in_a_gallery_normalized_up_front_is_named(monkeypatch):
    from benchmark.errors import AttribBenchError

    monkeypatch.setattr(scoring.UnitGallery, "BLOCK", 32)
    d = torch.ones(100, 4)
    d[70] = 0
    with pytest.raises(AttribBenchError, match="row 'd70' is all zeros"):
        scoring.UnitGallery.normalize(d, [f"d{i}" for i in range(100)])
