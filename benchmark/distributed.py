"""``torchrun --nproc-per-node N -m benchmark evaluate ...``: one evaluation over N ranks.

When ``WORLD_SIZE`` > 1 (torchrun, or SLURM ``srun`` with ``MASTER_ADDR``/``MASTER_PORT`` set),
ranks split the work and rank 0 writes the same result a single process writes:

1. extraction (extractor submissions, feature cache on): the image blocks of the queries,
   exemplars and distractors are dealt round-robin to the ranks; each rank fills the shared
   feature cache (``ATTRIB_BENCH_CACHE`` on a shared filesystem) with its own blocks, whole,
   so every feature is computed once, in the same batches as a one-process run;
2. scoring: rank r scores distractor shard r of N (``benchmark.shards.Shard``), reading its
   features from the cache;
3. the counts are all-reduced (sum) and the top-N lists all-gathered and merged by score,
   then distractor index (``scoring.sort_top``), exactly as ``benchmark.shards.merge`` does.

Collectives run over gloo on CPU tensors: the payload is counts (Q x E) and top-N (Q x N),
small next to the features, and it keeps the harness free of device-specific code paths.
All communication is between harness processes; a submitted extractor still runs in its
sandboxed child (benchmark.sandbox) with no network. A rank that fails tells the others
through the same collectives, so every rank stops with one line instead of hanging.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from benchmark import features as feat
from benchmark import scoring
from benchmark.errors import AttribBenchError
from benchmark.evaluation import EvalConfig, RunOptions, rank_counts, result_from_counts
from benchmark.sandbox import extract_isolated
from benchmark.shards import Shard, check_shardable, load_inputs
from benchmark.splits import Benchmark
from benchmark.submission import Submission, is_builtin, load_extractor

T = TypeVar("T")
BLOCK = 256  # Benchmark.iter_image_blocks' default block size


def world() -> tuple[int, int]:
    """(rank, world size) from torchrun's variables, else SLURM's, else (0, 1)."""
    env = os.environ
    if "WORLD_SIZE" in env:
        return int(env.get("RANK", "0")), int(env["WORLD_SIZE"])
    if "SLURM_NTASKS" in env and "SLURM_PROCID" in env and "MASTER_ADDR" in env:
        return int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"])
    return 0, 1


def is_distributed() -> bool:
    return world()[1] > 1


def _init() -> tuple[int, int]:
    rank, size = world()
    if not dist.is_initialized():
        for var in ("MASTER_ADDR", "MASTER_PORT"):
            if var not in os.environ:
                raise AttribBenchError(
                    None, var, "not set for a multi-process run", "launch with torchrun"
                )
        dist.init_process_group("gloo", rank=rank, world_size=size)
    return dist.get_rank(), dist.get_world_size()


def _agree(fn: Callable[[], T]) -> T:
    """Run ``fn`` on every rank; if any rank fails, every rank raises (the failing one its own
    error, the others a one-line pointer), so no rank waits forever in a later collective."""
    error: BaseException | None = None
    value = None
    try:
        value = fn()
    except Exception as exc:  # re-raised below, after the others have been told
        error = exc
    flag = torch.tensor([1 if error is not None else 0], dtype=torch.int64)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    if error is not None:
        raise error
    if int(flag):
        raise AttribBenchError(
            None, "distributed", "another rank failed", "see the first rank's error above"
        )
    return value  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# extraction: deal image blocks to ranks


def block_ids(bench: Benchmark, table: str, wanted: set[str] | None) -> list[tuple[str, ...]]:
    """The wanted ids of each image block ``bench.iter_image_blocks(table, wanted)`` yields,
    in order, reading ids only (no image bytes)."""
    files = getattr(bench, "files", None)
    if files is not None and table in files:  # FolderBenchmark: 256-row runs of its order
        order = list(files[table])
        runs = [order[a : a + BLOCK] for a in range(0, len(order), BLOCK)]
    else:
        import pyarrow.parquet as pq

        id_col = "query_id" if table == "queries" else "image_id"
        runs = []
        for path in bench.shard_paths(table):
            for batch in pq.ParquetFile(path).iter_batches(batch_size=BLOCK, columns=[id_col]):
                runs.append(batch.column(0).to_pylist())
    out = []
    for ids in runs:
        kept = tuple(x for x in ids if wanted is None or x in wanted)
        if kept:
            out.append(kept)
    return out


def owned_tables(bench: Benchmark, rank: int, size: int) -> list[tuple[str, set[str], str]]:
    """(table, ids, role) of the blocks rank ``rank`` extracts: block j of all tables goes to
    rank j mod ``size``, with the same wanted rows as a one-process run (same cache keys)."""
    qids = {q.query_id for q in bench.evaluated_queries}
    tables = [
        ("queries", qids, "query"),
        ("exemplars", set(bench.evaluated_exemplar_ids), "gallery"),
        ("distractors", None, "gallery"),
    ]
    out, j = [], 0
    for table, wanted, role in tables:
        mine: set[str] = set()
        for ids in block_ids(bench, table, wanted):
            if j % size == rank:
                mine.update(ids)
            j += 1
        if mine:
            out.append((table, mine, role))
    return out


def fill_cache(sub: Submission, bench: Benchmark, options: RunOptions, rank: int, size: int):
    """Extract this rank's blocks into the shared feature cache (results are read back from
    the cache by the scoring step). Mirrors ``evaluation.extract_features``' two paths."""
    if getattr(sub, "extractor", None) is not None:
        return  # a caller's in-memory object (UserExtractor): each rank extracts its own rows
    tables = owned_tables(bench, rank, size)
    if not tables:
        return
    device = feat.pick_device(options.device)
    batch = options.batch_size or sub.config["extractor"].get("batch_size")
    module = sub.config["extractor"]["entry"].partition(":")[0]
    source = str(sub.root / module) if module.endswith(".py") else module
    if not is_builtin(sub):
        cache = feat.FeatureCache(feat.submission_cache_key(sub.sha256))
        extract_isolated(
            sub,
            bench,
            tables,
            cache=cache,
            device=device,
            batch_size=batch,
            options=options.sandbox,
            source=source,
        )
        return
    extractor = load_extractor(sub)
    if hasattr(extractor, "to"):
        extractor = extractor.to(device) or extractor
    project = getattr(extractor, "project", None)
    runner = (getattr(extractor, "backbone", None) if project else None) or extractor
    cache = feat.FeatureCache(feat.cache_key(runner, sub.sha256))
    run = feat._Runner(runner, None, device, 0, source)
    for table, wanted, role in tables:
        feat.extract_table(
            runner,
            bench,
            table,
            wanted,
            role=role,
            cache=cache,
            device=device,
            batch_size=batch,
            source=source,
            runner=run,
        )


# --------------------------------------------------------------------------------------------
# scoring and the reduction


def reduce_counts(counts: scoring.RankCounts, offset: int, top_n: int) -> scoring.RankCounts:
    """Sum the counts of every rank's shard and merge their top-N (on every rank)."""
    pad = counts.above < 0
    summed = []
    for arr in (counts.above, counts.ties, counts.unresolved):
        t = torch.from_numpy(np.where(pad, 0, arr).astype(np.int64))
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        summed.append(np.where(pad, -1, t.numpy()))
    size = dist.get_world_size()
    index = torch.from_numpy(np.where(counts.top_index >= 0, counts.top_index + offset, -1))
    scores = torch.from_numpy(np.ascontiguousarray(counts.top_scores, np.float64))
    all_index = [torch.empty_like(index) for _ in range(size)]
    all_scores = [torch.empty_like(scores) for _ in range(size)]
    dist.all_gather(all_index, index.contiguous())
    dist.all_gather(all_scores, scores.contiguous())
    idx, sc = scoring.sort_top(torch.cat(all_index, 1).numpy(), torch.cat(all_scores, 1).numpy())
    return scoring.RankCounts(
        counts.query_ids,
        counts.exemplar_ids,
        counts.exemplar_scores,
        *summed,
        idx[:, :top_n],
        sc[:, :top_n],
    )


def evaluate_distributed(
    submission: str | Path | Submission,
    benchmark: str | Path | Benchmark | None = None,
    config: EvalConfig | None = None,
    options: RunOptions | None = None,
) -> dict[str, Any] | None:
    """The result on rank 0 (None on the others); the same bytes as ``evaluate`` apart from
    ``created`` and ``timings``."""
    from benchmark.evaluation import evaluate

    config = config or EvalConfig()
    options = options or RunOptions()
    rank, size = _init()
    t0 = time.perf_counter()
    if options.device is None and torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", os.environ.get("SLURM_LOCALID", "0")))
        options = RunOptions(**{**options.__dict__, "device": f"cuda:{local}"})
    if rank != 0:
        options = RunOptions(**{**options.__dict__, "progress": False})
    sub, bench = _agree(lambda: load_inputs(submission, benchmark))
    if sub.kind == "similarity" or size > len(bench.distractor_ids):
        # A score file is read in one pass: rank 0 alone scores it.
        return _agree(lambda: evaluate(sub, bench, config, options) if rank == 0 else None)
    _agree(lambda: check_shardable(sub, bench, size, "WORLD_SIZE"))
    timings: dict[str, float] = {}
    if sub.kind == "extractor" and options.cache:
        t = time.perf_counter()
        _agree(lambda: fill_cache(sub, bench, options, rank, size))
        timings["features_s"] = time.perf_counter() - t
    start, stop = Shard(rank, size).range(len(bench.distractor_ids))
    stored: dict[str, Any] = {}
    t1 = time.perf_counter()
    counts, device = _agree(
        lambda: rank_counts(sub, bench, config, options, {}, stored, (start, stop))
    )
    counts = reduce_counts(counts, start, config.top_n)
    timings["scoring_s"] = time.perf_counter() - t1
    return _agree(
        lambda: (
            result_from_counts(sub, bench, config, counts, device, timings, stored, t0)
            if rank == 0
            else None
        )
    )


def finish() -> None:
    """Tear down the process group (idempotent)."""
    if dist.is_initialized():
        dist.destroy_process_group()
