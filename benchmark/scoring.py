"""Exact, streamed scoring: per-exemplar rank counts without a queries x gallery matrix.

Each query's gallery is the shared distractors plus its own model's exemplars. The engine
first scores every query against its own exemplars (tiny), then streams the distractors in
chunks; for each (query block, distractor chunk) tile it adds, per exemplar, the number of
distractors scoring strictly above it and exactly equal to it, and keeps a running top-N of
distractors for calibration and reports. Memory is O(features + one tile), never O(Q x G).

Counts over disjoint distractor shards add up (:meth:`RankCounts.merge`), so a gallery too
large for one machine is scored shard by shard and merged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchmark.errors import AttribBenchError

# Tile shape measured on a 2-core CPU (benchmarks/bench_scoring.py): a 4 MiB tile is still in
# cache when the counting kernel re-reads it right after the GEMM wrote it (8 MiB tiles made
# the kernel 3-4x slower), and 1024 x 1024 was the fastest GEMM tiling measured.
QUERY_BLOCK = 1024
DISTRACTOR_CHUNK = 1024
EXEMPLAR_BLOCK = 64  # queries per exemplar-score GEMM (_exemplar_scores)
DEFAULT_TOP_N = 100
# Rows with a norm in this range are normalized directly: their squares stay far from
# float32's overflow and underflow. Others are rescaled by a power of two first (normalize).
_SAFE_NORM = (2.0**-40, 2.0**40)
# The fused numba kernel is used when importable; tests switch it off to check that both
# paths give identical counts.
USE_FUSED = True
# Threads of the fused CPU engine (None: torch.get_num_threads()); 1 gives the serial loop
# (multi-threaded GEMM per tile, then the kernel). See benchmark.scoring_pipeline.
PIPELINE_THREADS: int | None = None


@dataclass
class RankCounts:
    """Per-query exemplar counts plus each query's top-N distractors.

    Arrays are padded to the largest exemplar count E; padding holds -1 (counts) / nan
    (scores). ``top_index`` indexes the distractor list (-1 where fewer than N exist).
    """

    query_ids: list[str]
    exemplar_ids: list[tuple[str, ...]]
    exemplar_scores: np.ndarray  # [Q, E] float64
    above: np.ndarray  # [Q, E] int64, distractors scoring strictly higher
    ties: np.ndarray  # [Q, E] int64, distractors scoring exactly the same
    unresolved: np.ndarray  # [Q, E] int64, distractors a top-K file leaves undetermined
    top_index: np.ndarray  # [Q, N] int64
    top_scores: np.ndarray  # [Q, N] float64 (-inf padding)

    @property
    def exact(self) -> bool:
        return not bool((self.unresolved > 0).any())

    def merge(self, other: RankCounts, index_offset: int) -> RankCounts:
        """Combine counts of the same queries over a disjoint distractor shard.

        ``index_offset`` is the position of ``other``'s first distractor in the full list.
        """
        if other.query_ids != self.query_ids:
            raise ValueError("can only merge counts of the same queries")
        n = self.top_index.shape[1]
        idx = np.concatenate(
            [self.top_index, np.where(other.top_index >= 0, other.top_index + index_offset, -1)], 1
        )
        sc = np.concatenate([self.top_scores, other.top_scores], 1)
        idx, sc = sort_top(idx, sc)
        pad = self.above < 0
        return RankCounts(
            self.query_ids,
            self.exemplar_ids,
            self.exemplar_scores,
            np.where(pad, -1, self.above + other.above),
            np.where(pad, -1, self.ties + other.ties),
            np.where(pad, -1, self.unresolved + other.unresolved),
            idx[:, :n],
            sc[:, :n],
        )


def _fused_kernel():
    """The numba tile kernel, or None where numba is unavailable (torch passes are used)."""
    if not USE_FUSED:
        return None
    try:
        from benchmark._kernels import count_and_insert
    except ImportError:
        return None
    return count_and_insert


class _Accumulator:
    """Running counts and top-N for one set of queries, fed one score tile at a time."""

    def __init__(self, exemplar_scores: torch.Tensor, n_exemplars: torch.Tensor, top_n: int):
        # Thresholds and the top-N keep the scores' own dtype (float32, or float64 for a
        # float64 dense file), so two distinct scores are never rounded into a tie.
        q, e = exemplar_scores.shape
        dtype = exemplar_scores.dtype
        # +inf padding: no score is ever above or equal to it, so padding counts stay 0.
        col = torch.arange(e)[None, :]
        self.thresholds = torch.where(
            col < n_exemplars[:, None],
            exemplar_scores,
            torch.full_like(exemplar_scores, float("inf")),
        ).contiguous()
        self.n_exemplars = n_exemplars.contiguous()
        self.above = torch.zeros(q, e, dtype=torch.int64)
        self.ties = torch.zeros(q, e, dtype=torch.int64)
        self.top_n = top_n
        self.top_scores = torch.full((q, top_n), float("-inf"), dtype=dtype)
        self.top_index = torch.full((q, top_n), -1, dtype=torch.int64)
        self.kernel = _fused_kernel()
        # numpy views sharing memory with the tensors above, for the numba kernel.
        self._np = {
            "thr": self.thresholds.numpy(),
            "n": self.n_exemplars.numpy(),
            "above": self.above.numpy(),
            "ties": self.ties.numpy(),
            "top": self.top_scores.numpy(),
            "top_index": self.top_index.numpy(),
        }
        self._started: set[int] = set()  # query blocks whose top-N heap has been filled

    def update(self, rows: slice, scores: torch.Tensor, col0: int) -> None:
        """Add one tile: ``scores[i, j]`` is query ``rows[i]`` against distractor ``col0 + j``."""
        # One accumulator always takes one path: the kernel keeps its top-N as a heap, the
        # torch path keeps it sorted.
        if scores.dtype != self.thresholds.dtype:
            raise TypeError(f"tile is {scores.dtype}, thresholds {self.thresholds.dtype}")
        if self.kernel is not None:
            self._update_fused(rows, scores.cpu().contiguous(), col0)
        else:
            self._update_torch(rows, scores, col0)

    def _update_fused(self, rows: slice, scores: torch.Tensor, col0: int) -> None:
        np_ = self._np
        top_val, top_idx = np_["top"][rows], np_["top_index"][rows]
        first = self.top_n and rows.start not in self._started
        if first:
            # Filling an empty heap one score at a time is slow; the kernel only counts,
            # then fill_top lays out the tile's N best as a heap.
            self._started.add(rows.start)
            top_val, top_idx = top_val[:, :0], top_idx[:, :0]
        self.kernel(
            scores.numpy(),
            np_["thr"][rows],
            np_["n"][rows],
            np_["above"][rows],
            np_["ties"][rows],
            top_val,
            top_idx,
            col0,
        )
        if first:
            from benchmark._kernels import fill_top

            fill_top(scores.numpy(), np_["top"][rows], np_["top_index"][rows], col0)

    def _update_torch(self, rows: slice, scores: torch.Tensor, col0: int) -> None:
        thr = self.thresholds[rows].to(scores.device)
        for j in range(int(self.n_exemplars[rows].max())):
            t = thr[:, j : j + 1]
            self.above[rows, j] += torch.count_nonzero(scores > t, dim=1).cpu()
            self.ties[rows, j] += torch.count_nonzero(scores == t, dim=1).cpu()
        if self.top_n:
            best, index = merge_top(
                self.top_scores[rows], self.top_index[rows], scores.cpu(), col0, self.top_n
            )
            self.top_scores[rows], self.top_index[rows] = best, index


def best_columns(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's k best columns by score, equal scores by column (lower first), in that order.

    This is the top-N's tie policy on every engine and shard: the N best distractors by
    score, then position. ``torch.topk`` finds the right k-th value but picks freely among
    the scores equal to it; a gallery with duplicate images has such ties, and a sharded run
    then kept other duplicates than the single-process run. Rows where topk left out a score
    equal to its k-th are picked again, first columns first; that costs one more comparison
    over the tile, and the tie-breaking work only for those rows. Rows whose k-th score is
    -inf are left as topk picked them: -inf marks a score the device path masked out below a
    full top-N's floor (``scoring_device``), which never survives the merge. Any device.
    """
    if k == 0:
        empty = scores[:, :0]
        return empty, torch.zeros(empty.shape, dtype=torch.int64, device=scores.device)
    values, columns = torch.topk(scores, k, dim=1)
    kth = values[:, -1:]
    left_out = (scores == kth).sum(1) > (values == kth).sum(1)
    redo = torch.nonzero(left_out & (kth[:, 0] > float("-inf"))).flatten()
    if len(redo):
        sub, bar = scores[redo], kth[redo]
        tied = sub == bar
        room = k - (sub > bar).sum(1, keepdim=True)  # slots left for scores equal to kth
        take = (sub > bar) | (tied & (tied.cumsum(1) <= room))
        columns[redo] = take.nonzero()[:, 1].view(len(redo), k)  # k per row, ascending
        values[redo] = torch.gather(sub, 1, columns[redo])
    # By column, then a stable sort by score: equal scores stay in column order.
    columns, by_column = torch.sort(columns, dim=1)
    values = torch.gather(values, 1, by_column)
    order = torch.sort(values, dim=1, descending=True, stable=True).indices
    return torch.gather(values, 1, order), torch.gather(columns, 1, order)


def merge_top(
    top_scores: torch.Tensor, top_index: torch.Tensor, tile: torch.Tensor, col0: int, n: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """A sorted top-n (best first; empty slots -inf / -1) merged with a tile whose column j is
    distractor ``col0 + j``, later than every kept one: the n best by score, then position."""
    vals, cols = best_columns(tile, min(n, tile.shape[1]))
    vals = torch.cat([top_scores, vals], 1)
    index = torch.cat([top_index, cols + col0], 1)
    # Stable: among equal scores the kept (earlier) distractors stay ahead of the tile's.
    order = torch.sort(vals, dim=1, descending=True, stable=True).indices[:, :n]
    return torch.gather(vals, 1, order), torch.gather(index, 1, order)


class UnitGallery:
    """Distractor features normalized once, up front, then streamed as they are.

    :func:`score_features` otherwise normalizes each streamed chunk on its calling thread,
    where it competes with the scoring threads for a core. A gallery already in memory
    (extracted features) is normalized here instead, block by block with all of torch's
    threads, and the streaming loop does nothing but score. On this project's 2-core CPU, at
    2,000 queries x 200k x 512, scoring takes 1.42 s instead of 1.47-1.50 s, and normalizing
    up front 0.06 s: the same time end to end, but the scorer is measured on the same
    prepared rows as the bare GEMM and faiss (benchmarks/bench_scoring.py prints both).
    :func:`normalize` works row by row, so the rows are the same bits as on the chunked path
    and the results are byte-identical (tests/test_scoring.py).

    Float32 ``features`` are normalized in place (the caller hands the tensor over; a
    1M x 512 gallery is 2 GiB, and a copy would double that); other dtypes into a new
    float32 tensor. An all-zero row raises :class:`AttribBenchError` naming ``ids[row]``.
    """

    BLOCK = 4096  # rows per normalize call: 8 MiB at 512 dims; blocks of 64k rows (128 MiB)
    # took 3x longer, every block a fresh allocation faulting its pages in

    def __init__(self, rows: torch.Tensor):
        """Wrap rows that already are :func:`normalize` output (see :meth:`normalize`)."""
        self.rows = rows

    @classmethod
    def normalize(
        cls,
        features: torch.Tensor,
        ids: Sequence[str] | None = None,
        source: str | Path | None = None,
    ) -> UnitGallery:
        """Normalize ``features`` (float32: in place) block by block and wrap them."""
        in_place = features.dtype == torch.float32 and features.is_contiguous()
        rows = features if in_place else torch.empty(features.shape, dtype=torch.float32)
        with torch.inference_mode():
            for a in range(0, len(features), cls.BLOCK):
                rows[a : a + cls.BLOCK] = normalize(
                    features[a : a + cls.BLOCK],
                    "distractor features",
                    lambda i, a=a: ids[a + i] if ids is not None else None,
                    source,
                )
        return cls(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __call__(self, size: int) -> Iterator[torch.Tensor]:
        """Consecutive views of ``size`` rows, the interface of ``distractor_chunks``."""
        for a in range(0, len(self.rows), size):
            yield self.rows[a : a + size]


def normalized_chunks(
    distractor_chunks: Callable[[int], Iterator[torch.Tensor]] | UnitGallery,
    size: int,
    distractor_name: Callable[[int], str | None] = lambda i: None,
    source: str | Path | None = None,
) -> Iterator[tuple[torch.Tensor, int]]:
    """(unit-row chunk, column of its first distractor); every engine streams through this.

    A :class:`UnitGallery`'s rows are already normalized and pass through; other chunks are
    normalized here, an all-zero row named by ``distractor_name(column)``.
    """
    col0 = 0
    unit = isinstance(distractor_chunks, UnitGallery)
    for chunk in distractor_chunks(size):
        if not unit:
            with torch.inference_mode():
                chunk = normalize(
                    chunk, "distractor features", lambda i, c0=col0: distractor_name(c0 + i),
                    source,
                )  # fmt: skip
        yield chunk, col0
        col0 += len(chunk)


def _padded_exemplars(
    exemplar_index: Sequence[Sequence[int]],
) -> tuple[torch.Tensor, torch.Tensor]:
    n = torch.tensor([len(x) for x in exemplar_index], dtype=torch.int64)
    e_max = int(n.max()) if len(n) else 0
    index = torch.zeros(len(exemplar_index), max(e_max, 1), dtype=torch.int64)
    # A boolean mask assigns in row-major order: row i's first n[i] slots, row after row.
    index[torch.arange(index.shape[1])[None, :] < n[:, None]] = torch.tensor(
        [c for row in exemplar_index for c in row], dtype=torch.int64
    )
    return index, n


def _exemplar_scores(q: torch.Tensor, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``q[i] . x[index[i, j]]`` as [Q, E] float32 on q's device (padding slots: any value).

    The scores come from a GEMM, like the distractors' tiles, so that a distractor identical
    to an exemplar gets the exemplar's score bit for bit and counts as a tie (the BLAS gives
    the same bits for the same pair across these shapes; an elementwise dot product sums in
    another order and does not). Each block of EXEMPLAR_BLOCK queries is multiplied only by
    the exemplars it uses: with distinct exemplars per query, a GEMM against all of them
    costs Q x X, which at 2,000 queries with 4 exemplars each was ~4% of scoring 200k
    distractors (benchmarks/bench_scoring.py). Blocks of 64 queries (256 exemplars at 4 a
    query) took 5.2 ms there against 9.5 ms for blocks of 256; 32 gained nothing more.
    """
    out = torch.zeros(index.shape, dtype=torch.float32, device=q.device)
    for start in range(0, len(q), EXEMPLAR_BLOCK):
        rows = slice(start, start + EXEMPLAR_BLOCK)
        used, local = torch.unique(index[rows], return_inverse=True)
        if len(x):
            out[rows] = torch.gather(q[rows] @ x[used].T, 1, local)
    return out


def _finish(
    acc: _Accumulator,
    order: torch.Tensor,
    query_ids: Sequence[str],
    exemplar_ids: Sequence[tuple[str, ...]],
    exemplar_scores: torch.Tensor,
) -> RankCounts:
    """Undo the processing order and convert to numpy with -1 / nan padding."""
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(len(order))
    n = acc.n_exemplars[inverse]
    pad = torch.arange(acc.above.shape[1])[None, :] >= n[:, None]
    above = acc.above[inverse].masked_fill(pad, -1).numpy()
    ties = acc.ties[inverse].masked_fill(pad, -1).numpy()
    scores = exemplar_scores[inverse].double().masked_fill(pad, float("nan")).numpy()
    top_index, top_scores = sort_top(
        acc.top_index[inverse].numpy(), acc.top_scores[inverse].double().numpy()
    )
    return RankCounts(
        list(query_ids),
        list(exemplar_ids),
        scores,
        above,
        ties,
        np.where(above >= 0, 0, -1).astype(np.int64),
        top_index,
        top_scores,
    )


def sort_top(index: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order each row's top-N by score, best first; equal scores by distractor position."""
    fast = _sort_top_by_key(index, scores)
    if fast is not None:
        return fast
    position = np.where(index < 0, np.iinfo(np.int64).max, index)  # empty slots last
    order = np.lexsort((position, -scores), axis=1)  # the last key is the primary one
    return np.take_along_axis(index, order, 1), np.take_along_axis(scores, order, 1)


_LOW32 = np.uint64(0xFFFF_FFFF)


def _sort_top_by_key(index: np.ndarray, scores: np.ndarray):
    """sort_top for float32 scores (all but float64 dense files) and positions below 2**32:
    one sort of uint64 keys (inverted score order bits above, position below) from which
    both are read back, 2,000 x 100 in ~5 ms against ~14 for the two-key lexsort. None when
    it does not apply (-0.0 also goes to the lexsort, which ties it with +0.0)."""
    with np.errstate(over="ignore"):  # a float64 beyond float32's range: lexsort below
        single = scores.astype(np.float32)
    if (
        index.size == 0
        or index.max() >= _LOW32
        or not np.array_equal(single, scores)
        or ((single == 0) & np.signbit(single)).any()
    ):
        return None
    bits = single.view(np.uint32)
    negative = bits >> np.uint32(31)
    ordered = np.where(negative, ~bits, bits | np.uint32(1 << 31)).astype(np.uint64)
    position = np.where(index < 0, _LOW32, index).astype(np.uint64)  # empty slots last
    key = np.sort(((_LOW32 - ordered) << np.uint64(32)) | position, axis=1)
    ordered = (_LOW32 - (key >> np.uint64(32))).astype(np.uint32)
    bits = np.where(ordered >> np.uint32(31), ordered & np.uint32(0x7FFF_FFFF), ~ordered)
    position = (key & _LOW32).astype(np.int64)
    out_index = np.where(position == _LOW32, -1, position)
    return out_index, bits.view(np.float32).astype(scores.dtype)


def _rescale_pow2(x: torch.Tensor) -> torch.Tensor:
    """Rows times a power of two that brings each row's largest |value| into [0.5, 1).

    Exact (only the exponent changes), in two steps so the factor never overflows.
    """
    peak = torch.maximum(x.amax(dim=1, keepdim=True), -x.amin(dim=1, keepdim=True))
    _, exponent = torch.frexp(peak)
    first = -(exponent // 2)
    return torch.ldexp(torch.ldexp(x, first), -exponent - first)


def normalize(
    x: torch.Tensor,
    what: str = "features",
    ids: Callable[[int], str | None] | None = None,
    source: str | Path | None = None,
) -> torch.Tensor:
    """L2-normalize rows to float32, whatever their magnitude (cosine = dot product after).

    ``x / ||x||`` squares the entries: in float32, rows scaled by 1e30 overflow to inf and
    rows scaled by 1e-30 underflow to 0. Rows whose norm lies outside [2**-40, 2**40] are
    first multiplied by a power of two (exact) that brings their largest entry near 1, then
    normalized like every other row; float64 input stays float64 until the result. Because
    power-of-two scaling commutes exactly with the norm and the division, a row times any
    power of two (2**100 ~ 1e30, 2**-100 ~ 1e-30) gives bit-identical output, and rows of
    ordinary magnitude cost no more than a plain ``x / ||x||``.

    An all-zero row has no direction to rank by, so it is an error (silently scoring it 0
    against everything would hide a broken extractor or file).

    Raises:
        AttribBenchError: an all-zero row, named by ``ids(row)`` (or its number) under ``what``.
    """
    if x.dtype != torch.float64:
        x = x.to(torch.float32)
    norm = torch.linalg.vector_norm(x, dim=1, keepdim=True)
    safe = (norm > _SAFE_NORM[0]) & (norm < _SAFE_NORM[1])
    if not bool(safe.all()):
        rows = torch.nonzero(~safe.flatten()).flatten()
        is_zero = ~(x[rows] != 0).any(dim=1)
        zero, rows = rows[is_zero], rows[~is_zero]
        if len(zero):
            row = int(zero[0])
            name = ids(row) if ids is not None else None
            raise AttribBenchError(
                source,
                what,
                f"row {row if name is None else repr(name)} is all zeros "
                "(a zero vector has no direction to rank by)",
                "return a nonzero feature vector for every image",
            )
        x = x.clone()
        if len(rows):
            x[rows] = _rescale_pow2(x[rows])
        norm = torch.linalg.vector_norm(x, dim=1, keepdim=True)
    return (x / norm).to(torch.float32)


def score_features(
    queries: torch.Tensor,
    exemplars: torch.Tensor,
    exemplar_index: Sequence[Sequence[int]],
    distractor_chunks: Callable[[int], Iterator[torch.Tensor]],
    *,
    query_ids: Sequence[str],
    exemplar_ids: Sequence[tuple[str, ...]],
    top_n: int = DEFAULT_TOP_N,
    progress: Callable[[int], None] | None = None,
    distractor_ids: Sequence[str] | None = None,
    source: str | Path | None = None,
    device: str | torch.device | None = None,
    precision: str = "fp32",
) -> RankCounts:
    """Exact cosine-similarity rank counts of every query's own exemplars.

    Args:
        queries: [Q, D] query features (any float dtype; normalized here).
        exemplars: [X, D] exemplar features.
        exemplar_index: for each query, the rows of ``exemplars`` that are its positives.
        distractor_chunks: ``f(chunk_size)`` yielding consecutive [c, D] distractor blocks,
            normalized here chunk by chunk, or a :class:`UnitGallery` (normalized up front).
        query_ids, exemplar_ids: carried into the result.
        top_n: distractors to keep per query (for calibration and reports).
        progress: called with the number of distractors consumed after each chunk.
        distractor_ids, source: name an all-zero row in messages (else its position).
        device: None (default) scores on the CPU engine (numba kernel, one single-threaded
            GEMM + kernel pipeline per torch thread; torch.set_num_threads is 1 while it
            runs and restored after). A torch device
            ("cuda", "cuda:1", or "cpu" for the same code path on the host) scores tiles and
            keeps counts and top-N on that device (:mod:`benchmark.scoring_device`).
        precision: device path only: "fp32", or "fp16"/"bf16" GEMMs whose near-threshold
            rows are re-scored in float32 (counts stay exact).

    Returns:
        :class:`RankCounts` in the order of ``queries``.

    Raises:
        AttribBenchError: a query, exemplar or distractor row is all zeros.
    """
    def exemplar_name(row: int) -> str | None:  # only asked to name a bad row
        for rows, names in zip(exemplar_index, exemplar_ids, strict=False):
            for r, name in zip(rows, names, strict=False):
                if r == row:
                    return name
        return None

    def query_name(i: int) -> str | None:
        return query_ids[i]

    def distractor_name(i: int) -> str | None:
        return distractor_ids[i] if distractor_ids else None

    q = normalize(queries, "query features", query_name, source)
    x = normalize(exemplars, "exemplar features", exemplar_name, source)
    index, n = _padded_exemplars(exemplar_index)
    # Process queries grouped by exemplar count so a tile only does the passes it needs.
    order = torch.argsort(n, stable=True)
    q, index, n = q[order], index[order], n[order]
    if device is not None:
        from benchmark.scoring_device import score_features_on_device

        return score_features_on_device(
            q, x, index, n, order, distractor_chunks, distractor_name, source,
            device=device, precision=precision, top_n=top_n, progress=progress,
            query_ids=query_ids, exemplar_ids=exemplar_ids,
        )  # fmt: skip
    ex_scores = _exemplar_scores(q, x, index)
    acc = _Accumulator(ex_scores, n, top_n)
    from benchmark import scoring_pipeline

    chunks = normalized_chunks(distractor_chunks, DISTRACTOR_CHUNK, distractor_name, source)
    workers = min(PIPELINE_THREADS or torch.get_num_threads(), len(q))
    if acc.kernel is not None and workers > 1:
        scoring_pipeline.run(q, acc, chunks, workers, QUERY_BLOCK, progress)
        return _finish(acc, order, query_ids, exemplar_ids, ex_scores)
    buffer = torch.empty(0)
    with torch.inference_mode():
        for d, col0 in chunks:
            for start in range(0, len(q), QUERY_BLOCK):
                rows = slice(start, start + QUERY_BLOCK)
                block = q[rows]
                tile = buffer.resize_(len(block), len(d))
                torch.mm(block, d.T, out=tile)
                acc.update(rows, tile, col0)
            if progress:
                progress(len(d))
    return _finish(acc, order, query_ids, exemplar_ids, ex_scores)


def score_dense(
    matrix: np.ndarray,
    n_distractors: int,
    exemplar_columns: Sequence[Sequence[int]],
    *,
    query_ids: Sequence[str],
    exemplar_ids: Sequence[tuple[str, ...]],
    top_n: int = DEFAULT_TOP_N,
    progress: Callable[[int], None] | None = None,
) -> RankCounts:
    """Rank counts from a dense (memory-mapped) score matrix [Q, candidates].

    Columns ``0..n_distractors-1`` are the distractors; ``exemplar_columns`` gives, per
    query, the columns of its own exemplars. Rows are read one block at a time. A float64
    file is compared in float64 (float32 would round scores 1e-12 apart into ties); float16
    and float32 in float32, which holds every float16 value exactly.
    """
    work = np.float64 if matrix.dtype == np.float64 else np.float32
    index, n = _padded_exemplars(exemplar_columns)
    ex_scores = torch.empty(
        index.shape, dtype=torch.float64 if work is np.float64 else torch.float32
    )
    for start in range(0, matrix.shape[0], QUERY_BLOCK):
        block = torch.from_numpy(np.array(matrix[start : start + QUERY_BLOCK], work))
        rows = slice(start, start + QUERY_BLOCK)
        ex_scores[rows] = torch.gather(block, 1, index[rows])
    acc = _Accumulator(ex_scores, n, top_n)
    with torch.inference_mode():
        for start in range(0, matrix.shape[0], QUERY_BLOCK):
            rows = slice(start, start + QUERY_BLOCK)
            for c0 in range(0, n_distractors, DISTRACTOR_CHUNK):
                c1 = min(c0 + DISTRACTOR_CHUNK, n_distractors)
                tile = torch.from_numpy(np.array(matrix[rows, c0:c1], dtype=work))
                acc.update(rows, tile, c0)
            if progress:
                progress(min(QUERY_BLOCK, matrix.shape[0] - start))
    order = torch.arange(matrix.shape[0])
    return _finish(acc, order, query_ids, exemplar_ids, ex_scores)


def score_topk(
    top_index: np.ndarray,
    top_scores: np.ndarray,
    positive_scores: Sequence[np.ndarray],
    n_distractors: int,
    exemplar_columns: Sequence[Sequence[int]],
    *,
    query_ids: Sequence[str],
    exemplar_ids: Sequence[tuple[str, ...]],
    top_n: int = DEFAULT_TOP_N,
) -> RankCounts:
    """Rank counts from per-query top-K lists, with bounds where the list is silent.

    ``top_index`` [Q, K] holds candidate columns (distractors first, then exemplars, as in
    ``candidates.txt``), ``top_scores`` their scores, ``positive_scores[i]`` the scores of
    query i's own exemplars. Entries naming other models' exemplars are dropped (they are not
    in this query's gallery). A distractor missing from the list scores at most the list's
    lowest score t; so an exemplar scoring above t has exact counts, and for one at or below
    t every unlisted distractor is counted as ``unresolved`` (metrics become bounds).
    """
    q_count = top_index.shape[0]
    e_max = max((len(c) for c in exemplar_columns), default=1)
    above = np.full((q_count, e_max), -1, np.int64)
    ties = np.full((q_count, e_max), -1, np.int64)
    unresolved = np.full((q_count, e_max), -1, np.int64)
    scores = np.full((q_count, e_max), np.nan)
    keep_top_i = np.full((q_count, top_n), -1, np.int64)
    keep_top_s = np.full((q_count, top_n), -np.inf)
    for i in range(q_count):
        idx = top_index[i]
        sc = top_scores[i].astype(np.float64)
        floor = sc.min()
        is_d = idx < n_distractors
        d_scores = sc[is_d]
        unlisted = n_distractors - int(is_d.sum())
        pos = np.asarray(positive_scores[i], np.float64)
        e = len(pos)
        scores[i, :e] = pos
        above[i, :e] = (d_scores[None, :] > pos[:, None]).sum(1)
        ties[i, :e] = (d_scores[None, :] == pos[:, None]).sum(1)
        unresolved[i, :e] = np.where(pos > floor, 0, unlisted)
        order = np.argsort(-d_scores, kind="stable")[:top_n]
        keep_top_i[i, : len(order)] = idx[is_d][order]
        keep_top_s[i, : len(order)] = d_scores[order]
    return RankCounts(
        list(query_ids), list(exemplar_ids), scores, above, ties, unresolved, keep_top_i, keep_top_s
    )
