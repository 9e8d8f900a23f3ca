"""Scaling out from the command line: ``evaluate --shard I/N --partial-out DIR``,
``attrib-bench merge DIR...``, ``evaluate --approximate ivf|hnsw`` and torchrun
(``WORLD_SIZE`` > 1). See docs/scaling.md."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import Any

import click

from benchmark.cli.common import ensure_dir, submission_option
from benchmark.errors import AttribBenchError


@dataclass(frozen=True)
class Scale:
    """How ``evaluate`` splits or approximates its work (all off: one exact process)."""

    shard: str | None = None
    partial_out: Path | None = None
    approximate: Any = None  # benchmark.approximate.ApproxOptions


def scale_options(fn):
    """``--shard``, ``--partial-out``, ``--approximate`` and its knobs; passed to ``fn`` as
    ``scale=Scale``. Conflicting combinations are refused here, before any work."""

    @click.option(
        "--shard",
        default=None,
        metavar="I/N",
        help="Score distractor shard I of N (0-based) and write partial counts "
        "to --partial-out; combine them with attrib-bench merge.",
    )
    @click.option(
        "--partial-out",
        type=click.Path(path_type=Path),
        default=None,
        help="Folder for this shard's partial counts (shared by all shards).",
    )
    @click.option(
        "--approximate",
        type=click.Choice(["ivf", "hnsw"]),
        default=None,
        help="faiss candidate search plus exact re-scoring: flagged approximate, "
        "never stored on a leaderboard. Exact is the default.",
    )
    @click.option(
        "--candidates",
        type=int,
        default=1000,
        show_default=True,
        help="With --approximate: distractors re-scored exactly per query.",
    )
    @click.option("--nlist", type=int, default=None, help="With --approximate ivf: cells.")
    @click.option(
        "--nprobe",
        type=int,
        default=32,
        show_default=True,
        help="With --approximate ivf: cells visited per query.",
    )
    @click.option(
        "--ef-search",
        type=int,
        default=256,
        show_default=True,
        help="With --approximate hnsw: search breadth.",
    )
    @click.option(
        "--approx-sample",
        type=int,
        default=100,
        show_default=True,
        help="With --approximate: queries also scored exactly to measure recall loss.",
    )
    @wraps(fn)
    def wrapper(
        *args,
        shard,
        partial_out,
        approximate,
        candidates,
        nlist,
        nprobe,
        ef_search,
        approx_sample,
        **kwargs,
    ):
        def refuse(field: str, problem: str, fix: str):
            raise AttribBenchError(None, field, problem, fix)

        if (shard is None) != (partial_out is None):
            refuse("--shard", "--shard and --partial-out go together", "give both or neither")
        approx = None
        if approximate:
            from benchmark.approximate import ApproxOptions

            if shard is not None:
                refuse("--approximate", "cannot be sharded", "drop --shard or --approximate")
            if kwargs.get("store") is not None:
                refuse("--store", "approximate results are not canonical", "drop --store")
            approx = ApproxOptions(
                approximate,
                candidates,
                nlist,
                nprobe,
                ef_search=ef_search,
                sample=approx_sample,
                seed=kwargs.get("seed", 0),
            )
        if shard is not None:
            from benchmark.shards import Shard

            Shard.parse(shard)
            for opt in ("store", "output"):
                if kwargs.get(opt) is not None:
                    refuse(
                        f"--{opt}",
                        "a shard writes partial counts only",
                        f"pass --{opt} to attrib-bench merge",
                    )
        return fn(*args, scale=Scale(shard, partial_out, approx), **kwargs)

    return wrapper


def scaled_run(scale: Scale | None, run, submission, benchmark, config, options):
    """The result to write, or None where this process writes none (a shard, which writes
    its partial; a torchrun rank other than 0)."""
    from benchmark.distributed import is_distributed

    if scale is not None and scale.shard is not None:
        from benchmark.shards import Shard, evaluate_shard

        out = ensure_dir(scale.partial_out, "--partial-out")
        path = evaluate_shard(submission, benchmark, Shard.parse(scale.shard), out, config, options)
        click.echo(f"wrote {path}")
        return None
    if scale is not None and scale.approximate is not None:
        from benchmark.approximate import evaluate_approximate

        return evaluate_approximate(submission, benchmark, config, options, scale.approximate)
    if is_distributed():
        from benchmark.distributed import evaluate_distributed, finish

        try:
            return evaluate_distributed(submission, benchmark, config, options)
        finally:
            finish()
    return run(submission, benchmark, config, options)


@click.command()
@click.argument("dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--output",
    "-o",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder for result.json (default: results/<benchmark>/<submission>).",
)
@submission_option("The submission folder (default: the path the shards recorded).")
@click.option(
    "--benchmark",
    "-b",
    default=None,
    help="The benchmark (default: the folder the shards recorded).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result JSON instead of a table.")
def merge(dirs, output, submission, benchmark, as_json):
    """Merge the partial counts of evaluate --shard runs into one result.json.

    Checks the partials are of one run (benchmark, submission, settings), complete and
    disjoint; the result equals a one-process run's apart from created and timings."""
    from benchmark.format import result_table
    from benchmark.results import write_result
    from benchmark.shards import merge as run_merge

    if output is not None:
        ensure_dir(output, "--output", create=False)
    result = run_merge(list(dirs), submission, benchmark)
    out_dir = output or Path("results") / result["benchmark"]["name"] / result["submission"]["name"]
    path = write_result(result, ensure_dir(out_dir, "--output"))
    if as_json:
        click.echo(json.dumps(result, indent=1))
    else:
        click.echo(result_table(result))
        click.echo(f"wrote {path}")
