"""How alike are a model's exemplars, and does that predict how well its samples are attributed?

A style test case only carries signal if the artist's exemplars share a look that a sample
can take on. This measures, per customized model with two or more exemplars, the exemplar
set's coherence (mean pairwise cosine of the generation report's no-weight feature, pixels
16x16) next to the model's recall@K in a stored result (mean over its queries of the share
of its exemplars ranked in the top K), and per test case their Spearman rank correlation and
the mean recall of the more and the less coherent half of the models.

With ``--artists`` it also asks what a style query retrieves besides its exemplars: per style
test case, how many of a query's top K (same feature) are the artist's other drawings among
the distractors (a seen artist's drawings train the base model, and distractors are drawn from
the training images), against chance, and recall@K with those drawings left out of the
gallery. Distractors are mapped to their artist through the installed sources.

Usage (from the repository root)::

    .venv/bin/python -m splits.generate.coherence \\
        leaderboard/results/abc-mini@0.3.0/pixels.json.gz [--benchmark splits/abc-mini] [--k 10]
        [--artists]
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
from benchmark.metrics import exemplar_ranks, recall_at
from benchmark.results import load_result
from benchmark.splits import load_benchmark
from splits.generate.report import embed


def pixel_features(images, size: int = 16) -> torch.Tensor:
    """Unit-norm pixels features [N, D] of PIL images (the generation report's feature)."""
    return torch.nn.functional.normalize(embed(Pixels(size), images), dim=1)


def image_features(bench, table: str = "exemplars", wanted=None, size: int = 16):
    """Unit-norm pixels features of every image of ``table`` (rows in ``wanted`` only), by id
    (the generation report's feature)."""
    ids, images = [], []
    for block in bench.iter_image_blocks(table, wanted):
        for image_id, data in zip(block.ids, block.images, strict=True):
            with Image.open(io.BytesIO(data)) as im:
                images.append(im.convert("RGB"))
            ids.append(image_id)
    return dict(zip(ids, pixel_features(images, size), strict=True))


def artist_neighbours(
    queries: torch.Tensor,
    exemplars: torch.Tensor,
    distractors: torch.Tensor,
    same: torch.Tensor,
    k: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One model's queries [Q, D] against its exemplars [E, D] and the distractors [N, D]
    (``same`` [N]: drawn by the exemplars' artist), ties pessimistic as in scoring.

    Returns per query: the number of the artist's other drawings in the top ``k`` of the
    gallery (distractors + exemplars), recall@k, and recall@k with those drawings left out.
    """
    to_d, to_e = queries @ distractors.T, queries @ exemplars.T  # [Q, N], [Q, E]

    def recall(d: torch.Tensor) -> np.ndarray:
        above = (d[:, None, :] > to_e[:, :, None]).sum(-1).numpy()
        ties = (d[:, None, :] == to_e[:, :, None]).sum(-1).numpy()
        return recall_at(exemplar_ranks(above, ties, np.zeros_like(above))[0], k)

    # Distractors come first in the gallery, so a stable sort puts them above tied exemplars.
    top = torch.argsort(torch.cat([to_d, to_e], dim=1), dim=1, descending=True, stable=True)
    artist = torch.cat([same, torch.zeros(len(exemplars), dtype=torch.bool)])
    artist_in_top = artist[top[:, :k]].sum(1).numpy()
    return artist_in_top, recall(to_d), recall(to_d[:, ~same])


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
    ap.add_argument(
        "--artists", action="store_true", help="also: the artist's other drawings a query retrieves"
    )
    args = ap.parse_args()
    bench = load_benchmark(args.benchmark)
    recall = per_model_recall(load_result(args.result), args.k)
    feats = image_features(bench)
    by_part = defaultdict(list)
    for m in bench.models:
        if m.model_id in recall and len(m.exemplar_ids) > 1:
            coh = coherence([feats[e] for e in m.exemplar_ids])
            by_part[m.part.value].append((coh, recall[m.model_id]))
    print(
        f"| test case | models (2+ exemplars) | mean coherence | recall@{args.k} "
        "| Spearman (p) | more coherent half | less coherent half |"
    )
    print("|---|---|---|---|---|---|---|")
    for part, rows in by_part.items():
        coh, rec = np.array(rows).T
        rho, p = spearmanr(coh, rec)
        upper = coh >= np.median(coh)
        print(
            f"| {part} | {len(rows)} | {coh.mean():.2f} | {rec.mean():.3f} | {rho:+.2f} "
            f"({p:.3f}) | {rec[upper].mean():.3f} | {rec[~upper].mean():.3f} |"
        )
    if args.artists:
        print()
        print_artist_neighbours(bench, feats, args.k)


def print_artist_neighbours(bench, exemplar_feats: dict[str, torch.Tensor], k: int) -> None:
    """The ``--artists`` table: per style test case, the exemplars' artist's other drawings
    in a query's top k (against chance) and recall@k with and without them in the gallery."""
    from splits.generate.pool import _catalog

    _stamps, drawings = _catalog(None)
    artist_of = {s.image_id: s.group for s in drawings}
    distractors = image_features(bench, "distractors")
    ids = list(distractors)
    d = torch.stack([distractors[i] for i in ids])
    artists = np.array([artist_of.get(i, "") for i in ids])  # "": a photo, no artist
    print(
        f"| test case | the artist's drawings among the distractors, per model | of a query's "
        f"top {k} (chance) | recall@{k} | without them in the gallery |"
    )
    print("|---|---|---|---|---|")
    for part in ("style-seen", "style-unseen", "train", "val"):
        models = [
            m
            for m in bench.models
            if m.part.value == part
            and m.exemplar_ids[0] in artist_of  # a style model: its exemplars are drawings
        ]
        queries = [q for q in bench.queries if q.part.value == part]
        if not models or not queries:
            continue
        qf = image_features(bench, "queries", {q.query_id for q in queries})
        n_same, in_top, rec, rec_without = [], [], [], []
        for m in models:
            same = torch.from_numpy(artists == artist_of[m.exemplar_ids[0]])
            mine = [qf[q.query_id] for q in queries if q.model_id == m.model_id]
            top, r, r2 = artist_neighbours(
                torch.stack(mine),
                torch.stack([exemplar_feats[e] for e in m.exemplar_ids]),
                d,
                same,
                k,
            )
            n_same.append(int(same.sum()))
            in_top += top.tolist()
            rec += r.tolist()
            rec_without += r2.tolist()
        chance = k * np.mean(n_same) / len(ids)
        print(
            f"| {part} ({len(models)} style models) | {np.mean(n_same):.1f} | "
            f"{np.mean(in_top):.2f} ({chance:.2f}) | {np.mean(rec):.3f} | "
            f"{np.mean(rec_without):.3f} |"
        )


if __name__ == "__main__":
    main()
