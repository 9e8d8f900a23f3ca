"""Probe a partial generation run against the shipped benchmark, on the same models.

For every model finished in RUN, three paired comparisons per test case (pixels-16, the
generation report's feature; cluster bootstrap over models):

- RUN's queries vs its base samples (what ``splits report`` measures);
- the shipped version's queries for the same query ids vs the same base samples (the base
  model, prompts and seeds are unchanged, so the base samples are the same images);
- RUN's queries vs the shipped queries directly (what the recipe change bought).

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
from dataclasses import replace
from pathlib import Path

from PIL import Image

from baselines.noweight import Pixels
from benchmark.splits import load_benchmark
from splits.generate import report
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
    if args.out:
        args.out.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
