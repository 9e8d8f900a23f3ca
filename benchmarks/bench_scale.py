"""Scaling-out numbers for docs/scaling.md: exact scoring throughput of one process, the cost
of merging shards, and approximate mode (faiss IVF / HNSW) speed and measured recall loss.

Seeded clustered float32 features (Q queries, C distractors, dimension D, 1-4 exemplars per
query drawn near their query's cluster). Prints:

* exact: query x distractor pairs scored per second (``scoring.score_features``, top-100),
  and the peak resident memory of this process;
* shards: the same data as S shards (``shards.Shard``) scored one after another, merged with
  ``RankCounts.merge``; the merge's own time, and that merged counts equal the one-shot ones;
* approximate: candidate search + exact re-scoring (``approximate.score_approximate``),
  seconds, speed-up over exact, and the recall loss it reports on its sample.

Timings are wall-clock on whatever machine runs this; on a shared, loaded machine treat them
as lower bounds.

    .venv/bin/python benchmarks/bench_scale.py [--queries 1000 --distractors 100000 --dim 256]
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch

from benchmark import scoring
from benchmark.approximate import ApproxOptions, score_approximate
from benchmark.shards import Shard


def data(q: int, c: int, dim: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(200, dim, generator=g)
    pts = centers[torch.randint(0, 200, (c + 5 * q,), generator=g)]
    pts = pts + 0.7 * torch.randn(pts.shape, generator=g)
    distractors, exemplars, queries = pts[:c], pts[c : c + 4 * q], pts[c + 4 * q :]
    n_ex = torch.randint(1, 5, (q,), generator=g).tolist()
    index = [[4 * i + j for j in range(k)] for i, k in enumerate(n_ex)]
    kw = {
        "query_ids": [f"q{i}" for i in range(q)],
        "exemplar_ids": [tuple(f"x{j}" for j in r) for r in index],
        "top_n": 100,
    }
    return queries, exemplars, index, distractors, kw


def chunks_of(x: torch.Tensor):
    return lambda size: (x[a : a + size] for a in range(0, len(x), size))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--distractors", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--shards", type=int, default=4)
    args = ap.parse_args()
    q, x, index, d, kw = data(args.queries, args.distractors, args.dim)
    print(f"Q={len(q)} C={len(d)} D={args.dim} torch threads={torch.get_num_threads()}")

    t = time.perf_counter()
    exact = scoring.score_features(q, x, index, chunks_of(d), **kw)
    exact_s = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(
        f"exact: {exact_s:.2f} s, {len(q) * len(d) / exact_s / 1e6:.1f} M pairs/s, "
        f"peak RSS {rss:.2f} GiB"
    )

    parts, t_score = [], time.perf_counter()
    for i in range(args.shards):
        a, b = Shard(i, args.shards).range(len(d))
        parts.append((a, scoring.score_features(q, x, index, chunks_of(d[a:b]), **kw)))
    t_score = time.perf_counter() - t_score
    t = time.perf_counter()
    merged = parts[0][1]
    merged.top_index = np.where(merged.top_index >= 0, merged.top_index + parts[0][0], -1)
    for a, part in parts[1:]:
        merged = merged.merge(part, a)
    merge_s = time.perf_counter() - t
    same = all(
        np.array_equal(getattr(merged, k), getattr(exact, k))
        for k in ("above", "ties", "top_index", "top_scores")
    )
    print(
        f"shards: {args.shards} shards scored in {t_score:.2f} s, merged in {merge_s:.3f} s, "
        f"merged == one-shot: {same}"
    )

    for opts in (
        ApproxOptions("ivf", candidates=1000, nprobe=16, sample=100),
        ApproxOptions("hnsw", candidates=1000, ef_search=1000, sample=100),
    ):
        report: dict = {}
        t = time.perf_counter()
        score_approximate(q, x, index, chunks_of(d), opts=opts, report=report, **kw)
        s = time.perf_counter() - t
        loss = report["recall"]
        print(
            f"approximate {opts.method}: {s:.2f} s total (search {report['search_s']:.2f} s, "
            f"incl. the exact sample), {exact_s / s:.2f}x exact; on {loss['sample_queries']} "
            f"sampled queries {loss['exemplar_counts_differ']:.2%} exemplar counts differ, "
            f"top-100 recall loss {loss['top_n_recall_loss']:.2%}, "
            f"max metric diff {loss['max_metric_difference']:.4f}"
        )


if __name__ == "__main__":
    main()
