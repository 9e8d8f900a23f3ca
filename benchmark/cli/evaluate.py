"""Scoring commands: evaluate, selfcheck, validate, list, export, compare and report."""

from __future__ import annotations

import json
from pathlib import Path

import click

from benchmark.cli.common import (
    ensure_dir,
    report_benchmark,
    sandbox_options,
    submission_option,
    submission_or_baseline,
    weights_option,
)
from benchmark.cli.scale import scale_options, scaled_run
from benchmark.format import result_table
from benchmark.listing import WHAT


@click.command()
@submission_option("Submission folder (holding submission.yaml).")
@click.option(
    "--baseline",
    default=None,
    help="A catalog baseline instead of a submission (attrib-bench list baselines), "
    "e.g. pixels or dino_vitb16.tuned_abc-mini.",
)
@weights_option
@click.option(
    "--benchmark",
    "-b",
    default=None,
    help="Registered name, local folder or hf://OWNER/NAME@REVISION "
    "(default: the one submission.yaml names, else the embedded AbC-mini).",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder for result.json (default: results/<benchmark>/<submission>).",
)
@click.option(
    "--store",
    type=click.Path(path_type=Path),
    default=None,
    help="Also add the result to a results store (e.g. leaderboard/results).",
)
@click.option("--replace", is_flag=True, help="With --store: supersede an entry from other files.")
@click.option("--json", "as_json", is_flag=True, help="Print the result JSON instead of a table.")
@click.option("--seed", default=0, show_default=True, help="Bootstrap seed, 0 <= SEED < 2**63.")
@click.option(
    "--tie-policy",
    type=click.Choice(["pessimistic", "optimistic"]),
    default="pessimistic",
    show_default=True,
)
@click.option(
    "--bootstrap-samples",
    default=1000,
    show_default=True,
    help="Cluster-bootstrap resamples, 1 to 100,000.",
)
@click.option(
    "--ci-level",
    type=float,
    default=0.95,
    show_default=True,
    help="Confidence level of the intervals, strictly between 0 and 1.",
)
@click.option(
    "--device",
    default=None,
    help="torch device for extractors (default: cuda if available, else cpu).",
)
@click.option("--batch-size", type=int, default=None)
@click.option("--no-cache", is_flag=True, help="Do not read or write the feature cache.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@sandbox_options
@scale_options
def evaluate(
    submission,
    baseline,
    weights,
    benchmark,
    output,
    store,
    replace,
    as_json,
    seed,
    tie_policy,
    bootstrap_samples,
    ci_level,
    device,
    batch_size,
    no_cache,
    quiet,
    sandbox=None,
    scale=None,
):
    """Score a submission or a baseline; write result.json and print a table."""
    from benchmark.evaluation import EvalConfig, RunOptions
    from benchmark.evaluation import evaluate as run
    from benchmark.results import store_result, stored_result_path, write_result
    from benchmark.types import TiePolicy

    config = EvalConfig(
        seed=seed,
        tie_policy=TiePolicy(tie_policy),
        bootstrap_samples=bootstrap_samples,
        ci_level=ci_level,
    )
    options = RunOptions(
        device=device,
        batch_size=batch_size,
        progress=not quiet,
        cache=not no_cache,
        sandbox=sandbox,
    )
    if store is not None:  # only canonical results are ranked: refuse before the work
        from benchmark.store import check_canonical

        check_canonical(config.settings(), None, "--store")
    if output is not None:
        ensure_dir(output, "--output", create=False)  # fail before the work, not after it
    sub = submission_or_baseline(submission, baseline, weights)
    result = scaled_run(scale, run, sub, benchmark, config, options)
    if result is None:  # a shard wrote its partial counts, or a torchrun rank other than 0
        return
    out_dir = output or Path("results") / result["benchmark"]["name"] / result["submission"]["name"]
    path = write_result(result, ensure_dir(out_dir, "--output"))
    if as_json:
        click.echo(json.dumps(result, indent=1))
    else:
        click.echo(result_table(result))
        click.echo(f"wrote {path}")
    if store is not None:
        ensure_dir(stored_result_path(store, result).parent, "--store")
        stored = store_result(store, result, replace=replace)
        if not as_json:
            click.echo(f"stored {stored}")


@click.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--benchmark",
    "-b",
    default=None,
    help="Benchmark (default: the one named in submission.yaml, else abc-tiny).",
)
@sandbox_options
def selfcheck(path, benchmark, sandbox=None):
    """Check a submission end to end on a small benchmark before the real run."""
    from benchmark.checks import selfcheck as check

    for line in check(path, benchmark, sandbox):
        click.echo(line)


@click.command()
@click.argument("file", type=click.Path(path_type=Path))
def validate(file):
    """Validate a result.json, a benchmark manifest.json or a submission.yaml."""
    from benchmark.checks import validate_file

    click.echo(validate_file(file))


@click.command(name="list")
@click.argument(
    "what",
    type=click.Choice(list(WHAT)),
    default="benchmarks",
)
def list_(what):
    """List registered benchmarks, baselines, test cases or measures."""
    from benchmark.listing import listing

    click.echo("\n".join(listing(what)))


@click.command()
@click.option("--benchmark", "-b", default=None)
@click.option("--out", required=True, type=click.Path(path_type=Path))
def export(benchmark, out):
    """Write queries.tsv, candidates.txt and positives.tsv (the orders submissions follow)."""
    from benchmark.benchmarks import resolve_benchmark
    from benchmark.export import export_ids

    for path in export_ids(resolve_benchmark(benchmark), ensure_dir(out, "--out")):
        click.echo(f"wrote {path}")


@click.command()
@click.argument("a", type=click.Path(path_type=Path))
@click.argument("b", type=click.Path(path_type=Path))
@click.option("--measure", "-m", multiple=True, help="Measures to show (default: mAP, recall@10).")
@click.option("--seed", default=0, show_default=True, help="Bootstrap seed, 0 <= SEED < 2**63.")
def compare(a, b, measure, seed):
    """Paired differences A - B with cluster-bootstrap CIs."""
    from benchmark.compare import compare_results, comparison_lines
    from benchmark.results import load_result
    from benchmark.stats import check_seed

    check_seed(seed, "--seed")  # before reading anything
    ra, rb = load_result(a), load_result(b)
    rows = compare_results(ra, rb, seed=seed, names=(str(a), str(b)))
    click.echo("\n".join(comparison_lines(ra, rb, rows, measure or ("mAP", "recall@10"))))


@click.command()
@click.argument("result_file", metavar="RESULT", type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Reports folder: the page and PNGs go to OUT/<benchmark>@<version>/<submission>/ "
    "(default: beside RESULT, in reports/).",
)
@click.option(
    "--benchmark",
    "-b",
    default=None,
    help="Where the images are, for the gallery (default: the result's benchmark by name).",
)
def report(result_file, out, benchmark):
    """An HTML page with Recall@K curves, per-test-case bars, the reliability diagram and a
    gallery of queries with their top candidates."""
    from benchmark.report import write_report
    from benchmark.results import load_result

    result = load_result(result_file)
    bench = report_benchmark(result, benchmark)
    from benchmark.report import report_dir

    out = ensure_dir(report_dir(out or result_file.parent / "reports", result), "--out")
    path = write_report(result, out, bench)
    click.echo(f"wrote {path}")
