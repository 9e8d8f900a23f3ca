"""Did a recipe change hold on the models it was not chosen on?

A recipe setting is chosen on a probe (a few models per test case), then a full run measures
it on every model. The full run's gain mixes the probed models, on which the setting was
selected because it did well (and so tends to do less well when measured again), with the
others, which are a fair test. This splits the change per test case: the probed models and
the others, each with the benchmark's cluster-bootstrap interval over models.

Usage (from the repository root; reports are ``splits report`` JSON, probes any JSON whose
``"models"`` lists name the probed models, e.g. ``probe_shipped --out``)::

    .venv/bin/python -m splits.generate.heldout NEW_REPORT.json OLD_REPORT.json \\
        --probe docs/abc-mini-no-prior-probe.json [--metric recall@10] \\
        [--pool "seen objects=*-obj-*"]

``--pool NAME=GLOB`` adds rows for the models whose id matches GLOB, across test cases (here
the seen-object models of test, train and val).

The customized samples are compared (the base samples of two runs on one base model with the
same prompts and seeds are the same images, so this is also the change in the report's
customized-minus-base difference).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.stats import Interval, paired_difference


def probed_models(probe: Any) -> set[str]:
    """Every model id listed under a ``"models"`` key anywhere in a probe's JSON."""
    found: set[str] = set()
    if isinstance(probe, dict):
        for key, value in probe.items():
            if key == "models" and isinstance(value, list):
                found |= {v for v in value if isinstance(v, str)}
            else:
                found |= probed_models(value)
    elif isinstance(probe, list):
        for value in probe:
            found |= probed_models(value)
    return found


def held_out_change(
    new: list[dict], old: list[dict], probed: set[str], metric: str, seed: int = 0
) -> list[tuple[str, str, int, Interval]]:
    """(test case, "probed" | "others", models, change of the customized ``metric``) from two
    reports' per-model rows (``results[i]["models"]``); models in one report only are left
    out."""
    before = {m["model_id"]: m for m in old}
    rows = []
    for part in dict.fromkeys(m["part"] for m in new):
        mine = [m for m in new if m["part"] == part and m["model_id"] in before]
        for group, members in (
            ("probed", [m for m in mine if m["model_id"] in probed]),
            ("others", [m for m in mine if m["model_id"] not in probed]),
        ):
            if not members:
                continue
            a = np.array([m["customized"][metric] for m in members])
            b = np.array([before[m["model_id"]]["customized"][metric] for m in members])
            ids = np.array([m["model_id"] for m in members])
            stream = f"heldout/{part}/{group}/{metric}"
            rows.append(
                (part, group, len(members), paired_difference(a, b, ids, seed=seed, stream=stream))
            )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("new", type=Path, help="the full run's report JSON")
    ap.add_argument("old", type=Path, help="the report JSON it is compared with")
    ap.add_argument("--probe", type=Path, action="append", required=True)
    ap.add_argument("--metric", default="recall@10")
    ap.add_argument("--feature", type=int, default=0, help="index into the reports' results")
    ap.add_argument("--pool", action="append", default=[], metavar="NAME=GLOB")
    args = ap.parse_args()
    probed = set().union(*(probed_models(json.loads(p.read_text())) for p in args.probe))
    new, old = (
        json.loads(p.read_text())["results"][args.feature]["models"] for p in (args.new, args.old)
    )
    for pool in args.pool:
        name, _, pattern = pool.partition("=")
        new += [{**m, "part": name} for m in new if fnmatch.fnmatch(m["model_id"], pattern)]
        old += [{**m, "part": name} for m in old if fnmatch.fnmatch(m["model_id"], pattern)]
    print(f"| test case | models | {args.metric}, new - old [95% CI] |")
    print("|---|---|---|")
    for part, group, n, iv in held_out_change(new, old, probed, args.metric):
        print(f"| {part} | {group}: {n} | {iv.value:+.3f} [{iv.low:+.3f}, {iv.high:+.3f}] |")


if __name__ == "__main__":
    main()
