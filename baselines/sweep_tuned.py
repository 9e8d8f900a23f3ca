"""The hyperparameter sweep behind :class:`baselines.tuned.TuneConfig`'s defaults.

    python -m baselines.sweep_tuned pixels color_histogram [-b abc-mini]

Trains heads for every combination below on the benchmark's train part and prints the
identity and selected val mAP. Val picks both the epoch and (here) the setting, so these val
numbers are optimistic; only test-case results say whether tuning helps.
"""

from __future__ import annotations

import argparse
import itertools

import torch

from baselines.backbone import Baseline
from baselines.tuned import TuneConfig, collect, train_heads
from benchmark.benchmarks import resolve_benchmark

GRID = {"lr": (1e-3, 1e-4), "identity_weight": (1e-3, 1e-1, 1.0), "temperature": (0.05, 0.2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("backbones", nargs="+")
    parser.add_argument("-b", "--benchmark", default=None)
    parser.add_argument("--epochs", type=int, default=60)
    args = parser.parse_args()
    bench = resolve_benchmark(args.benchmark)
    print("backbone\tlr\tidentity_weight\ttemperature\tval mAP identity\tselected\tepoch")
    for name in args.backbones:
        data = collect(Baseline(name), bench, torch.device("cpu"), progress=False)
        for values in itertools.product(*GRID.values()):
            config = TuneConfig(epochs=args.epochs, **dict(zip(GRID, values, strict=True)))
            _, r = train_heads(data, config)
            print(
                f"{name}\t" + "\t".join(f"{v:g}" for v in values) + f"\t"
                f"{r['val_mAP_identity']:.4f}\t{r['val_mAP_selected']:.4f}\t{r['selected_epoch']}",
                flush=True,
            )


if __name__ == "__main__":
    main()
