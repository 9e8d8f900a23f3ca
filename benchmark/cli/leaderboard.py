"""``attrib-bench leaderboard ...``: the results store, verification, the site, publishing."""

from __future__ import annotations

from pathlib import Path

import click

from benchmark.cli.common import (
    FriendlyGroup,
    report_benchmark,
    sandbox_options,
    submission_or_baseline,
    weights_option,
)


@click.group(cls=FriendlyGroup)
def leaderboard() -> None:
    """Results store, verification, the static site and publishing."""


_root_option = click.option(
    "--root",
    type=click.Path(path_type=Path),
    default=Path("leaderboard"),
    show_default=True,
    help="Leaderboard folder (results/, verified.json, README.md, site/).",
)


@leaderboard.command(name="add")
@click.argument("result_file", metavar="RESULT", type=click.Path(path_type=Path))
@_root_option
@click.option(
    "--replace", is_flag=True, help="Supersede the stored entry (a verified one loses its badge)."
)
def leaderboard_add(result_file, root, replace):
    """Add a result.json to the store (what a contributor's pull request contains).

    Refused with one line: a result that is not canonical, not on a registered benchmark
    version, with an invalid name or insane values, or whose key is taken (without --replace).
    """
    from benchmark.results import load_result
    from benchmark.store import store_result

    result = load_result(result_file)
    path = store_result(root / "results", result, replace=replace, source=result_file)
    click.echo(f"stored {path}")


@leaderboard.command(name="verify")
@click.option("--submission", "-s", type=click.Path(path_type=Path), default=None)
@click.option("--baseline", default=None)
@weights_option
@click.option("--benchmark", "-b", default=None)
@_root_option
@sandbox_options
def leaderboard_verify(submission, baseline, weights, benchmark, root, sandbox=None):
    """Re-run an entry with the canonical settings; if it reproduces the submitted metrics,
    the re-run replaces the stored file and is marked verified, else nothing changes."""
    from benchmark.verification import reverify

    sub = submission_or_baseline(submission, baseline, weights)
    bench, name, record = reverify(root, sub, benchmark, sandbox)
    click.echo(
        f"verified {bench.name}@{bench.version}/{name}: the stored file is now the "
        f"canonical re-run (largest metric difference {record['max_abs_metric_difference']:.2g})"
    )


@leaderboard.command(name="build")
@_root_option
@click.option("--no-reports", is_flag=True, help="Only README.md and site/index.html.")
def leaderboard_build(root, no_reports):
    """Write README.md (markdown table) and site/ (sortable page + one report per entry)."""
    from benchmark.leaderboard import build

    cache: dict[str, object] = {}

    def benchmark_for(result):
        key = result["benchmark"]["manifest_sha256"]
        if key not in cache:
            cache[key] = report_benchmark(result, None)
        return cache[key]

    paths = build(root, reports=not no_reports, benchmark_for=benchmark_for, progress=click.echo)
    click.echo(f"wrote {len(paths)} files: {paths[0]}, {paths[-1]}")


@leaderboard.command(name="push")
@click.option(
    "--repo-id", default=None, help="Hugging Face dataset repo for the results, OWNER/NAME."
)
@click.option(
    "--space-id", default=None, help="Static Hugging Face Space for the built site, OWNER/NAME."
)
@_root_option
@click.option(
    "--benchmark", "-b", default=None, help="NAME@VERSION (needed if the store has several)."
)
@click.option("--dry-run", is_flag=True, help="List the operations; upload nothing.")
@click.option("--create-pr", is_flag=True, help="Open a pull request (no write access needed).")
@click.option("--token", default=None, help="Hugging Face token (default: the logged-in one).")
def leaderboard_push(repo_id, space_id, root, benchmark, dry_run, create_pr, token):
    """Publish results (and their site) to a dataset repo, merging by entry key, and/or the
    built site to a static Space; each in one commit."""
    from huggingface_hub import HfApi

    from benchmark.leaderboard import plan_push, push
    from benchmark.publish import plan_site, push_site

    if not repo_id and not space_id:
        raise click.UsageError("give --repo-id (results), --space-id (site) or both")
    api = HfApi(token=token)
    plans = []
    if repo_id:
        plans.append((plan_push(root, repo_id, api, benchmark), push))
    if space_id:
        plans.append((plan_site(root, space_id), push_site))
    for plan, _ in plans:
        for line in plan.describe():
            click.echo(line)
    if dry_run:
        click.echo("dry run: nothing uploaded")
        return
    for plan, upload in plans:
        info = upload(plan, api, create_pr=create_pr)
        click.echo(f"pushed: {getattr(info, 'pr_url', None) or getattr(info, 'commit_url', info)}")
