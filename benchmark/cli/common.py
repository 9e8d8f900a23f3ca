"""What the command modules share: the error-catching group, output folders, and the options
that several commands take (baseline weights, the sandbox for submitted code)."""

from __future__ import annotations

from functools import wraps
from pathlib import Path
from typing import Any

import click

from benchmark.errors import AttribBenchError

#: The exit status of a user error (bad input, bad option); click uses it for usage errors too.
EXIT_USER_ERROR = 2


class FriendlyGroup(click.Group):
    """A click group that turns any :class:`AttribBenchError` raised by a command (or by a
    subgroup's command) into its one line ``error: ...`` on stderr and exit status 2.

    Catching here, once, keeps the commands free of error handling and guarantees that no
    user error ever reaches the user as a traceback.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AttribBenchError as exc:
            click.echo(f"error: {exc.line()}", err=True)
            raise click.exceptions.Exit(EXIT_USER_ERROR) from None


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


def submission_option(help: str):
    """``--submission/-s FOLDER``, with the help text of the command that takes it."""
    return click.option(
        "--submission", "-s", type=click.Path(path_type=Path), default=None, help=help
    )


weights_option = click.option(
    "--weights",
    type=click.Path(path_type=Path),
    default=None,
    help="Baseline weights: the file, or a folder of checkpoints "
    "(default: $ATTRIB_BENCH_WEIGHTS, then the Hugging Face / download cache).",
)


def sandbox_options(fn):
    """``--timeout``, ``--memory-limit``, ``--isolation``, ``--trust-code``: how submitted
    extractor code runs (benchmark.sandbox); passed to ``fn`` as ``sandbox=SandboxOptions``.
    Bad values raise inside the command's callback, so the group turns them into one line."""

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


def submission_or_baseline(submission, baseline, weights):
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


def report_benchmark(result: dict, spec: str | None):
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
