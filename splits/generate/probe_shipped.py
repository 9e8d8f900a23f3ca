"""Probe a partial generation run against the shipped benchmark, on the same models.

For every model finished in RUN, three paired comparisons per test case (pixels-16, the
generation report's feature; cluster bootstrap over models):

- RUN's queries vs its base samples (what ``splits report`` measures);
- the shipped version's queries for the same query ids vs the same base samples (the base
  model, prompts and seeds are unchanged, so the base samples are the same images);
- RUN's queries vs the shipped queries directly (what the recipe change bought).

Then what the samples look like next to their exemplars (:func:`closeness`, same feature,
per test case): how close a sample is to its nearest exemplar, how many are near-copies, how
alike a model's samples are, and how close each is to the base model's sample of the same
prompt and seed (a recipe that buys signal by copying its exemplars instead of following
the prompt shows up here).

Usage (from the repository root, sources installed as for ``splits generate``):

    HF_HUB_OFFLINE=1 .venv/bin/python -m splits.generate.probe_shipped \\
        splits/generate/runs/abc-mini-0.3.0 [--shipped splits/abc-mini] [--out FILE.json]

Needs the shipped benchmark of the version to compare against in ``--shipped`` (after a
re-freeze, check the old version out to a folder first). A candidate that is not frozen yet
is compared with ``--against RUN0`` instead: RUN0 is that candidate's own generation run
(same base model and domain), and its queries stand in for the shipped ones, e.g.

    HF_HUB_OFFLINE=1 .venv/bin/python -m splits.generate.probe_shipped \
        RUN --config abc-mini-next-unseen-noun-mean-probe \
        --against splits/generate/runs/abc-mini-next
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import tempfile
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from baselines.noweight import Pixels
from benchmark.splits import load_benchmark
from splits.generate import report, sources
from splits.generate.coherence import coherence, pixel_features
from splits.generate.config import load_recipe
from splits.generate.pipeline import encode
from splits.generate.pool import load_domain


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("--shipped", type=Path, default=Path("splits/abc-mini"))
    ap.add_argument(
        "--against", type=Path, help="a generation run to compare with instead of --shipped"
    )
    ap.add_argument("--config", default="abc-mini")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    recipe = load_recipe(args.config)
    domain = load_domain(None, recipe.domain)
    samples = report.collect(domain, args.run)
    if args.against is None:
        bench = load_benchmark(args.shipped)
        reference = bench.version
    else:
        reference = f"{args.against.name} run"
    size = recipe.generate.image_size
    stored = functools.partial(encode, cfg=recipe.generate)
    images = report.domain_images(domain, size)
    report.domain_images = lambda _d, _s: images  # load the gallery once for three runs
    out = {"run": str(args.run), "shipped": reference, "tables": {}}
    with tempfile.TemporaryDirectory() as tmp:
        wanted = {s.query_id for s in samples}
        if args.against is not None:
            shipped = {s.query_id: s.customized for s in report.collect(domain, args.against)}
        else:
            shipped = {}
            for block in bench.iter_image_blocks("queries", wanted):
                for qid, data in zip(block.ids, block.images, strict=True):
                    path = Path(tmp) / f"{qid}.png"
                    with Image.open(io.BytesIO(data)) as im:
                        im.convert("RGB").save(path)
                    shipped[qid] = path
        samples = [s for s in samples if s.query_id in shipped]
        finished = sorted({s.model_id for s in samples})
        out["models"] = finished
        old = [replace(s, customized=shipped[s.query_id]) for s in samples]
        new_vs_old = [replace(s, base=shipped[s.query_id]) for s in samples]
        pairs = {
            f"{recipe.version} vs base": samples,
            f"{reference} vs base": old,
            f"{recipe.version} vs {reference}": new_vs_old,
        }
        for name, rows in pairs.items():
            result = report.signal(domain, rows, Pixels(16), size, stored=stored)
            out["tables"][name] = result
            for metric in ("recall@10", "mAP"):
                print(f"\n## {name}: {metric} ({len(finished)} models)\n")
                print(report.markdown_table(result, metric, prompt_types=False))
        sources_of = {recipe.version: {s.query_id: s.customized for s in samples}}
        sources_of[reference] = shipped
        sources_of["base"] = {s.query_id: s.base for s in samples}
        out["closeness"] = closeness_by_part(domain, samples, sources_of, size)
        print_closeness(out["closeness"])
    if args.out:
        args.out.write_text(json.dumps(out, indent=1) + "\n")


def closeness(
    queries: dict[str, torch.Tensor], exemplars: torch.Tensor, near: float = 0.9
) -> dict[str, dict[str, float]]:
    """One model's samples from several sources (``queries[source]`` [Q, D], rows aligned:
    the same prompts and seeds, one source named ``base``) and its exemplars [E, D], all unit
    norm. Per source: the mean cosine of a sample to its nearest exemplar, the share of
    samples above ``near`` to an exemplar (near-copies), the mean cosine between two samples
    of the model (higher: less varied; needs two samples) and the mean cosine of a sample to
    the base model's sample of the same prompt and seed."""
    out = {}
    for name, x in queries.items():
        nearest = (x @ exemplars.T).max(dim=1).values
        out[name] = {
            "to nearest exemplar": float(nearest.mean()),
            f"near-copies (> {near})": float((nearest > near).float().mean()),
            "between samples": coherence(list(x)),
            "to its base sample": float((x * queries["base"]).sum(dim=1).mean()),
        }
    return out


def closeness_by_part(domain, samples, sources_of: dict[str, dict[str, Path]], size: int):
    """:func:`closeness` of every finished model (pixels-16), averaged per test case."""
    spec = {m.model_id: m for m in domain.models}
    by_model = defaultdict(list)
    for s in samples:
        by_model[s.model_id].append(s)

    rows = defaultdict(list)
    for model_id, mine in sorted(by_model.items()):
        exemplars = pixel_features(
            [sources.square_rgb(e.path, size) for e in spec[model_id].exemplars]
        )
        queries = {
            name: pixel_features([report._rgb(paths[s.query_id]) for s in mine])
            for name, paths in sources_of.items()
        }
        rows[spec[model_id].part.value].append(closeness(queries, exemplars))
    return {
        part: {
            name: {k: float(np.mean([m[name][k] for m in models])) for k in models[0][name]}
            for name in models[0]
        }
        for part, models in rows.items()
    }


def print_closeness(table: dict) -> None:
    print("\n## Samples next to their exemplars (pixels-16 cosine, mean over models)\n")
    measures = list(next(iter(next(iter(table.values())).values())))
    print("| test case | samples | " + " | ".join(measures) + " |")
    print("|---|---|" + "---|" * len(measures))
    for part, by_source in table.items():
        for name, values in by_source.items():
            cells = " | ".join(f"{values[k]:.3f}" for k in measures)
            print(f"| {part} | {name} | {cells} |")


if __name__ == "__main__":
    main()
