"""Does the generated ground truth carry signal? The generation report and the contact sheet.

A benchmark built by construction is only useful if the customized model's samples really
depend on its exemplars. The check: for every customized model, its queries and base-model
samples with the same prompts (minus the new token) and the same seeds are scored against
the model's exemplars among all distractors (as the benchmark ranks them), with a feature
that has no learned weights. Per test case the report gives each side's mean and the paired
difference with a cluster-bootstrap interval over models (the benchmark's own resampling
unit). The difference must be clearly positive in every test case: customized samples look
more like their exemplars than the same prompts and seeds without customization do.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from benchmark import scoring, stats
from benchmark.metrics import per_query_bounds
from benchmark.types import Part, PromptType
from splits.generate.domain import Domain
from splits.generate.pipeline import distinct_images, domain_images
from splits.generate.sources import square_rgb

METRICS = ("mAP", "recall@10", "recall@100")
SIDES = ("customized", "base")


@dataclass(frozen=True)
class Sample:
    query_id: str
    model_id: str
    part: Part
    prompt_type: PromptType
    customized: Path
    base: Path


def collect(domain: Domain, run_dir: str | Path) -> list[Sample]:
    """Every query of every finished model that has a base-model twin."""
    out = []
    for spec in domain.models:
        folder = Path(run_dir) / "models" / spec.model_id
        done = folder / "done.json"
        if not done.is_file():
            continue
        for q in json.loads(done.read_text())["queries"]:
            base = folder / "base" / f"{q['query_id']}.png"
            if base.is_file():
                out.append(
                    Sample(
                        q["query_id"],
                        spec.model_id,
                        spec.part,
                        PromptType(q["prompt_type"]),
                        folder / "queries" / f"{q['query_id']}.png",
                        base,
                    )
                )
    return out


def _rgb(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


def embed(extractor, images: Sequence[Image.Image], batch: int = 256) -> torch.Tensor:
    rows = []
    with torch.inference_mode():
        for i in range(0, len(images), batch):
            x = torch.stack([extractor.preprocess(im) for im in images[i : i + batch]])
            rows.append(extractor.embed(x).float())
    return torch.cat(rows)


def signal(
    domain: Domain,
    samples: Sequence[Sample],
    extractor,
    image_size: int,
    *,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    stored: Callable[[Image.Image], bytes] | None = None,
) -> dict:
    """Per test case and side: mean of each metric; per test case: the paired difference.

    ``stored``: how the benchmark stores an image, so that repeats are dropped exactly as
    ``freeze`` drops them (:func:`~splits.generate.pipeline.distinct_images`).
    """
    say = progress or (lambda _: None)
    # The exemplar sets and distractors exactly as frozen (pixel-identical repeats dropped).
    images = domain_images(domain, image_size)
    kept, distractor_ids = distinct_images(domain, images, stored)
    gallery_ids = list(dict.fromkeys(e for m in domain.models for e in kept[m.model_id]))
    say(f"embedding {len(gallery_ids)} exemplars and {len(distractor_ids)} distractors")
    x = embed(extractor, [images[i] for i in gallery_ids])
    d = embed(extractor, [images[i] for i in distractor_ids])
    row = {image_id: i for i, image_id in enumerate(gallery_ids)}
    index = [[row[e] for e in kept[s.model_id]] for s in samples]
    ex_ids = [kept[s.model_id] for s in samples]
    per_side = {}
    for side in SIDES:
        say(f"scoring {len(samples)} {side} samples")
        images = [_rgb(getattr(s, side)) for s in samples]
        counts = scoring.score_features(
            embed(extractor, images),
            x,
            index,
            lambda size: iter(d.split(size)),
            query_ids=[s.query_id for s in samples],
            exemplar_ids=ex_ids,
        )
        per_side[side] = per_query_bounds(counts.above, counts.ties, counts.unresolved)[0]
    clusters = np.array([s.model_id for s in samples])
    parts = np.array([s.part.value for s in samples])
    ptypes = np.array([s.prompt_type.value for s in samples])
    cells = []
    for part in dict.fromkeys(s.part for s in samples):
        for ptype in (None, *dict.fromkeys(s.prompt_type for s in samples if s.part is part)):
            mask = parts == part.value
            if ptype is not None:
                mask &= ptypes == ptype.value
            cell = {
                "part": part.value,
                "prompt_type": ptype.value if ptype else "all",
                "models": len(set(clusters[mask])),
                "queries": int(mask.sum()),
            }
            for metric in METRICS:
                a, b = per_side["customized"][metric][mask], per_side["base"][metric][mask]
                stream = f"signal/{part.value}/{cell['prompt_type']}/{metric}"
                diff = stats.paired_difference(a, b, clusters[mask], seed=seed, stream=stream)
                cell[metric] = {
                    "customized": float(a.mean()),
                    "base": float(b.mean()),
                    "difference": [diff.value, diff.low, diff.high],
                }
            cells.append(cell)
    models = []
    for model_id in dict.fromkeys(clusters):
        mask = clusters == model_id
        row = {"model_id": str(model_id), "part": str(parts[mask][0])}
        row["exemplars"] = len(kept[str(model_id)])
        for side in SIDES:
            row[side] = {m: float(per_side[side][m][mask].mean()) for m in METRICS}
        models.append(row)
    return {"feature": extractor.spec, "seed": seed, "cells": cells, "models": models}


EXEMPLAR_BINS = ((1, 1), (2, 3), (4, 5), (6, 8), (9, None))


def by_exemplar_count(result: dict, metric: str = "recall@10") -> str:
    """Per test case and number of exemplars (as frozen): models, mean customized / base
    and their difference. A set of one or two pictures can be copied; a set of eight must be
    imitated, so this shows where a test case's signal comes from."""
    lines = [
        f"| test case | exemplars | models | customized {metric} | base | difference |",
        "|---|---|---:|---:|---:|---:|",
    ]
    rows = result.get("models", [])
    for part in dict.fromkeys(r["part"] for r in rows):
        for lo, hi in EXEMPLAR_BINS:
            group = [
                r
                for r in rows
                if r["part"] == part and lo <= r["exemplars"] <= (hi or r["exemplars"])
            ]
            if not group:
                continue
            label = f"{lo}+" if hi is None else str(lo) if lo == hi else f"{lo}-{hi}"
            a = float(np.mean([r["customized"][metric] for r in group]))
            b = float(np.mean([r["base"][metric] for r in group]))
            lines.append(f"| {part} | {label} | {len(group)} | {a:.3f} | {b:.3f} | {a - b:+.3f} |")
    return "\n".join(lines)


def interval_mark(low: float, high: float) -> str:
    """How a difference's interval reads beside it: nothing when it lies above zero."""
    if low > 0:
        return ""
    return " (below 0)" if high < 0 else " (CI includes 0)"


def markdown_table(result: dict, metric: str = "mAP", prompt_types: bool = True) -> str:
    lines = [
        f"| test case | prompt type | models | queries | {metric} customized | {metric} base "
        "| difference [95% CI] |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for c in result["cells"]:
        if c["prompt_type"] != "all" and not prompt_types:
            continue
        m = c[metric]
        value, low, high = m["difference"]
        lines.append(
            f"| {c['part']} | {c['prompt_type']} | {c['models']} | {c['queries']} "
            f"| {m['customized']:.3f} | {m['base']:.3f} "
            f"| {value:+.3f} [{low:+.3f}, {high:+.3f}]{interval_mark(low, high)} |"
        )
    return "\n".join(lines)


def all_positive(result: dict, metric: str = "mAP") -> bool:
    """True when every test case's difference interval excludes zero from below."""
    return all(
        c[metric]["difference"][1] > 0
        for c in result["cells"]
        if c["prompt_type"] == "all" and Part(c["part"]).is_test
    )


def contact_sheet(
    domain: Domain,
    run_dir: str | Path,
    model_ids: Sequence[str],
    out_png: str | Path,
    *,
    image_size: int,
    per_row: int = 4,
    scale: int = 2,
) -> Path:
    """One row per model: exemplar | ``per_row`` customized samples | the same base samples."""
    specs = {m.model_id: m for m in domain.models}
    cell = image_size * scale
    gap, label_h = 6, 14
    width = cell * (1 + 2 * per_row) + gap * 3
    height = (cell + label_h) * len(model_ids) + label_h
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    x_custom, x_base = cell + gap, cell + gap * 2 + cell * per_row
    for x, text in ((0, "exemplar"), (x_custom, "customized"), (x_base, "base, same prompt+seed")):
        draw.text((x + 2, 1), text, fill="black")
    for r, model_id in enumerate(model_ids):
        spec = specs[model_id]
        folder = Path(run_dir) / "models" / model_id
        queries = json.loads((folder / "done.json").read_text())["queries"]
        picks = [q["query_id"] for q in queries[:: max(1, len(queries) // per_row)][:per_row]]
        y = label_h + r * (cell + label_h)
        draw.text((2, y + 1), f"{model_id} ({spec.noun})", fill="black")
        y += label_h

        def put(image: Image.Image, x: int, y: int = y) -> None:
            sheet.paste(image.convert("RGB").resize((cell, cell), Image.Resampling.NEAREST), (x, y))

        put(square_rgb(spec.exemplars[0].path, image_size), 0)
        for i, qid in enumerate(picks):
            put(_rgb(folder / "queries" / f"{qid}.png"), x_custom + i * cell)
            put(_rgb(folder / "base" / f"{qid}.png"), x_base + i * cell)
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, optimize=True)
    return out


def generation_seconds(domain: Domain, run_dir: str | Path) -> dict[str, float]:
    """Total customization and sampling seconds recorded by the finished models.

    A model whose delta came from another run (``splits generate --deltas-from``) counts the
    customization seconds that run recorded for it; ``reused`` counts such models.
    """
    total = {"customize": 0.0, "sample": 0.0, "models": 0, "reused": 0}
    for spec in domain.models:
        done = Path(run_dir) / "models" / spec.model_id / "done.json"
        if done.is_file():
            info = json.loads(done.read_text())
            seconds = info.get("seconds", {})
            total["customize"] += seconds.get("customize", 0.0)
            total["sample"] += seconds.get("sample", 0.0)
            total["models"] += 1
            if "delta_from" in info:
                total["reused"] += 1
                donor = Path(info["delta_from"]) / "done.json"
                if donor.is_file():
                    total["customize"] += json.loads(donor.read_text())["seconds"]["customize"]
    return total


def write_report(
    path: str | Path,
    *,
    recipe_name: str,
    results: Sequence[dict],
    seconds: dict[str, float],
    sheet: str | None,
    version: str | None = None,
    previous: dict | None = None,
) -> Path:
    """The committed generation report (markdown) with every number it rests on.

    The numbers go beside it as JSON (``version``, ``seconds``, ``results``), which a later
    report reads back as ``previous`` to print the two versions side by side.
    """
    primary = results[0]
    verdict = "positive in every test case" if all_positive(primary) else "NOT positive everywhere"
    title = f"{recipe_name} {version}" if version else recipe_name
    lines = [
        f"# {title}: generation report",
        "",
        "Written by `attrib-bench splits report` (`splits/generate/report.py`). Each customized",
        "model's queries are compared with base-model samples from the same prompts without the",
        "`<new1>` token and the same seeds. Both rank the model's exemplars (as frozen: repeated",
        "pictures dropped) among all distractors, as the benchmark does, with features that have",
        "no learned weights. Differences are customized minus base; intervals are 95% percentile",
        "cluster bootstraps over customized models (paired: the same resampled models for both",
        "sides).",
        "",
        f"Verdict (feature `{primary['feature']['name']}`, mAP): **{verdict}**.",
        "",
        f"Generation: {seconds['models']} models, customization {seconds['customize'] / 60:.1f}"
        f" min and sampling {seconds['sample'] / 60:.1f} min of process time in total"
        " (queries and base samples; 2-core CPU)."
        + (
            f" The deltas of {seconds['reused']} models were made in an earlier run (`splits"
            " generate --deltas-from`) whose customization time is counted here."
            if seconds.get("reused")
            else ""
        ),
        "",
    ]
    if sheet:
        lines += [f"![contact sheet]({sheet})", ""]
    if previous is not None:
        for metric in ("recall@10", "mAP"):
            lines += [
                f"## {primary['feature']['name']}: {metric}, "
                f"{previous.get('version') or 'previous'} vs {version or 'this run'}",
                "",
                comparison_table(previous, {"version": version, "results": results}, metric),
                "",
            ]
    if primary.get("models"):
        lines += [
            f"## {primary['feature']['name']}: recall@10 by number of exemplars",
            "",
            "Mean over models (each model's mean over its queries); no interval.",
            "",
            by_exemplar_count(primary),
            "",
        ]
    for result in results:
        spec = ", ".join(f"{k}={v}" for k, v in result["feature"].items() if k != "name")
        for metric in ("mAP", "recall@10"):
            lines += [
                f"## {result['feature']['name']} ({spec}): {metric}",
                "",
                markdown_table(result, metric),
                "",
            ]
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines), encoding="utf-8")
    numbers = {"name": recipe_name, "version": version, "seconds": seconds, "results": results}
    out.with_suffix(".json").write_text(json.dumps(numbers, indent=1) + "\n")
    return out


def load_report(path: str | Path) -> dict:
    """A report's numbers as ``write_report`` stores them.

    Reports written before versions were recorded hold a bare list of results; their
    version is taken from a ``-X.Y.Z-`` part of the file name when there is one.
    """
    path = Path(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, list):
        match = re.search(r"-(\d+\.\d+\.\d+)-", path.name)
        data = {"version": match.group(1) if match else None, "results": data}
    if not isinstance(data, dict) or not isinstance(data.get("results"), list):
        raise ValueError(f"{path}: not a generation report's JSON (no results)")
    return data


def comparison_table(previous: dict, current: dict, metric: str = "recall@10") -> str:
    """Per test case (all prompt types): each version's customized / base and difference.

    Uses each report's first feature (pixels); test cases missing from either side are left
    out.
    """
    names = [r.get("version") or label for r, label in ((previous, "previous"), (current, "this"))]

    def cells(report: dict) -> dict[str, dict]:
        result = report["results"][0]
        return {c["part"]: c for c in result["cells"] if c["prompt_type"] == "all"}

    old, new = cells(previous), cells(current)
    head = " | ".join(f"{n} customized / base | {n} difference [95% CI]" for n in names)
    lines = [
        f"| test case | models | {head} | change in difference |",
        "|---|---:|" + "---|" * (2 * len(names)) + "---:|",
    ]
    for part in [p for p in new if p in old]:
        row = [part, f"{old[part]['models']} / {new[part]['models']}"]
        for cell in (old[part], new[part]):
            m = cell[metric]
            value, low, high = m["difference"]
            row += [
                f"{m['customized']:.3f} / {m['base']:.3f}",
                f"{value:+.3f} [{low:+.3f}, {high:+.3f}]{interval_mark(low, high)}",
            ]
        change = new[part][metric]["difference"][0] - old[part][metric]["difference"][0]
        lines.append("| " + " | ".join(row) + f" | {change:+.3f} |")
    return "\n".join(lines)
