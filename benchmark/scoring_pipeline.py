"""The CPU engine's threads: one single-threaded GEMM + counting-kernel pipeline per core.

Each worker thread owns a contiguous share of the query rows. For every distractor chunk it
computes its own tiles with a one-thread GEMM and counts each tile right away, while the tile
is still in its core's cache, with the GIL-free numba kernel (:mod:`benchmark._kernels`). The
main thread normalizes the chunks (unless the gallery was normalized up front,
:class:`benchmark.scoring.UnitGallery`) and hands each one to every worker through a small
bounded queue, so workers run at their own pace: a worker slowed for a moment (by the main
thread taking its core to normalize, or by another process) catches up from its queue instead
of holding the others at a per-chunk barrier.

Why not one multi-threaded GEMM per tile followed by the kernel: the kernel would then run
on one core while the other idles (or spins in OpenMP), and a numba thread pool alternating
with torch's OpenMP pool made both spin against each other. A per-chunk barrier between the
workers cost about 8% at bench_scoring's default size on this project's 2-core machine
(0.75 -> 0.81 of the bare GEMM, docs/performance.md); the queues removed it.

Workers never write the same rows, so the shared accumulator needs no lock, and the results
are identical to the serial loop's whatever the interleaving (tests/test_scoring.py).
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from benchmark.scoring import _Accumulator

# Normalized chunks a worker may have waiting (each chunk is ~2 MiB at 1024 x 512 float32).
QUEUE_DEPTH = 4
_DONE = None  # sentinel: no more chunks


def run(
    q: torch.Tensor,
    acc: _Accumulator,
    chunks: Iterator[tuple[torch.Tensor, int]],
    workers: int,
    query_block: int,
    progress: Callable[[int], None] | None,
) -> None:
    """Score every (normalized chunk, first column) from ``chunks`` on ``workers`` threads.

    ``chunks`` runs on the calling thread; an error it raises (an all-zero distractor row)
    stops the workers and propagates, as does the first error of any worker.
    """
    share = -(-len(q) // workers)
    groups = [
        [slice(s, min(s + query_block, b)) for s in range(a, b, query_block)]
        for a, b in ((w * share, min(len(q), (w + 1) * share)) for w in range(workers))
        if a < b
    ]
    inboxes: list[queue.Queue] = [queue.Queue(QUEUE_DEPTH) for _ in groups]
    finished = [0] * len(groups)  # chunks each worker has completed
    failed: list[BaseException] = []  # a worker's error: everyone stops scoring
    stop = False  # set when the producer fails: workers drain their queue without scoring

    def work(g: int) -> None:
        # OpenMP's thread count is per thread: a thread the main thread's
        # torch.set_num_threads(1) did not run in starts with the default, and MKL may then
        # run a "single-threaded" GEMM on a team of its own. Two bare threads doing
        # 1000 x 512 x 1024 GEMMs side by side took 7.6 ms each without this line, 6.6 ms
        # with it; inside this pipeline the difference was smaller (GEMM time per worker at
        # bench_scoring's default size 1.31 -> 1.28 s, six runs each).
        torch.set_num_threads(1)
        buffer = torch.empty(0)
        with torch.inference_mode():
            while (item := inboxes[g].get()) is not _DONE:
                if stop or failed:
                    continue  # keep draining, so the producer never blocks on a full queue
                d, col0 = item
                try:
                    for rows in groups[g]:
                        tile = buffer.resize_(rows.stop - rows.start, len(d))
                        torch.mm(q[rows], d.T, out=tile)
                        acc.update(rows, tile, col0)
                except BaseException as exc:  # re-raised by the main thread below
                    failed.append(exc)
                finished[g] += 1

    sizes: list[int] = []  # chunk sizes in order, for progress
    reported = 0

    def report() -> None:
        nonlocal reported
        done = min(finished)
        if progress:
            for size in sizes[reported:done]:
                progress(size)
        reported = max(reported, done)

    saved = torch.get_num_threads()
    torch.set_num_threads(1)  # per-call GEMMs single-threaded; the workers are the threads
    try:
        with ThreadPoolExecutor(len(groups), thread_name_prefix="scoring") as pool:
            futures = [pool.submit(work, g) for g in range(len(groups))]
            try:
                for d, col0 in chunks:
                    if failed:
                        break
                    sizes.append(len(d))
                    for inbox in inboxes:
                        inbox.put((d, col0))
                    report()
            except BaseException:
                stop = True
                raise
            finally:
                for inbox in inboxes:
                    inbox.put(_DONE)
            for f in futures:
                f.result()
            if failed:
                raise failed[0]
            report()
    finally:
        torch.set_num_threads(saved)

