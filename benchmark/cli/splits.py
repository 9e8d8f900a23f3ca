"""``attrib-bench splits ...``: build, verify, check and publish benchmark versions."""

from __future__ import annotations

from pathlib import Path

import click

from benchmark.cli.common import FriendlyGroup
from benchmark.errors import AttribBenchError


@click.group(cls=FriendlyGroup)
def splits() -> None:
    """Build, verify, check and publish benchmark versions (the reference generation pipeline)."""


@splits.command(name="verify")
@click.argument("benchmark", default=None, required=False)
@click.option("--quick", is_flag=True, help="Check file sizes only (no hashing).")
def splits_verify(benchmark, quick):
    """Re-hash every shard of a benchmark (a folder, hf://..., or a registered name)."""
    from benchmark.checks import verify_benchmark_files

    click.echo(verify_benchmark_files(benchmark, quick=quick))


@splits.command(name="push")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--repo-id", required=True, help="Hugging Face dataset repo, OWNER/NAME.")
@click.option("--dry-run", is_flag=True, help="List what would be uploaded; contact nothing.")
@click.option("--create-pr", is_flag=True, help="Open a pull request instead of committing.")
def splits_push(path, repo_id, dry_run, create_pr):
    """Publish a frozen benchmark folder as a Hugging Face dataset (one commit, tagged)."""
    from benchmark.publish import planned_uploads, push_benchmark

    if dry_run:
        uploads = planned_uploads(path)
        for u in uploads:
            click.echo(f"add  {u.path_in_repo}  ({u.num_bytes} bytes)")
        total = sum(u.num_bytes for u in uploads)
        click.echo(f"dry run: {len(uploads)} files, {total} bytes to {repo_id} (nothing sent)")
        return
    click.echo(push_benchmark(path, repo_id, create_pr=create_pr))


_sources_cache = click.option(
    "--cache",
    type=click.Path(path_type=Path),
    default=None,
    help="Where sources are unpacked (default: the attrib-bench cache).",
)


@splits.command(name="pretrain")
@click.argument("config")
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path),
    help="Run folder: checkpoints/, train_log.tsv and, when done, pipeline/.",
)
@_sources_cache
@click.option(
    "--install",
    is_flag=True,
    help="When done, copy the model (and its training log) to the recipe's base_model folder.",
)
@click.option(
    "--device",
    default="cpu",
    show_default=True,
    help="Train on this torch device (cuda, cuda:1, ...); randomness stays on the CPU.",
)
@click.option(
    "--pool",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Train on the images of an --export-pool file (no source packages needed).",
)
@click.option(
    "--export-pool",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the recipe's pretraining images and captions to this .npz and stop.",
)
def splits_pretrain(config, out, cache, install, device, pool, export_pool):
    """Pretrain the tiny base model of CONFIG (resumable: rerun the same command)."""
    from splits.generate.pretrain import install_base_model, pretrain_recipe

    path, num_images = pretrain_recipe(config, out, cache, device, pool, export_pool)
    if export_pool is not None:
        click.echo(f"wrote {path} ({num_images} pretraining images)")
        return
    click.echo(f"wrote {path} ({num_images} training images)")
    if install:
        click.echo(f"installed as {install_base_model(config, out)}")


@splits.command(name="audit")
@click.argument("config")
@_sources_cache
def splits_audit(config, cache):
    """Compare CONFIG's images by rendering: repeated ids, blank images, exemplar copies in
    pretraining (the checks `domain.content_checks` applies)."""
    from splits.generate.config import load_recipe
    from splits.generate.pool import audit_recipe

    recipe = load_recipe(config)
    checks = "on" if recipe.domain.content_checks else "off"
    click.echo(f"{recipe.name} {recipe.version} (content checks {checks})")
    for name, value in audit_recipe(cache, recipe.domain).items():
        click.echo(f"  {name}: {value}")


@splits.command(name="generate")
@click.argument("config")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Run folder.")
@click.option("--num-shards", default=1, show_default=True, help="Split models over machines.")
@click.option("--shard-index", default=0, show_default=True)
@click.option(
    "--models",
    "patterns",
    multiple=True,
    help="Only models whose id matches this glob (repeatable), e.g. 'object-unseen-00*': "
    "probe a recipe change on a few models.",
)
@click.option(
    "--jobs",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Models generated at once, one process of one torch thread each (set it to the "
    "number of cores: ~1.4x faster on 2 cores than one process using both).",
)
@click.option(
    "--deltas-from",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    default=None,
    help="Another run folder: models it finished with the same customization are not "
    "customized again, their deltas are copied and only sampling runs (a sampler or prompt "
    "change, or a customization change for one kind of model); the others are customized.",
)
@_sources_cache
def splits_generate(config, out, num_shards, shard_index, patterns, jobs, deltas_from, cache):
    """Customize and sample every model of CONFIG (resumable; rerun to continue)."""
    from benchmark.progress import progress_bar
    from splits.generate.config import load_recipe
    from splits.generate.pipeline import generate_in_parallel, select_models
    from splits.generate.pool import load_domain

    if not 0 <= shard_index < num_shards:
        raise AttribBenchError(
            None,
            "--shard-index",
            f"{shard_index} is not in [0, {num_shards})",
            "use 0 .. num-shards - 1",
        )
    recipe = load_recipe(config)
    domain = load_domain(cache, recipe.domain)
    mine = len(select_models(domain.models[shard_index::num_shards], patterns))
    if not mine:
        raise AttribBenchError(
            None, "--models", f"no model of {config} matches {list(patterns)}",
            "match model ids such as object-seen-obj-000, object-unseen-000, "
            "train-style-000, style-unseen-000",
        )  # fmt: skip
    with progress_bar(mine, "customized models") as bar:
        folders = generate_in_parallel(
            domain,
            recipe.generate,
            out,
            jobs,
            num_shards=num_shards,
            shard_index=shard_index,
            progress=lambda _: bar(1),
            only=patterns,
            deltas_from=deltas_from,
        )
    click.echo(f"{len(folders)} models done in {out}/models (shard {shard_index}/{num_shards})")


@splits.command(name="report")
@click.argument("config")
@click.option("--run", "run_dir", required=True, type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("docs/generation-report.md"),
    show_default=True,
    help="Markdown report; the numbers go beside it as .json.",
)
@click.option("--sheet", type=click.Path(path_type=Path), default=None, help="Contact sheet PNG.")
@click.option("--sheet-models", default=10, show_default=True)
@click.option(
    "--previous",
    type=click.Path(path_type=Path),
    default=None,
    help="An earlier version's report JSON: print and write both versions side by side.",
)
@_sources_cache
def splits_report(config, run_dir, out, sheet, sheet_models, previous, cache):
    """Signal check of a generation run: customized vs base samples, and a contact sheet."""
    import functools
    import os

    from baselines.noweight import ColorHistogram, Pixels
    from splits.generate import report
    from splits.generate.config import load_recipe
    from splits.generate.pipeline import encode
    from splits.generate.pool import load_domain

    recipe = load_recipe(config)
    earlier = None
    if previous is not None:
        try:
            earlier = report.load_report(previous)
        except (OSError, ValueError) as exc:
            raise AttribBenchError(
                previous, None, f"cannot read report ({exc})", "pass a report's .json"
            ) from None
    domain = load_domain(cache, recipe.domain)
    samples = report.collect(domain, run_dir)
    if not samples:
        raise AttribBenchError(
            run_dir, "models/*/base", "no base-model samples", "generate with base_samples true"
        )
    size = recipe.generate.image_size
    stored = functools.partial(encode, cfg=recipe.generate)
    results = [
        report.signal(domain, samples, feature, size, progress=click.echo, stored=stored)
        for feature in (Pixels(16), ColorHistogram(8))
    ]
    sheet_rel = None
    if sheet:
        done = list(dict.fromkeys(s.model_id for s in samples))
        step = max(1, len(done) // sheet_models)
        report.contact_sheet(domain, run_dir, done[::step][:sheet_models], sheet, image_size=size)
        sheet_rel = os.path.relpath(sheet, Path(out).parent)
    path = report.write_report(
        out,
        recipe_name=recipe.name,
        results=results,
        seconds=report.generation_seconds(domain, run_dir),
        sheet=sheet_rel,
        version=recipe.version,
        previous=earlier,
    )
    click.echo(report.markdown_table(results[0], "mAP", prompt_types=False))
    if earlier is not None:
        current = {"version": recipe.version, "results": results}
        click.echo(report.comparison_table(earlier, current, "recall@10"))
    click.echo(f"wrote {path}")


@splits.command(name="freeze")
@click.argument("config")
@click.option("--run", "run_dir", required=True, type=click.Path(path_type=Path))
@click.option("--dest", required=True, type=click.Path(path_type=Path))
@_sources_cache
def splits_freeze(config, run_dir, dest, cache):
    """Write the benchmark folder (Parquet shards, card, manifest) from a finished run."""
    from splits.generate.config import load_recipe
    from splits.generate.pipeline import freeze
    from splits.generate.pool import load_domain

    recipe = load_recipe(config)
    domain = load_domain(cache, recipe.domain)
    bench = freeze(
        domain,
        recipe.generate,
        run_dir,
        dest,
        name=recipe.name,
        version=recipe.version,
        description=recipe.description,
    )
    click.echo(
        f"froze {bench.name} {bench.version} into {dest} "
        f"(manifest sha256 {bench.manifest_sha256[:12]})"
    )
