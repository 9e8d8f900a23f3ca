"""``attrib-bench``: a thin command line over the library.

Every user-facing problem is an :class:`~benchmark.errors.AttribBenchError`; the CLI prints
its one line and exits with status 2, never a traceback.
"""

from __future__ import annotations

import json
import sys
from functools import wraps
from pathlib import Path

import click

from benchmark import __version__
from benchmark.errors import AttribBenchError

EXIT_USER_ERROR = 2


def _friendly(fn):
    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except AttribBenchError as exc:
            click.echo(f"error: {exc.line()}", err=True)
            sys.exit(EXIT_USER_ERROR)

    return wrapper


@click.group()
@click.version_option(__version__, prog_name="attrib-bench")
def main() -> None:
    """Evaluate training-data attribution for text-to-image models (the AbC protocol)."""


def ensure_dir(path: Path, option: str, create: bool = True) -> Path:
    """Check (and by default create) an output folder; fail with one line if impossible.

    With ``create=False`` nothing is written: the check runs before a long job so that a bad
    path fails at once instead of after the work.
    """
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise AttribBenchError(
            existing, option, "is taken by a file, not a folder", "choose another folder"
        )
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise AttribBenchError(
                path,
                option,
                f"cannot create the folder ({exc.strerror})",
                "choose a writable folder",
            ) from None
    return path


def _format_estimate(est: dict) -> str:
    if est.get("value") is None:
        return f"[{est['lower']:.3f}, {est['upper']:.3f}]"
    return f"{est['value']:.3f} [{est['ci_low']:.3f}, {est['ci_high']:.3f}]"


UNIFORM_THRESHOLD = 1e3


def columns(rows: list[list[str]]) -> list[str]:
    """Left-aligned columns; the first row is the header, underlined."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def render_table(result: dict) -> str:
    """The human-readable summary printed by ``evaluate``."""
    measures = ("mAP", "recall@5", "recall@10", "recall@100")
    head = ["test case", "prompt", "models", "queries", *measures]
    rows = [head]
    for cell in result["metrics"]:
        rows.append(
            [
                cell["test_case"],
                cell["prompt_type"],
                str(cell["num_models"]),
                str(cell["num_queries"]),
                *(_format_estimate(cell["metrics"][m]) for m in measures),
            ]
        )
    lines = columns(rows)
    b, s = result["benchmark"], result["submission"]
    title = (
        f"{s['name']} ({s['kind']}) on {b['name']} {b['version']} - "
        f"mean [{result['settings']['ci_level']:.0%} cluster-bootstrap CI], "
        f"ties {result['settings']['tie_policy']}"
    )
    out = [title, *lines]
    cal = result["calibration"]
    if "test" in cal:
        t, c = cal["test"], cal["calibrator"]
        # A threshold this far above exp(0) = 1 flattens every query's distribution: the fit
        # found the val scores carry no usable confidence. Say so rather than print a tau
        # that no longer matters.
        fit = (
            f"uniform over the candidates, b={c['threshold']:.3g}"
            if c["threshold"] > UNIFORM_THRESHOLD
            else f"tau={c['temperature']:.4g}, b={c['threshold']:.4g}"
        )
        out.append(
            f"calibration ({'fit on val' if cal['fitted_on'] == 'val' else 'stored'}, "
            f"{fit}): exemplar NLL {t['exemplar_nll']:.3f}, "
            f"exemplar mass {t['exemplar_mass']:.3f}, ECE {t['ece']:.4f}"
        )
    else:
        out.append(f"calibration skipped: {cal.get('skipped')}")
    out += [f"note: {f}" for f in result["flags"]]
    return "\n".join(out)


_weights_option = click.option(
    "--weights",
    type=click.Path(path_type=Path),
    default=None,
    help="Baseline weights: the file, or a folder of checkpoints "
    "(default: $ATTRIB_BENCH_WEIGHTS, then the Hugging Face / download cache).",
)


def _sandbox_options(fn):
    """``--timeout``, ``--memory-limit``, ``--isolation``, ``--trust-code``: how submitted
    extractor code runs (benchmark.sandbox); passed to ``fn`` as ``sandbox=SandboxOptions``.
    Put it directly above the ``def`` (under ``_friendly``) so bad values are one line."""

    @click.option(
        "--timeout",
        type=float,
        default=None,
        help="Wall-clock limit in seconds for running submitted extractor code (default: none).",
    )
    @click.option(
        "--memory-limit",
        default=None,
        help="Memory limit of the extractor's process, e.g. 4G (RLIMIT_DATA; torch alone "
        "takes about 1G).",
    )
    @click.option(
        "--isolation",
        type=click.Choice(["auto", "bwrap", "unshare"]),
        default="auto",
        show_default=True,
        help="Sandbox for submitted code: bubblewrap, else unshare (auto), or force one.",
    )
    @click.option(
        "--trust-code",
        is_flag=True,
        help="Run submitted code WITHOUT a sandbox (still in a child process) where no "
        "sandbox works; recorded in the result. Review the code first.",
    )
    @wraps(fn)
    def wrapper(*args, timeout, memory_limit, isolation, trust_code, **kwargs):
        from benchmark.sandbox import SandboxOptions

        sandbox = SandboxOptions(isolation, trust_code, timeout, memory_limit)
        return fn(*args, sandbox=sandbox, **kwargs)

    return wrapper


def _submission_or_baseline(submission, baseline, weights):
    """The submission to evaluate: a folder, or a catalog baseline by name."""
    if (submission is None) == (baseline is None):
        raise AttribBenchError(
            None,
            "--submission/--baseline",
            "give exactly one of them",
            "e.g. --submission submissions/example_extractor or --baseline pixels",
        )
    if baseline is None:
        if weights is not None:
            raise AttribBenchError(
                None, "--weights", "applies to --baseline only", "drop --weights"
            )
        return submission
    from baselines.models import baseline_submission

    return baseline_submission(baseline, weights)


@main.command()
@click.option(
    "--submission",
    "-s",
    type=click.Path(path_type=Path),
    default=None,
    help="Submission folder (holding submission.yaml).",
)
@click.option(
    "--baseline",
    default=None,
    help="A catalog baseline instead of a submission (attrib-bench list baselines), "
    "e.g. pixels or dino_vitb16.tuned_abc-mini.",
)
@_weights_option
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
@_friendly
@_sandbox_options
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
    result = run(_submission_or_baseline(submission, baseline, weights), benchmark, config, options)
    out_dir = output or Path("results") / result["benchmark"]["name"] / result["submission"]["name"]
    path = write_result(result, ensure_dir(out_dir, "--output"))
    if as_json:
        click.echo(json.dumps(result, indent=1))
    else:
        click.echo(render_table(result))
        click.echo(f"wrote {path}")
    if store is not None:
        ensure_dir(stored_result_path(store, result).parent, "--store")
        stored = store_result(store, result, replace=replace)
        if not as_json:
            click.echo(f"stored {stored}")


@main.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--benchmark",
    "-b",
    default=None,
    help="Benchmark (default: the one named in submission.yaml, else abc-tiny).",
)
@_friendly
@_sandbox_options
def selfcheck(path, benchmark, sandbox=None):
    """Check a submission end to end on a small benchmark before the real run."""
    from benchmark.evaluation import EvalConfig, RunOptions
    from benchmark.evaluation import evaluate as run
    from benchmark.submission import load_submission

    sub = load_submission(path)
    click.echo(f"ok   submission.yaml is valid ({sub.kind}, {len(sub.file_hashes)} files)")
    bench_spec = benchmark or sub.config.get("benchmark", "abc-tiny").partition("@")[0]
    result = run(
        sub,
        bench_spec,
        EvalConfig(bootstrap_samples=200),
        RunOptions(progress=False, cache=False, sandbox=sandbox),
    )
    n = len(result["queries"])
    click.echo(
        f"ok   scored {n} queries on {result['benchmark']['name']} {result['benchmark']['version']}"
    )
    for cell in result["metrics"]:
        click.echo(
            f"     {cell['test_case']:<14} {cell['prompt_type']:<7} mAP "
            f"{_format_estimate(cell['metrics']['mAP'])}"
        )
    for flag in result["flags"]:
        click.echo(f"note {flag}")
    click.echo("selfcheck passed")


@main.command()
@click.argument("file", type=click.Path(path_type=Path))
@_friendly
def validate(file):
    """Validate a result.json, a benchmark manifest.json or a submission.yaml."""
    from benchmark.fileio import read_json
    from benchmark.results import load_result
    from benchmark.schemas import validate as check
    from benchmark.submission import load_submission

    if file.name == "submission.yaml" or file.is_dir():
        sub = load_submission(file)
        click.echo(f"{file}: valid submission ({sub.kind})")
        return
    data = read_json(file)
    if isinstance(data, dict) and "tables" in data:
        check(data, "manifest", file)
        click.echo(f"{file}: valid manifest ({data['name']} {data['version']})")
        return
    load_result(file)
    click.echo(f"{file}: valid result")


@main.command(name="list")
@click.argument(
    "what",
    type=click.Choice(["benchmarks", "baselines", "test-cases", "measures"]),
    default="benchmarks",
)
def list_(what):
    """List registered benchmarks, baselines, test cases or measures."""
    if what == "baselines":
        from baselines.catalog import SPECS, pin
        from baselines.tuned import available_tuned

        rows = [["name", "dim", "preprocessing", "weights", "pinned", "license", "AbC"]]
        for spec in SPECS:
            lock = pin(spec.name)
            pinned = "-" if spec.weights is None else "sha256" if lock.get("sha256") else "no"
            if lock.get("revision"):
                pinned += "+revision"
            rows.append(
                [
                    spec.name,
                    str(spec.dim),
                    spec.preprocess.describe() if spec.preprocess else "-",
                    spec.weights.source if spec.weights else "none",
                    pinned,
                    spec.license,
                    "yes" if spec.in_abc else "",
                ]
            )
        rows += [
            [name, "", "tuned heads", str(path), "", "", ""] for name, path in available_tuned()
        ]
        click.echo("\n".join(columns(rows)))
    elif what == "benchmarks":
        from benchmark.benchmarks import BENCHMARKS, DEFAULT_BENCHMARK

        for e in BENCHMARKS.entries():
            mark = " (default)" if e.name == DEFAULT_BENCHMARK else ""
            click.echo(f"{e.name}{mark}\t{e.description}")
    elif what == "test-cases":
        from benchmark.types import PART_ALIASES, Part

        for p in Part:
            aliases = sorted(a for a, t in PART_ALIASES.items() if t is p)
            click.echo(f"{p.value}\t{'test' if p.is_test else 'tuning'}\t{', '.join(aliases)}")
    else:
        from benchmark.metrics import MEASURES

        for m in MEASURES:
            click.echo(f"{m.name}\t{'higher' if m.higher_is_better else 'lower'} is better")


@main.command()
@click.option("--benchmark", "-b", default=None)
@click.option("--out", required=True, type=click.Path(path_type=Path))
@_friendly
def export(benchmark, out):
    """Write queries.tsv, candidates.txt and positives.tsv (the orders submissions follow)."""
    from benchmark.benchmarks import resolve_benchmark
    from benchmark.export import export_ids

    for path in export_ids(resolve_benchmark(benchmark), ensure_dir(out, "--out")):
        click.echo(f"wrote {path}")


@main.command()
@click.argument("a", type=click.Path(path_type=Path))
@click.argument("b", type=click.Path(path_type=Path))
@click.option("--measure", "-m", multiple=True, help="Measures to show (default: mAP, recall@10).")
@click.option("--seed", default=0, show_default=True, help="Bootstrap seed, 0 <= SEED < 2**63.")
@_friendly
def compare(a, b, measure, seed):
    """Paired differences A - B with cluster-bootstrap CIs."""
    from benchmark.compare import compare_results
    from benchmark.results import load_result
    from benchmark.stats import check_seed

    check_seed(seed, "--seed")  # before reading anything
    ra, rb = load_result(a), load_result(b)
    rows = compare_results(ra, rb, seed=seed, names=(str(a), str(b)))
    shown = set(measure or ("mAP", "recall@10"))
    click.echo(
        f"A = {ra['submission']['name']}, B = {rb['submission']['name']} "
        f"({ra['benchmark']['name']} {ra['benchmark']['version']})"
    )
    click.echo(
        f"{'test case':<14} {'prompt':<7} {'measure':<10} {'A':>7} {'B':>7} {'A-B':>7}  95% CI"
    )
    for r in rows:
        if r["measure"] not in shown:
            continue
        star = " *" if r["significant"] else ""
        click.echo(
            f"{r['test_case']:<14} {r['prompt_type']:<7} {r['measure']:<10} "
            f"{r['a']:7.3f} {r['b']:7.3f} {r['diff']:+7.3f}  "
            f"[{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]{star}"
        )
    click.echo("* the interval excludes 0")


@main.group()
def splits() -> None:
    """Build, verify, check and publish benchmark versions (the reference generation pipeline)."""


@splits.command(name="verify")
@click.argument("benchmark", default=None, required=False)
@click.option("--quick", is_flag=True, help="Check file sizes only (no hashing).")
@_friendly
def splits_verify(benchmark, quick):
    """Re-hash every shard of a benchmark (a folder, hf://..., or a registered name)."""
    from benchmark.benchmarks import resolve_benchmark
    from benchmark.folder_benchmark import FolderBenchmark, verify_files
    from benchmark.splits import verify_benchmark

    bench = resolve_benchmark(benchmark)
    if quick or isinstance(bench, FolderBenchmark):  # also the images under the source folder
        info = verify_files(bench, quick=quick)
        click.echo(
            f"ok   {bench.name} {bench.version}: {info.pop('files')} files match manifest.json "
            f"({info.pop('mode')}); " + ", ".join(f"{n} {k}" for k, n in info.items())
        )
        return
    counts = verify_benchmark(bench.root)
    files = sum(len(t["files"]) for t in bench.manifest["tables"].values())
    click.echo(
        f"ok   {bench.name} {bench.version}: {files} shards match manifest.json "
        f"(sha256 {bench.manifest_sha256[:12]}); "
        + ", ".join(f"{n} {k}" for k, n in counts.items())
    )


@splits.command(name="push")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--repo-id", required=True, help="Hugging Face dataset repo, OWNER/NAME.")
@click.option("--dry-run", is_flag=True, help="List what would be uploaded; contact nothing.")
@click.option("--create-pr", is_flag=True, help="Open a pull request instead of committing.")
@_friendly
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
@_friendly
def splits_pretrain(config, out, cache, install):
    """Pretrain the tiny base model of CONFIG (resumable: rerun the same command)."""
    from benchmark.progress import progress_bar
    from splits.generate.config import load_recipe
    from splits.generate.pool import load_domain, load_images
    from splits.generate.pretrain import pretrain
    from splits.generate.sample import prompt_words

    recipe = load_recipe(config)
    if not Path(recipe.generate.base_model).is_absolute():
        raise AttribBenchError(
            config,
            "base_model",
            f"{recipe.generate.base_model} is a Hub model; there is nothing to pretrain",
            "pretrain recipes with a local base_model folder (abc-mini)",
        )
    domain = load_domain(cache, recipe.domain)
    with progress_bar(len(domain.pretrain), "loading images") as bar:
        images = load_images(domain.pretrain, recipe.model.image_size, bar)
    cfg = recipe.pretrain
    log = Path(out) / "train_log.tsv"
    log.parent.mkdir(parents=True, exist_ok=True)
    with progress_bar(cfg.vae_steps + cfg.unet_steps, "pretraining") as bar:
        shown = [0]

        def progress(stage: str, step: int, loss: float) -> None:
            done = step + (cfg.vae_steps if stage == "unet" else 0)  # absolute, across resumes
            bar(done - shown[0])
            shown[0] = done
            if step % 50 == 0:
                with log.open("a") as f:
                    f.write(f"{stage}\t{step}\t{loss:.5f}\n")

        path = pretrain(
            out, images, list(domain.captions), recipe.model, cfg, progress, prompt_words()
        )
    click.echo(f"wrote {path} ({len(images)} training images)")
    if install:
        import shutil

        target = Path(recipe.generate.base_model)
        shutil.copytree(path, target, dirs_exist_ok=True)
        shutil.copy2(log, target / "train_log.tsv")
        click.echo(f"installed as {target}")


@splits.command(name="generate")
@click.argument("config")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Run folder.")
@click.option("--num-shards", default=1, show_default=True, help="Split models over machines.")
@click.option("--shard-index", default=0, show_default=True)
@_sources_cache
@_friendly
def splits_generate(config, out, num_shards, shard_index, cache):
    """Customize and sample every model of CONFIG (resumable; rerun to continue)."""
    from benchmark.progress import progress_bar
    from splits.generate.config import load_recipe
    from splits.generate.pipeline import generate_models
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
    mine = len(domain.models[shard_index::num_shards])
    with progress_bar(mine, "customized models") as bar:
        folders = generate_models(
            domain,
            recipe.generate,
            out,
            num_shards=num_shards,
            shard_index=shard_index,
            progress=lambda _: bar(1),
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
@_friendly
def splits_report(config, run_dir, out, sheet, sheet_models, previous, cache):
    """Signal check of a generation run: customized vs base samples, and a contact sheet."""
    import os

    from baselines.noweight import ColorHistogram, Pixels
    from splits.generate import report
    from splits.generate.config import load_recipe
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
    results = [
        report.signal(domain, samples, feature, size, progress=click.echo)
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
@_friendly
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


@main.command()
@click.argument("result_file", metavar="RESULT", type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder for index.html and the PNGs (default: beside RESULT, in report/).",
)
@click.option(
    "--benchmark",
    "-b",
    default=None,
    help="Where the images are, for the gallery (default: the result's benchmark by name).",
)
@_friendly
def report(result_file, out, benchmark):
    """An HTML page with Recall@K curves, per-test-case bars, the reliability diagram and a
    gallery of queries with their top candidates."""
    from benchmark.report import write_report
    from benchmark.results import load_result

    result = load_result(result_file)
    bench = _report_benchmark(result, benchmark)
    out = ensure_dir(out or result_file.parent / "report", "--out")
    path = write_report(result, out, bench)
    click.echo(f"wrote {path}")


def _report_benchmark(result: dict, spec: str | None):
    """The result's benchmark for report galleries, or None (with a note) if unavailable."""
    from benchmark.benchmarks import resolve_benchmark

    b = result["benchmark"]
    try:
        bench = resolve_benchmark(spec or b["name"])
    except AttribBenchError as exc:
        click.echo(f"note: no gallery ({exc.problem})", err=True)
        return None
    if bench.manifest_sha256 != b["manifest_sha256"]:
        click.echo(
            f"note: no gallery ({bench.name} {bench.version} is not the benchmark of the result)",
            err=True,
        )
        return None
    return bench


@main.command(name="train-tuned")
@click.option("--backbone", required=True, help="Catalog baseline to tune (list baselines).")
@click.option("--benchmark", "-b", default=None, help="Benchmark with train and val parts.")
@_weights_option
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
@_friendly
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
    from benchmark.splits import cache_root

    given = {
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "temperature": temperature,
        "identity_weight": identity_weight,
        "patience": patience,
        "seed": seed,
    }
    config = TuneConfig(**{k: v for k, v in given.items() if v is not None})
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


@main.group()
def baselines() -> None:
    """Maintain the baseline catalog: pin weights, store calibrators."""


@baselines.command(name="calibrate")
@click.argument("name")
@click.option("--benchmark", "-b", default=None)
@_weights_option
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder (default: the catalog's baselines/calibrators, where evaluate finds it).",
)
@_friendly
def baselines_calibrate(name, benchmark, weights, out):
    """Fit AbC's calibrator on a benchmark's val part and store it beside the catalog."""
    from baselines.catalog import calibrator_path, split_name
    from baselines.models import baseline_submission, load_baseline
    from benchmark.benchmarks import resolve_benchmark
    from benchmark.evaluation import EvalConfig, RunOptions, calibrate, rank_counts
    from benchmark.fileio import write_json

    if split_name(name)[1] is not None:
        raise AttribBenchError(
            None, name, "tuned heads store their calibrator already", "retrain with train-tuned"
        )
    bench = resolve_benchmark(benchmark)
    extractor = load_baseline(name, weights)
    path = calibrator_path(name, bench.name, bench.version, out)
    config = EvalConfig()
    counts, _ = rank_counts(
        baseline_submission(name, weights), bench, config, RunOptions(progress=False), {}
    )
    cal = calibrate(counts, bench, config)  # always a fresh fit on val
    if "calibrator" not in cal:
        raise AttribBenchError(None, name, f"no calibrator: {cal['skipped']}", "use a val part")
    ensure_dir(path.parent, "--out")
    record = {
        "baseline": name,
        "benchmark": bench.name,
        "version": bench.version,
        "feature_key": extractor.feature_key,
        "fitted_on": "val",
        "num_fit_queries": cal["num_fit_queries"],
        "top_n": config.top_n,
        "calibrator": cal["calibrator"],
    }
    write_json(path, record)
    c = cal["calibrator"]
    click.echo(f"tau={c['temperature']:.4g} b={c['threshold']:.4g}; wrote {path}")


@baselines.command(name="pin")
@click.argument("names", nargs=-1)
@_friendly
def baselines_pin(names):
    """Record each weighted baseline's Hub revision and sha256 in weights.lock.json (network)."""
    from baselines.catalog import CATALOG
    from baselines.weights import pin_weights

    for name in names or [n for n, s in CATALOG.items() if s.weights is not None]:
        entry = pin_weights(name)
        click.echo(f"{name}\trevision {entry['revision']}\tsha256 {entry['sha256']}")


@main.group()
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
@_friendly
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
@_weights_option
@click.option("--benchmark", "-b", default=None)
@_root_option
@_friendly
@_sandbox_options
def leaderboard_verify(submission, baseline, weights, benchmark, root, sandbox=None):
    """Re-run an entry with the canonical settings; if it reproduces the submitted metrics,
    the re-run replaces the stored file and is marked verified, else nothing changes."""
    from benchmark.evaluation import EvalConfig, RunOptions
    from benchmark.evaluation import evaluate as run
    from benchmark.leaderboard import verify
    from benchmark.submission import load_submission
    from benchmark.verification import stored_entry

    sub = _submission_or_baseline(submission, baseline, weights)
    sub = load_submission(sub) if isinstance(sub, Path) else sub
    bench_name = benchmark or (sub.config.get("benchmark") or "").partition("@")[0] or None
    from benchmark.benchmarks import resolve_benchmark

    bench = resolve_benchmark(bench_name)
    stored_entry(root, bench.name, bench.version, sub.name)  # refuse before the re-run
    config = EvalConfig.canonical()  # never the stored settings: a submitter chose those
    fresh = run(sub, bench, config, RunOptions(progress=False, cache=False, sandbox=sandbox))
    record = verify(root, fresh)
    click.echo(
        f"verified {bench.name}@{bench.version}/{sub.name}: the stored file is now the "
        f"canonical re-run (largest metric difference {record['max_abs_metric_difference']:.2g})"
    )


@leaderboard.command(name="build")
@_root_option
@click.option("--no-reports", is_flag=True, help="Only README.md and site/index.html.")
@_friendly
def leaderboard_build(root, no_reports):
    """Write README.md (markdown table) and site/ (sortable page + one report per entry)."""
    from benchmark.leaderboard import build

    cache: dict[str, object] = {}

    def benchmark_for(result):
        key = result["benchmark"]["manifest_sha256"]
        if key not in cache:
            cache[key] = _report_benchmark(result, None)
        return cache[key]

    paths = build(root, reports=not no_reports, benchmark_for=benchmark_for, progress=click.echo)
    click.echo(f"wrote {len(paths)} files: {paths[0]}, {paths[-1]}")


@leaderboard.command(name="push")
@click.option("--repo-id", required=True, help="Hugging Face dataset repo, OWNER/NAME.")
@_root_option
@click.option(
    "--benchmark", "-b", default=None, help="NAME@VERSION (needed if the store has several)."
)
@click.option("--dry-run", is_flag=True, help="List the operations; upload nothing.")
@click.option("--create-pr", is_flag=True, help="Open a pull request (no write access needed).")
@click.option("--token", default=None, help="Hugging Face token (default: the logged-in one).")
@_friendly
def leaderboard_push(repo_id, root, benchmark, dry_run, create_pr, token):
    """Publish results and site to the Hub in one commit, merging by entry key."""
    from huggingface_hub import HfApi

    from benchmark.leaderboard import plan_push, push

    api = HfApi(token=token)
    plan = plan_push(root, repo_id, api, benchmark)
    for line in plan.describe():
        click.echo(line)
    if dry_run:
        click.echo("dry run: nothing uploaded")
        return
    info = push(plan, api, create_pr=create_pr)
    click.echo(f"pushed: {getattr(info, 'pr_url', None) or getattr(info, 'commit_url', info)}")


# --------------------------------------------------------------------------------------------
# The real AbC: import the official release (benchmark/abc_import.py, abc_features.py)


@splits.command(name="import-abc")
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
@_friendly
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


@main.group(name="import-features")
def import_features() -> None:
    """Turn precomputed features of another release into a features submission."""


@import_features.command(name="abc")
@click.argument("feats_dir", type=click.Path(path_type=Path))
@click.option("--benchmark", "-b", required=True, help="The imported AbC benchmark.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Submission folder.")
@_friendly
def import_features_abc(feats_dir, benchmark, out):
    """AbC's feats/<model>/ folder (laion_subset.pth + per-test-case .pth) -> a submission."""
    from benchmark.abc_features import import_abc_features
    from benchmark.benchmarks import resolve_benchmark

    bench = resolve_benchmark(benchmark)
    path = import_abc_features(feats_dir, bench, out)
    click.echo(f"wrote {path} (evaluate it with --submission {path} --benchmark {benchmark})")


# --------------------------------------------------------------------------------------------
# AbU's track and peers' score files (benchmark/abu_track.py, import_scores.py)


@splits.command(name="derive-abu")
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
@_friendly
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


@main.command(name="import-scores")
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
@_friendly
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
