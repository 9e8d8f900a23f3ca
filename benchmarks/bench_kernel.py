"""Time the CPU scorer's tile kernel alone, on one thread, as one pipeline worker runs it.

``bench_scoring.py`` times the whole scorer against the bare GEMM; this script isolates what
the scorer adds to the GEMM, so a change to ``benchmark/_kernels.py`` can be judged in
milliseconds instead of through a ratio that moves by a few percent. It builds the same
seeded features as ``bench_scoring.py`` (exemplar cosine to its query uniform in [0, 0.25]),
computes each 1,024 x 1,024 score tile of one worker's queries with a one-thread GEMM just
before the kernel reads it (so the tile is in cache, as in the scorer's pipeline; the GEMM is
not timed), and times, per exemplar set:

* ``counts + top-N``: ``count_and_insert`` on every tile, with ``fill_top`` after the first,
  exactly the calls ``scoring._Accumulator`` makes;
* ``counts only``: the same tiles with no top-N (what the exemplar counts cost by
  themselves).

Each cell is the best of ``--repeats`` runs, interleaved. Both runs of a set must give the
same counts, and a few rows are checked against a float64-free numpy count on the same
tiles; anything else fails. The scorer runs one copy of the kernel per core, each after its
own single-threaded GEMM, so on a 2-core CPU the kernel's seconds here are roughly the
seconds the default ``bench_scoring.py`` run spends above the bare GEMM.

Example::

    python benchmarks/bench_kernel.py               # 1,000 x 200k x 512, 1 and 4 exemplars
    python benchmarks/bench_kernel.py --candidates 50000 --repeats 5
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench_scoring

from benchmark import _kernels, scoring


class Tiles:
    """The queries' score tiles, one distractor chunk at a time, into one reused buffer."""

    def __init__(self, f: bench_scoring.Features):
        self.queries = f.queries
        self.distractors = f.distractors
        self.buffer = torch.empty(len(f.queries), scoring.DISTRACTOR_CHUNK)

    def __call__(self, limit: int | None = None):
        with torch.inference_mode():
            for col0 in range(0, len(self.distractors), scoring.DISTRACTOR_CHUNK)[:limit]:
                d = self.distractors[col0 : col0 + scoring.DISTRACTOR_CHUNK]
                out = self.buffer[:, : len(d)]
                if len(d) < scoring.DISTRACTOR_CHUNK:
                    out = torch.empty(len(self.queries), len(d))
                torch.mm(self.queries, d.T, out=out)
                yield col0, out.numpy()


def thresholds(f: bench_scoring.Features) -> tuple[np.ndarray, np.ndarray]:
    """[Q, E] exemplar scores (+inf padding) and [Q] exemplar counts, as the scorer pads them."""
    index, n = scoring._padded_exemplars(f.exemplar_index)
    scores = scoring._exemplar_scores(f.queries, f.exemplars, index)
    pad = torch.arange(index.shape[1])[None, :] >= n[:, None]
    return scores.masked_fill(pad, float("inf")).contiguous().numpy(), n.numpy()


def run_kernel(tiles: Tiles, thr: np.ndarray, n: np.ndarray, top_n: int, limit=None):
    """One worker's kernel calls over all tiles; returns the kernel's seconds and counts."""
    q, e = thr.shape
    above = np.zeros((q, e), np.int64)
    ties = np.zeros((q, e), np.int64)
    top_val = np.full((q, top_n), -np.inf, np.float32)
    top_idx = np.full((q, top_n), -1, np.int64)
    seconds = 0.0
    for k, (col0, s) in enumerate(tiles(limit)):
        first = k == 0
        tv, ti = (top_val[:, :0], top_idx[:, :0]) if first else (top_val, top_idx)
        t0 = time.perf_counter()
        _kernels.count_and_insert(s, thr, n, above, ties, tv, ti, col0)
        if first and top_n:
            _kernels.fill_top(s, top_val, top_idx, col0)
        seconds += time.perf_counter() - t0
    return seconds, above, ties


def check_rows(tiles: Tiles, thr, n, above, ties, rows: int = 4) -> None:
    """Counts of the first rows against numpy over the same GEMM's full rows."""
    full = np.concatenate([s[:rows].copy() for _, s in tiles()], axis=1)
    for i in range(min(rows, len(thr))):
        row = full[i]
        for j in range(n[i]):
            want = (int((row > thr[i, j]).sum()), int((row == thr[i, j]).sum()))
            if (above[i, j], ties[i, j]) != want:
                raise AssertionError(f"row {i} exemplar {j}: {(above[i, j], ties[i, j])} vs {want}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--queries", type=int, default=1000, help="one worker's queries")
    p.add_argument("--candidates", type=int, default=200_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--exemplars", default="1/4", help="sets timed side by side, as bench_scoring")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    sets = [[int(x) for x in part.split(",")] for part in args.exemplars.split("/")]
    base = bench_scoring.make_features(args.queries, args.candidates, args.dim, sets[0], args.seed)
    tiles = Tiles(base)
    inputs = {}
    for counts in sets:
        f = bench_scoring.with_exemplars(base.queries, base.distractors, counts, args.seed)
        inputs[",".join(map(str, counts))] = thresholds(f)
    for thr, n in inputs.values():  # compile and warm up
        run_kernel(tiles, thr, n, scoring.DEFAULT_TOP_N, limit=4)
        run_kernel(tiles, thr, n, 0, limit=4)
    best: dict[tuple[str, str], float] = {}
    for _ in range(args.repeats):
        for name, (thr, n) in inputs.items():
            got = {}
            for mode, top_n in (("counts + top-N", scoring.DEFAULT_TOP_N), ("counts only", 0)):
                sec, above, ties = run_kernel(tiles, thr, n, top_n)
                best[name, mode] = min(best.get((name, mode), float("inf")), sec)
                got[mode] = (above, ties)
            (a1, t1), (a2, t2) = got.values()
            if not (np.array_equal(a1, a2) and np.array_equal(t1, t2)):
                raise AssertionError(f"exemplars {name}: counts differ with and without top-N")
            check_rows(tiles, thr, n, a1, t1)
    size = f"{args.queries} x {args.candidates}"
    print(f"kernel milliseconds, one thread, {size} (best of {args.repeats}):")
    print("| exemplars per query | counts + top-N | counts only |")
    print("|---|---|---|")
    for name in inputs:
        with_top, counts = (1e3 * best[name, mode] for mode in ("counts + top-N", "counts only"))
        print(f"| {name} | {with_top:.3f} | {counts:.3f} |")


if __name__ == "__main__":
    main()
