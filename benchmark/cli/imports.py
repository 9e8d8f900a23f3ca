"""Importing other releases: the official AbC (``splits import-abc``), AbU's track
(``splits derive-abu``), precomputed features (``import-features``) and peers' score files
(``import-scores``). Registered on their groups in :mod:`benchmark.cli`."""

from __future__ import annotations

from pathlib import Path

import click

from benchmark.cli.common import FriendlyGroup, ensure_dir


@click.command(name="import-abc")
@click.argument("src", type=click.Path(path_type=Path))
@click.option("--dest", required=True, type=click.Path(path_type=Path), help="Benchmark folder.")
@click.option(
    "--test-cases",
    multiple=True,
    help="Parts to import, comma-separated (AbC aliases, train, val, all); default: the four "
    "test cases.",
)
@click.option("--pack", is_flag=True, help="Copy the images into Parquet shards.")
@click.option("--jobs", type=int, default=None, help="Hashing threads (default: up to 8).")
@click.option("--name", default="abc", show_default=True)
@click.option("--version", "version_", default="1.0.0", show_default=True)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def splits_import_abc(src, dest, test_cases, pack, jobs, name, version_, quiet):
    """Import the official AbC dataset/ folder SRC as a benchmark (resumable)."""
    from benchmark.abc_import import import_abc, parse_test_cases

    bench = import_abc(
        src,
        dest,
        parts=parse_test_cases(test_cases),
        pack=pack,
        jobs=jobs,
        name=name,
        version=version_,
        show_progress=not quiet,
    )
    click.echo(
        f"ok   {bench.name} {bench.version} in {dest}: {len(bench.models)} models, "
        f"{len(bench.queries)} queries, {len(bench.exemplar_ids)} exemplars, "
        f"{len(bench.distractor_ids)} distractors (manifest sha256 {bench.manifest_sha256[:12]})"
    )


@click.group(cls=FriendlyGroup, name="import-features")
def import_features() -> None:
    """Turn precomputed features of another release into a features submission."""


@import_features.command(name="abc")
@click.argument("feats_dir", type=click.Path(path_type=Path))
@click.option("--benchmark", "-b", required=True, help="The imported AbC benchmark.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Submission folder.")
def import_features_abc(feats_dir, benchmark, out):
    """AbC's feats/<model>/ folder (laion_subset.pth + per-test-case .pth) -> a submission."""
    from benchmark.abc_features import import_abc_features
    from benchmark.benchmarks import resolve_benchmark

    bench = resolve_benchmark(benchmark)
    path = import_abc_features(feats_dir, bench, out)
    click.echo(f"wrote {path} (evaluate it with --submission {path} --benchmark {benchmark})")


# --------------------------------------------------------------------------------------------
# AbU's track and peers' score files (benchmark/abu_track.py, import_scores.py)


@click.command(name="derive-abu")
@click.argument("benchmark")
@click.argument("tasks_json", type=click.Path(path_type=Path))
@click.option("--dest", required=True, type=click.Path(path_type=Path), help="View folder.")
@click.option(
    "--num-distractors",
    type=int,
    default=100_000,
    show_default=True,
    help="LAION rows in the gallery (the first, in sorted order): AbU's --laion_subset_size.",
)
@click.option("--partial", is_flag=True, help="Accept a task list other than AbU's 400.")
@click.option("--name", default=None, help="Default: the source's name + '-abu'.")
@click.option("--version", "version_", default=None, help="Default: the source's version.")
def splits_derive_abu(benchmark, tasks_json, dest, num_distractors, partial, name, version_):
    """AbU's 400-query track (TASKS_JSON = its all_tasks.json) as a view of an imported AbC."""
    from benchmark.abu_track import derive_abu
    from benchmark.benchmarks import resolve_benchmark

    view = derive_abu(
        resolve_benchmark(benchmark),
        tasks_json,
        dest,
        num_distractors=num_distractors,
        partial=partial,
        name=name,
        version=version_,
    )
    click.echo(
        f"ok   {view.name} {view.version} in {dest}: {len(view.queries)} queries of "
        f"{len(view.models)} models, {len(view.distractor_ids)} distractors (manifest sha256 "
        f"{view.manifest_sha256[:12]})"
    )


@click.command(name="import-scores")
@click.argument(
    "fmt", metavar="FORMAT", type=click.Choice(["abu", "train_x_query", "fastgda", "generic"])
)
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--benchmark", "-b", required=True, help="The benchmark the scores are for.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Submission folder.")
@click.option(
    "--orientation",
    type=click.Choice(["query_x_train", "train_x_query"]),
    default="query_x_train",
    show_default=True,
    help="generic: the matrix's axes.",
)
@click.option("--lower-is-better", is_flag=True, help="generic: lower score = more influential.")
@click.option(
    "--ids",
    nargs=2,
    type=click.Path(path_type=Path),
    default=None,
    metavar="QUERY_IDS GALLERY_IDS",
    help="Files naming the matrix's queries and gallery images, one id per line, in its order "
    "(default: queries.tsv and candidates.txt order from `attrib-bench export`).",
)
@click.option("--key", default=None, help="The array inside a dict file (dotted: test.rank).")
@click.option("--name", default=None, help="Submission name.")
def import_scores_cmd(fmt, file, benchmark, out, orientation, lower_is_better, ids, key, name):
    """Turn AbU / dattri / Journey-TRAK / FastGDA / generic score files into a dense submission."""
    from benchmark.benchmarks import resolve_benchmark
    from benchmark.import_scores import ScoreOptions, import_scores

    bench = resolve_benchmark(benchmark)
    opts = ScoreOptions(
        orientation=orientation,
        lower_is_better=lower_is_better,
        query_ids=ids[0] if ids else None,
        gallery_ids=ids[1] if ids else None,
        key=key,
        name=name,
    )
    path = import_scores(fmt, file, bench, ensure_dir(out, "--out"), opts)
    click.echo(f"wrote {path} (evaluate it with --submission {path} --benchmark {benchmark})")
