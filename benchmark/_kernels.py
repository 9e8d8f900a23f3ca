"""Fused per-tile kernel for the CPU scoring engine (numba).

After the GEMM writes a tile of scores, everything else the engine needs from it is done in
one read of each query row while the row sits in cache: per exemplar, how many scores are
strictly above and exactly equal to its score, and the insertion of any score that beats the
query's current N-th best into a per-query min-heap of the top N. In plain torch that is 2E
full passes over the tile (each materializing a boolean tile) plus a topk and a merge.

The kernel is deliberately serial (no ``parallel=True``): it runs between two multi-threaded
GEMMs, and a second thread pool alternating with torch's OpenMP pool made both spin against
each other; splitting rows over Python threads did not help either (benchmarks/
bench_scoring.py, 2-core CPU).
"""

from __future__ import annotations

import numpy as np
from numba import njit


# fastmath only licenses assuming no NaN/inf (inputs are validated finite): the kernel does
# comparisons, never float arithmetic, so results stay exact. numba compiles one version per
# dtype: float32 for features, float64 for float64 dense files (never rounded to float32).
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
    for i in range(rows):
        floor = top_val[i, 0] if n_top else np.inf
        hits = 0  # scores beating the floor, counted during the first exemplar's pass
        for j in range(n_exemplars[i]):
            t = thresholds[i, j]
            a = 0
            q = 0
            if j == 0:
                for k in range(cols):
                    v = scores[i, k]
                    a += v > t
                    q += v == t
                    hits += v > floor
            else:
                for k in range(cols):
                    v = scores[i, k]
                    a += v > t
                    q += v == t
            above[i, j] += a
            ties[i, j] += q
        if n_exemplars[i] == 0:
            for k in range(cols):
                hits += scores[i, k] > floor
        if hits == 0:
            continue
        # Keep the N best scores in a min-heap (root = current N-th best). A score enters
        # only if it beats the root, then costs O(log N); equal scores keep the one seen
        # first. The caller sorts the heap when scoring ends.
        for k in range(cols):
            v = scores[i, k]
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
