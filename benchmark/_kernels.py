"""Fused per-tile kernel for the CPU scoring engine (numba).

After the GEMM writes a tile of scores, everything else the engine needs from it is done in
one read of each query row while the row sits in cache: per exemplar, how many scores are
strictly above and exactly equal to its score, and the insertion of any score that beats the
query's current N-th best into a per-query min-heap of the top N. In plain torch that is 2E
full passes over the tile (each materializing a boolean tile) plus a topk and a merge.

The kernel is serial (no ``parallel=True``) and releases the GIL: the engine runs one copy per
worker thread, each right after that thread's own single-threaded GEMM
(``benchmark.scoring_pipeline``). A numba thread pool alternating with torch's OpenMP pool
made both spin against each other, and a serial kernel between multi-threaded GEMMs leaves
all cores but one idle (benchmarks/bench_scoring.py, 2-core CPU).
"""

from __future__ import annotations

import numpy as np
from numba import njit


# Counting loops run over a 1-D row view in the row's own dtype, with int32 accumulators (a
# tile row has far fewer than 2**31 columns) added to the int64 totals once per row; LLVM then
# vectorizes them (8 float32 lanes per AVX2 register). Both halves matter: numba widens
# ``int32 + int32`` to int64 unless the sum is cast back, and a float64 threshold (a Python
# float, or np.inf joined with a float32 by an if-expression) turns every comparison into a
# float32 -> float64 conversion plus a 4-lane compare. Fixing both made the pass 2.7x faster
# (1024 x 1024 float32 tile: 0.50 -> 0.18 ms, one core, read back from L3).
# Every row is scanned once for the scores beating its top-N floor (the heap's root); the
# scores that do are kept aside while they go into the heap. An exemplar scoring above the
# row's final floor can only be beaten or tied by kept scores, so it is counted over those few
# instead of the whole row; only exemplars at or below the floor need a full pass, and the
# lowest of them shares the floor scan. Once the top-N has filled, exemplars in the top N,
# which is what a good feature space produces, cost almost nothing. fastmath only
# licenses assuming no NaN/inf in arithmetic (inputs are validated finite): the kernel does
# comparisons and integer sums, never float arithmetic, so results stay exact. numba compiles
# one version per dtype: float32 for features, float64 for float64 dense files.
@njit(cache=True, nogil=True, fastmath=True, inline="always")
def _count_first(row: np.ndarray, t: float, floor: float) -> tuple[int, int, int]:
    """One pass: scores above t, equal to t, and above floor (t, floor: the row's dtype)."""
    a = np.int32(0)
    q = np.int32(0)
    h = np.int32(0)
    for k in range(row.shape[0]):
        v = row[k]
        a = np.int32(a + np.int32(v > t))
        q = np.int32(q + np.int32(v == t))
        h = np.int32(h + np.int32(v > floor))
    return a, q, h


@njit(cache=True, nogil=True, fastmath=True, inline="always")
def _count(row: np.ndarray, t: float) -> tuple[int, int]:
    """One pass: scores above t and equal to t (t: the row's dtype)."""
    a = np.int32(0)
    q = np.int32(0)
    for k in range(row.shape[0]):
        v = row[k]
        a = np.int32(a + np.int32(v > t))
        q = np.int32(q + np.int32(v == t))
    return a, q


# Scores are read in blocks of HIT_BLOCK: the first pass counts each block (vectorized), and
# only a block holding a score above the row's top-N floor is read again, one score at a
# time, to insert it into the heap while the block is still in L1. The previous kernel
# re-read the whole row whenever any of its scores beat the floor, which in a 1,024-wide tile
# is most rows until the floor settles (top-100 of 200k: ~100 ln(200k / 1k) = 530 insertions
# per query, spread over the first tiles). Measured on one worker, 1,000 queries x 200k x 512
# (time of the kernel over plain counting): whole-row re-read 0.142 s; blocks of 32 / 64 /
# 128 / 256: 0.105 / 0.098 / 0.104 / 0.119 s. Smaller blocks lose vectorization.
HIT_BLOCK = 64


@njit(cache=True, nogil=True, inline="always")
def _sift_down(top_val: np.ndarray, top_idx: np.ndarray, p: int, v: float, index: int) -> None:
    """Put (v, index) at slot p of a heap whose subtrees below p are heaps, and sift it down.

    The heap's root is the entry to drop first: the lowest score and, among equal scores,
    the latest distractor (highest index), so the N kept are the N best by score, then
    position (scoring.best_columns).
    """
    n_top = top_val.shape[0]
    while True:
        c = 2 * p + 1
        if c >= n_top:
            break
        d = c + 1
        if d < n_top and (
            top_val[d] < top_val[c] or (top_val[d] == top_val[c] and top_idx[d] > top_idx[c])
        ):
            c = d
        if not (top_val[c] < v or (top_val[c] == v and top_idx[c] > index)):
            break
        top_val[p] = top_val[c]
        top_idx[p] = top_idx[c]
        p = c
    top_val[p] = v
    top_idx[p] = index


@njit(cache=True, nogil=True, inline="always")
def _insert(top_val: np.ndarray, top_idx: np.ndarray, v: float, index: int) -> None:
    """Replace a heap's root with (v, index), which beats it: O(log N). A new score equal
    to the root's is never inserted: it comes later than every kept one."""
    _sift_down(top_val, top_idx, 0, v, index)


@njit(cache=True, nogil=True, fastmath=True, inline="always")
def _count_above(row: np.ndarray, floor: float) -> int:
    """One pass: scores above floor (the row's dtype)."""
    h = np.int32(0)
    for k in range(row.shape[0]):
        h = np.int32(h + np.int32(row[k] > floor))
    return h


@njit(cache=True, nogil=True, fastmath=True)
def count_and_insert(
    scores: np.ndarray,  # [R, C] float32 or float64, C-contiguous: one tile
    thresholds: np.ndarray,  # [R, E] same dtype: each row's exemplar scores
    n_exemplars: np.ndarray,  # [R] int64
    above: np.ndarray,  # [R, E] int64, accumulated in place
    ties: np.ndarray,  # [R, E] int64, accumulated in place
    top_val: np.ndarray,  # [R, N] same dtype, min-heap per row, updated in place (-inf = empty)
    top_idx: np.ndarray,  # [R, N] int64, updated in place
    col0: int,  # column of the tile's first score in the full distractor list
) -> None:
    rows, cols = scores.shape
    n_top = top_val.shape[1]
    if cols == 0:
        return
    kept = np.empty(cols, scores.dtype)  # one row's scores that beat their block's floor
    for i in range(rows):
        row = scores[i]
        n_ex = n_exemplars[i]
        if n_top == 0:  # counts only (no top-N, or the tile that fills it)
            for j in range(n_ex):
                a, q = _count(row, thresholds[i, j])
                above[i, j] += a
                ties[i, j] += q
            continue
        heap_val = top_val[i]
        heap_idx = top_idx[i]
        # Every threshold and floor is read from an array, so it has the scores' dtype.
        j0 = 0
        for j in range(1, n_ex):
            if thresholds[i, j] < thresholds[i, j0]:
                j0 = j
        t0 = thresholds[i, j0]
        # The scan for the floor doubles as the pass of the lowest exemplar when that one is
        # at or below the floor; otherwise it counts only what beats the floor.
        fused = n_ex > 0 and t0 <= heap_val[0]
        a0 = 0
        q0 = 0
        n_kept = 0
        for b0 in range(0, cols, HIT_BLOCK):
            # Slice first: a loop over range(b0, b1) indexes with a signed offset that
            # numba cannot prove non-negative, and its wraparound check stops LLVM from
            # vectorizing the pass (2.6x slower, measured).
            block = row[b0 : min(b0 + HIT_BLOCK, cols)]
            floor = heap_val[0]
            if fused:
                ab, qb, hb = _count_first(block, t0, floor)
                a0 += ab
                q0 += qb
            else:
                hb = _count_above(block, floor)
            if hb == 0:
                continue
            block_floor = floor
            for k in range(block.shape[0]):
                v = block[k]
                if v > block_floor:
                    kept[n_kept] = v
                    n_kept += 1
                    if v > floor:
                        _insert(heap_val, heap_idx, v, col0 + b0 + k)
                        floor = heap_val[0]
        end = heap_val[0]  # the highest floor any block of this row was scanned with
        for j in range(n_ex):
            t = thresholds[i, j]
            if fused and j == j0:
                above[i, j] += a0
                ties[i, j] += q0
            elif t > end:
                # Every score at or above t beat its block's floor, so it was kept: count
                # the few kept scores instead of the whole row.
                ak = 0
                qk = 0
                for u in range(n_kept):
                    ak += kept[u] > t
                    qk += kept[u] == t
                above[i, j] += ak
                ties[i, j] += qk
            else:
                a, q = _count(row, t)
                above[i, j] += a
                ties[i, j] += q


@njit(cache=True, nogil=True)
def _select(a: np.ndarray, n: int) -> float:
    """The value that would sit at index n if ``a`` were sorted ascending (Hoare's
    quickselect, middle pivot, in place); a is left permuted."""
    lo, hi = 0, a.shape[0] - 1
    while lo < hi:
        pivot = a[(lo + hi) >> 1]
        i, j = lo, hi
        while i <= j:
            while a[i] < pivot:
                i += 1
            while a[j] > pivot:
                j -= 1
            if i <= j:
                a[i], a[j] = a[j], a[i]
                i += 1
                j -= 1
        if n <= j:
            hi = j
        elif n >= i:
            lo = i
        else:
            break
    return a[n]


@njit(cache=True, nogil=True)
def _kth_best(row: np.ndarray, k: int, work: np.ndarray, stride: int, rank: int) -> float:
    """The k-th best score of ``row`` (``work``: scratch of the row's length).

    Quickselect over a whole 1,024-score row mispredicts a branch on about every other
    score (~11 us). With ``stride`` >= 2, a strided sample's ``rank``-th best is a bar that
    ~1.6k scores pass; the k-th best is then selected among those few (~4 us). If fewer than
    k pass (an unlucky sample, or many scores tied below it) the whole row is used.
    """
    cols = row.shape[0]
    if stride >= 2:
        n = 0
        for c in range(0, cols, stride):
            work[n] = row[c]
            n += 1
        bar = _select(work[:n], n - 1 - min(rank, n - 1))
        m = 0
        for c in range(cols):  # branch-free gather of the scores at or above the bar
            work[m] = row[c]
            m += row[c] >= bar
        if m >= k:
            return _select(work[:m], m - k)
    work[:] = row
    return _select(work, cols - k)


@njit(cache=True, nogil=True)
def fill_top(
    scores: np.ndarray,  # [R, C] float32 or float64: the first tile of these rows
    top_val: np.ndarray,  # [R, N] same dtype, -inf: empty heaps, filled in place
    top_idx: np.ndarray,  # [R, N] int64, -1
    col0: int,  # column of the tile's first score in the full distractor list
) -> None:
    """Fill empty heaps with each row's min(N, C) best scores by score, then position.

    Quickselect (``_kth_best``) finds the k-th best score; every score above it and the
    first of those equal to it (by position) are kept, then made a heap in place (bottom-up,
    O(N); sorting them cost ~4.7 us a row). Per 1,000 x 1,024 tile on one core: ~9 ms;
    torch.topk alone ~12 ms (but it picks freely among equal scores), topk plus the tie fix
    (scoring.best_columns) ~28 ms.
    """
    rows, cols = scores.shape
    n_top = top_val.shape[1]
    k = min(n_top, cols)
    if k == 0:
        return
    work = np.empty(cols, scores.dtype)
    stride = cols // (2 * k)  # a sample of ~2k scores, when the row is long enough
    rank = (16 * k) // (10 * max(stride, 1))  # its score expected to have ~1.6k above it
    for i in range(rows):
        row = scores[i]
        kth = _kth_best(row, k, work, stride, rank)
        heap_val = top_val[i]
        heap_idx = top_idx[i]
        m = n_top - k  # slots before it stay empty (-inf), when the tile is narrower than N
        for c in range(cols):
            if row[c] > kth:
                heap_val[m] = row[c]
                heap_idx[m] = col0 + c
                m += 1
        for c in range(cols):
            if m == n_top:
                break
            if row[c] == kth:
                heap_val[m] = kth
                heap_idx[m] = col0 + c
                m += 1
        for p in range(n_top // 2 - 1, -1, -1):
            _sift_down(heap_val, heap_idx, p, heap_val[p], heap_idx[p])
