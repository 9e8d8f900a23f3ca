"""How alike are a model's exemplars, and does that predict how well its samples are attributed?

A style test case only carries signal if the artist's exemplars share a look that a sample
can take on. This measures, per customized model with two or more exemplars, the exemplar
set's coherence (mean pairwise cosine of the generation report's no-weight feature, pixels
16x16) next to the model's recall@K in a stored result (mean over its queries of the share
of its exemplars ranked in the top K), and per test case their Spearman rank correlation and
the mean recall of the more and the less coherent half of the models.

Usage (from the repository root)::

    .venv/bin/python -m splits.generate.coherence \\
        leaderboard/results/abc-mini@0.3.0/pixels.json.gz [--benchmark splits/abc-mini] [--k 10]
"""

from __future__ import annotations

import argparse
import io
from collections import defaultdict

import numpy as np
import torch
from PIL import Image
from scipy.stats import spearmanr

from baselines.noweight import Pixels
from benchmark.results import load_result
from benchmark.splits import load_benchmark
from splits.generate.report import embed


def exemplar_features(bench, size: int = 16) -> dict[str, torch.Tensor]:
    """Unit-norm pixels features of every exemplar, by id (the generation report's feature)."""
    ids, images = [], []
    for block in bench.iter_image_blocks("exemplars"):
        for image_id, data in zip(block.ids, block.images, strict=True):
            with Image.open(io.BytesIO(data)) as im:
                images.append(im.convert("RGB"))
            ids.append(image_id)
    features = torch.nn.functional.normalize(embed(Pixels(size), images), dim=1)
    return dict(zip(ids, features, strict=True))


def coherence(features: list[torch.Tensor]) -> float:
    """Mean cosine over the distinct pairs of a set (needs two or more)."""
    f = torch.stack(features)
    sims = f @ f.T
    n = len(f)
    return float((sims.sum() - sims.diagonal().sum()) / (n * (n - 1)))


def per_model_recall(result: dict, k: int) -> dict[str, float]:
    shares = defaultdict(list)
    for q in result["queries"]:
        shares[q["model_id"]].append(np.mean([e["rank"] <= k for e in q["exemplars"]]))
    return {m: float(np.mean(v)) for m, v in shares.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("result", help="a stored result (.json or .json.gz) on the benchmark")
    ap.add_argument("--benchmark", default="splits/abc-mini")
    ap.add_argument("--k", type=int, default=10)
    args = ap.parse_args()
    bench = load_benchmark(args.benchmark)
    recall = per_model_recall(load_result(args.result), args.k)
    feats = exemplar_features(bench)
    by_part = defaultdict(list)
    for m in bench.models:
        if m.model_id in recall and len(m.exemplar_ids) > 1:
            coh = coherence([feats[e] for e in m.exemplar_ids])
            by_part[m.part.value].append((coh, recall[m.model_id]))
    print(f"| test case | models (2+ exemplars) | mean coherence | recall@{args.k} "
          "| Spearman (p) | more coherent half | less coherent half |")
    print("|---|---|---|---|---|---|---|")
    for part, rows in by_part.items():
        coh, rec = np.array(rows).T
        rho, p = spearmanr(coh, rec)
        upper = coh >= np.median(coh)
        print(f"| {part} | {len(rows)} | {coh.mean():.2f} | {rec.mean():.3f} | {rho:+.2f} "
              f"({p:.3f}) | {rec[upper].mean():.3f} | {rec[~upper].mean():.3f} |")


if __name__ == "__main__":
    main()
