"""``attrib-bench train-tuned`` and ``attrib-bench baselines ...``: the baseline catalog."""

from __future__ import annotations

from pathlib import Path

import click

from benchmark.cli.common import FriendlyGroup, ensure_dir, weights_option


@click.command(name="train-tuned")
@click.option("--backbone", required=True, help="Catalog baseline to tune (list baselines).")
@click.option("--benchmark", "-b", default=None, help="Benchmark with train and val parts.")
@weights_option
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder for the head file (default: <cache>/tuned, where evaluate finds it).",
)
@click.option("--epochs", type=int, default=None, help="Most epochs (100).")
@click.option("--batch-size", type=int, default=None, help="Train queries per step (32).")
@click.option("--lr", type=float, default=None, help="Adam learning rate (0.001).")
@click.option("--temperature", type=float, default=None, help="InfoNCE temperature (0.05).")
@click.option("--identity-weight", type=float, default=None, help="Pull to identity (0.1).")
@click.option("--patience", type=int, default=None, help="Epochs without val gain (20).")
@click.option("--seed", type=int, default=None, help="Seed (0).")
@click.option("--device", default=None)
@click.option("--quiet", "-q", is_flag=True)
def train_tuned(
    backbone,
    benchmark,
    weights,
    out,
    epochs,
    batch_size,
    lr,
    temperature,
    identity_weight,
    patience,
    seed,
    device,
    quiet,
):
    """Train AbC's two linear heads on a backbone's cached features (train part, val-selected).

    The result is usable as BACKBONE.tuned_BENCHMARK wherever a baseline name is accepted.
    """
    from baselines.tune_config import TuneConfig
    from baselines.tuned import read_heads
    from baselines.tuned import train_tuned as train
    from benchmark.benchmarks import resolve_benchmark
    from benchmark.paths import cache_root

    config = TuneConfig.from_options(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        temperature=temperature,
        identity_weight=identity_weight,
        patience=patience,
        seed=seed,
    )
    out = ensure_dir(out or cache_root() / "tuned", "--out")
    bench = resolve_benchmark(benchmark)

    def progress(epoch: int, loss: float, val_map: float) -> None:
        if not quiet:
            click.echo(f"epoch {epoch:3d}  loss {loss:.4f}  val mAP {val_map:.4f}")

    path = train(
        backbone,
        bench,
        out,
        config,
        weights=weights,
        device=device,
        progress=progress,
        show_progress=not quiet,
    )
    record = read_heads(path).record
    click.echo(
        f"selected epoch {record['selected_epoch']}: val mAP {record['val_mAP_selected']:.4f} "
        f"(identity heads {record['val_mAP_identity']:.4f})"
    )
    click.echo(f"wrote {path}")


@click.group(cls=FriendlyGroup)
def baselines() -> None:
    """Maintain the baseline catalog: pin weights, store calibrators."""


@baselines.command(name="calibrate")
@click.argument("name")
@click.option("--benchmark", "-b", default=None)
@weights_option
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder (default: the catalog's baselines/calibrators, where evaluate finds it).",
)
def baselines_calibrate(name, benchmark, weights, out):
    """Fit AbC's calibrator on a benchmark's val part and store it beside the catalog."""
    from baselines.calibrate import calibrator_record, store_calibrator
    from benchmark.benchmarks import resolve_benchmark

    if out is not None:
        ensure_dir(out, "--out", create=False)  # fail before the fit, not after it
    record = calibrator_record(name, resolve_benchmark(benchmark), weights)
    path = store_calibrator(record, out and ensure_dir(out, "--out"))
    c = record["calibrator"]
    click.echo(f"tau={c['temperature']:.4g} b={c['threshold']:.4g}; wrote {path}")


@baselines.command(name="pin")
@click.argument("names", nargs=-1)
def baselines_pin(names):
    """Record each weighted baseline's Hub revision and sha256 in weights.lock.json (network)."""
    from baselines.catalog import CATALOG
    from baselines.weights import pin_weights

    for name in names or [n for n, s in CATALOG.items() if s.weights is not None]:
        entry = pin_weights(name)
        click.echo(f"{name}\trevision {entry['revision']}\tsha256 {entry['sha256']}")
