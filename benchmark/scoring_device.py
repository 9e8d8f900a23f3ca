"""Device (torch) scoring path: tiles, counts and top-N kept on one torch device.

``score_features(..., device="cuda")`` routes here. Every step is plain torch, so the same
code runs with ``device="cpu"``; the tests use that to prove the path gives the default
engine's counts on any machine, and the CUDA tests (marked ``gpu``) repeat it on a GPU.

Features are normalized on the CPU by :func:`benchmark.scoring.normalize` (the same bits and
the same error messages as the default engine), then copied to the device once per chunk.
For each (query block, distractor chunk) tile the path adds, per exemplar, the scores
strictly above and exactly equal to the exemplar's score, and merges the tile's best scores
into a running top-N; all of it stays on the device until the end.

Precision: ``"fp32"`` (default) scores in float32 with TF32 switched off, so a score is a
true float32 dot product. ``"fp16"``/``"bf16"`` run the GEMM in half precision and then
re-score in float32 every query row of the tile that holds a half-precision score within
``MARGIN[precision]`` of one of the row's exemplar scores or of its running top-N floor; every
comparison that decides a count or a top-N entry is thus made on a float32 score, and the
counts stay exact. Rows far from every threshold (most rows, once the top-N floor has risen)
keep the cheap scores, which cannot change any count or enter the top-N.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from benchmark.errors import AttribBenchError

if TYPE_CHECKING:
    from benchmark.scoring import RankCounts

# Tile shape for the device: large tiles keep a GPU busy (a 4096 x 32768 float32 tile is
# 512 MiB); tests shrink them to exercise partial tiles.
DEVICE_QUERY_BLOCK = 4096
DEVICE_CHUNK = 32768
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# Bound on |half-precision score - float32 score| for unit vectors, with a safety factor:
# rounding both inputs (relative 2**-11 for fp16, 2**-8 for bf16) moves a dot product of unit
# vectors by at most ~2 * 2**-p, and rounding the output by 2**-p more; float32 accumulation
# error is ~1e-5 at D = 4096. MARGIN is about 2.5x that sum.
MARGIN = {"fp16": 4e-3, "bf16": 3e-2}
# Top-N candidates re-scored one by one are gathered this many pairs at a time (2 x 65536 x D
# float32: 256 MiB at D = 512).
PAIR_BLOCK = 65536


@dataclass
class DeviceStats:
    """What the last device run did (for benchmarks and tests): tiles and re-scored rows."""

    tiles: int = 0
    rows: int = 0
    rescored_rows: int = 0  # rows re-scored in float32 by a GEMM (half precision only)
    rescored_pairs: int = 0  # top-N candidates re-scored one by one (half precision only)


LAST_STATS = DeviceStats()


@contextlib.contextmanager
def _no_tf32(device: torch.device) -> Iterator[None]:
    """Matmul settings the error bounds assume, restored after: float32 GEMMs in full float32
    (TF32 would round inputs to 10 bits), half-precision GEMMs without reduced-precision
    (half) split-K reductions."""
    if device.type != "cuda":
        yield
        return
    m = torch.backends.cuda.matmul
    names = (
        "allow_tf32",
        "allow_fp16_reduced_precision_reduction",
        "allow_bf16_reduced_precision_reduction",
    )
    saved = {name: getattr(m, name) for name in names if hasattr(m, name)}
    for name in saved:
        setattr(m, name, False)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(m, name, value)


class DeviceAccumulator:
    """Counts and top-N of ``Q`` queries on ``device``, fed one float32 tile at a time."""

    def __init__(self, thresholds: torch.Tensor, n_exemplars: torch.Tensor, top_n: int):
        # thresholds [Q, E] on the device, +inf in padding (never above or equal to a score).
        q, e = thresholds.shape
        device = thresholds.device
        self.thresholds = thresholds
        self.n_exemplars = n_exemplars.to(device)
        self.above = torch.zeros(q, e, dtype=torch.int64, device=device)
        self.ties = torch.zeros(q, e, dtype=torch.int64, device=device)
        self.top_n = top_n
        self.top_scores = torch.full((q, top_n), float("-inf"), device=device)
        self.top_index = torch.full((q, top_n), -1, dtype=torch.int64, device=device)
        self.e_max = [int(x) for x in n_exemplars.tolist()]  # per row, on the host

    def floor(self, rows: slice) -> torch.Tensor:
        """[R, 1] each row's current N-th best score (-inf while fewer than N are known)."""
        if not self.top_n:
            return torch.full((rows.stop - rows.start, 1), float("inf"), device=self.above.device)
        return self.top_scores[rows, -1:]

    def count(self, rows: slice, tile: torch.Tensor) -> None:
        """Add ``tile[i, j]`` = query ``rows.start + i`` against distractor j to the counts."""
        thr = self.thresholds[rows]
        for j in range(max(self.e_max[rows], default=0)):
            t = thr[:, j : j + 1]
            self.above[rows, j] += (tile > t).sum(1)
            self.ties[rows, j] += (tile == t).sum(1)

    def merge_top(self, rows: slice, tile: torch.Tensor, col0: int) -> None:
        """Merge the tile's best scores (column j is distractor ``col0 + j``) into the top-N."""
        if self.top_n:
            from benchmark.scoring import merge_top  # scoring imports this module lazily

            best, index = merge_top(
                self.top_scores[rows], self.top_index[rows], tile, col0, self.top_n
            )
            self.top_scores[rows], self.top_index[rows] = best, index


def _near_rows(tile: torch.Tensor, thresholds: torch.Tensor, margin: float) -> torch.Tensor:
    """[R] bool: rows holding a score within ``margin`` of one of the row's thresholds."""
    near = torch.zeros(tile.shape[0], dtype=torch.bool, device=tile.device)
    for j in range(thresholds.shape[1]):
        t = thresholds[:, j : j + 1]
        near |= ((tile - t).abs() <= margin).any(1)
    return near


def _rescore_rows(
    tile: torch.Tensor,
    q: torch.Tensor,
    d: torch.Tensor,
    acc: DeviceAccumulator,
    rows: slice,
    margin: float,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Re-score in float32 the rows of a half-precision tile whose counts depend on it.

    Those are the rows with a score within ``margin`` of one of their exemplar scores, plus
    rows with many top-N candidates (scores at or above floor - margin; every row while the
    top-N is filling), whose candidates are cheaper to re-score as a GEMM than one by one.
    Returns the re-scored row positions and the [R, C] candidate mask (None without top-N).
    """
    cand = tile >= acc.floor(rows) - margin if acc.top_n else None
    near = _near_rows(tile, acc.thresholds[rows], margin)
    if cand is not None:
        near |= cand.sum(1) > max(16, tile.shape[1] // 1024)
    redo = torch.nonzero(near).flatten()
    if len(redo):
        tile[redo] = q[redo] @ d.T
    return redo, cand


def _exact_candidates(
    tile: torch.Tensor, q: torch.Tensor, d: torch.Tensor, redo: torch.Tensor, cand: torch.Tensor
) -> int:
    """Make a counted tile ready for the top-N merge; returns the pairs re-scored one by one.

    Outside the re-scored rows, a candidate (at or above floor - margin) gets its float32 dot
    product, and every other score becomes -inf: it is below the floor, so it could never
    enter the top-N anyway.
    """
    cand[redo] = True
    tile.masked_fill_(~cand, float("-inf"))
    cand[redo] = False
    r, c = torch.nonzero(cand, as_tuple=True)
    for a in range(0, len(r), PAIR_BLOCK):  # bounded memory: PAIR_BLOCK x D gathered rows
        rr, cc = r[a : a + PAIR_BLOCK], c[a : a + PAIR_BLOCK]
        tile[rr, cc] = (q[rr] * d[cc]).sum(1)
    return len(r)


def score_on_device(
    q: torch.Tensor,
    x: torch.Tensor,
    index: torch.Tensor,
    n: torch.Tensor,
    normalized_chunks: Callable[[int], Iterator[torch.Tensor]],
    *,
    device: torch.device,
    precision: str,
    top_n: int,
    progress: Callable[[int], None] | None,
) -> tuple[torch.Tensor, ...]:
    """Counts and top-N of normalized float32 queries ``q`` (CPU) against streamed chunks.

    ``x`` [X, D] are the normalized exemplars, ``index`` [Q, E] each query's exemplar rows
    (padded), ``n`` [Q] how many of each row are real. Exemplar scores are float32 GEMM
    scores on the device, like the distractor scores they are compared with. Returns CPU
    tensors (exemplar scores, above, ties, top_index, top_scores).
    """
    low = PRECISIONS[precision]
    margin = MARGIN.get(precision, 0.0)
    q_dev, x_dev, index_dev = q.to(device), x.to(device), index.to(device)
    from benchmark.scoring import _exemplar_scores  # scoring imports this module lazily

    with torch.inference_mode(), _no_tf32(device):
        ex_scores = _exemplar_scores(q_dev, x_dev, index_dev)
    col = torch.arange(index.shape[1], device=device)[None, :]
    n_dev = n.to(device)
    thresholds = torch.where(col < n_dev[:, None], ex_scores, float("inf"))
    acc = DeviceAccumulator(thresholds, n, top_n)
    q_low = q_dev.to(low) if low != torch.float32 else q_dev
    stats = DeviceStats()
    col0 = 0
    with torch.inference_mode(), _no_tf32(device):
        for chunk in normalized_chunks(DEVICE_CHUNK):
            d = chunk.to(device, non_blocking=True)
            d_low = d.to(low) if low != torch.float32 else d
            for start in range(0, len(q_dev), DEVICE_QUERY_BLOCK):
                rows = slice(start, min(start + DEVICE_QUERY_BLOCK, len(q_dev)))
                tile = q_low[rows] @ d_low.T
                if low == torch.float32:
                    acc.count(rows, tile)
                    acc.merge_top(rows, tile, col0)
                else:
                    tile = tile.float()
                    redo, cand = _rescore_rows(tile, q_dev[rows], d, acc, rows, margin)
                    acc.count(rows, tile)  # exact: see _rescore_rows
                    stats.rescored_rows += len(redo)
                    if cand is not None:
                        stats.rescored_pairs += _exact_candidates(tile, q_dev[rows], d, redo, cand)
                        acc.merge_top(rows, tile, col0)
                stats.tiles += 1
                stats.rows += rows.stop - rows.start
            col0 += len(d)
            if progress:
                progress(len(d))
    LAST_STATS.__dict__.update(stats.__dict__)
    return (
        ex_scores.cpu(),
        acc.above.cpu(),
        acc.ties.cpu(),
        acc.top_index.cpu(),
        acc.top_scores.cpu(),
    )


def score_features_on_device(
    q: torch.Tensor,
    x: torch.Tensor,
    index: torch.Tensor,
    n: torch.Tensor,
    order: torch.Tensor,
    distractor_chunks: Callable[[int], Iterator[torch.Tensor]],
    distractor_name: Callable[[int], str | None],
    source: str | Path | None,
    *,
    device: str | torch.device,
    precision: str,
    top_n: int,
    progress: Callable[[int], None] | None,
    query_ids: Sequence[str],
    exemplar_ids: Sequence[tuple[str, ...]],
) -> RankCounts:
    """The rest of :func:`benchmark.scoring.score_features` when it is given a device.

    ``q``/``x`` are normalized, ``q``/``index``/``n`` in processing ``order``.
    """
    from benchmark.scoring import _finish, normalized_chunks  # scoring imports this lazily

    if precision not in PRECISIONS:
        raise AttribBenchError(
            source, "precision", f"unknown precision {precision!r}", "use fp32, fp16 or bf16"
        )
    try:
        dev = torch.device(device)
        torch.empty(0, device=dev)
    except (RuntimeError, AssertionError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AttribBenchError(
            source, "device", f"device {str(device)!r} is not usable: {first}",
            "pass a device this machine has (cpu, cuda, cuda:N) or leave it unset",
        ) from None  # fmt: skip

    def normalized(size: int) -> Iterator[torch.Tensor]:
        for chunk, _ in normalized_chunks(distractor_chunks, size, distractor_name, source):
            yield chunk

    ex_scores, above, ties, top_index, top_scores = score_on_device(
        q, x, index, n, normalized, device=dev, precision=precision, top_n=top_n, progress=progress
    )
    done = _Totals(n, above, ties, top_index, top_scores)
    return _finish(done, order, query_ids, exemplar_ids, ex_scores)  # type: ignore[arg-type]


@dataclass
class _Totals:
    """Finished counts in processing order (the fields :func:`_finish` reads)."""

    n_exemplars: torch.Tensor
    above: torch.Tensor
    ties: torch.Tensor
    top_index: torch.Tensor
    top_scores: torch.Tensor
