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
# A row's first pass, for its lowest exemplar score, also counts the scores beating the
# row's top-N floor; when none does, an exemplar scoring above the floor has nothing above or
# equal to it in this tile, and its pass is skipped. Once the top-N has filled, that is every
# exemplar already in the top N, which is what a good feature space produces. A row maximum
# would skip more, but numba's LLVM does not vectorize a max reduction. fastmath only
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
    for i in range(rows):
        row = scores[i]
        n_ex = n_exemplars[i]
        # The pass for the lowest exemplar score also counts the scores beating the floor.
        # A row without exemplars still needs that count: its threshold is the +inf padding.
        # Every threshold and floor is read from an array, so it has the scores' dtype.
        j0 = 0
        for j in range(1, n_ex):
            if thresholds[i, j] < thresholds[i, j0]:
                j0 = j
        t0 = thresholds[i, j0]
        if n_top:
            a, q, hits = _count_first(row, t0, top_val[i, 0])
        else:
            a, q = _count(row, t0)
            hits = 0
        if n_ex > 0:
            above[i, j0] += a
            ties[i, j0] += q
        for j in range(n_ex):
            t = thresholds[i, j]
            if j == j0 or (n_top and hits == 0 and t > top_val[i, 0]):
                continue  # done above, or nothing in this row reaches t (0 above, 0 tied)
            a, q = _count(row, t)
            above[i, j] += a
            ties[i, j] += q
        if hits == 0:
            continue
        # Keep the N best scores in a min-heap (root = current N-th best). A score enters
        # only if it beats the root, then costs O(log N); equal scores keep the one seen
        # first. The caller sorts the heap when scoring ends.
        floor = top_val[i, 0]
        for k in range(cols):
            v = row[k]
            if v > floor:
                p = 0
                while True:
                    c = 2 * p + 1
                    if c >= n_top:
                        break
                    if c + 1 < n_top and top_val[i, c + 1] < top_val[i, c]:
                        c += 1
                    if top_val[i, c] >= v:
                        break
                    top_val[i, p] = top_val[i, c]
                    top_idx[i, p] = top_idx[i, c]
                    p = c
                top_val[i, p] = v
                top_idx[i, p] = col0 + k
                floor = top_val[i, 0]
