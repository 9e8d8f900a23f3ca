"""Checks a user runs before or after the real work, as lines of text: ``selfcheck`` (a
submission end to end on a small benchmark), ``validate`` (one file against its schema) and
``splits verify`` (a benchmark's files against its manifest). The CLI only prints them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmark.format import format_estimate


def selfcheck(path: str | Path, benchmark: str | None = None, sandbox: Any = None) -> Iterator[str]:
    """Load the submission at ``path``, score it on ``benchmark`` (default: the one its
    submission.yaml names, else abc-tiny) with a quick bootstrap, and yield what a contributor
    should read: each step's outcome, the per-cell mAP and the result's notes.

    Lines come as the steps finish, so a slow run shows the submission was valid at once.

    Raises:
        AttribBenchError: anything wrong with the submission or its output.
    """
    from benchmark.evaluation import EvalConfig, RunOptions, evaluate
    from benchmark.submission import load_submission

    sub = load_submission(path)
    yield f"ok   submission.yaml is valid ({sub.kind}, {len(sub.file_hashes)} files)"
    bench_spec = benchmark or sub.config.get("benchmark", "abc-tiny").partition("@")[0]
    result = evaluate(
        sub,
        bench_spec,
        EvalConfig(bootstrap_samples=200),
        RunOptions(progress=False, cache=False, sandbox=sandbox),
    )
    b = result["benchmark"]
    yield f"ok   scored {len(result['queries'])} queries on {b['name']} {b['version']}"
    for cell in result["metrics"]:
        yield (
            f"     {cell['test_case']:<14} {cell['prompt_type']:<7} mAP "
            f"{format_estimate(cell['metrics']['mAP'])}"
        )
    for flag in result["flags"]:
        yield f"note {flag}"
    yield "selfcheck passed"


def validate_file(file: Path) -> str:
    """Validate a submission folder or submission.yaml, a benchmark manifest.json or a
    result.json (told apart by name and content); return the one-line verdict.

    Raises:
        AttribBenchError: the file is invalid, with the field and the fix.
    """
    from benchmark.fileio import read_json
    from benchmark.results import load_result
    from benchmark.schemas import validate
    from benchmark.submission import load_submission

    if file.name == "submission.yaml" or file.is_dir():
        return f"{file}: valid submission ({load_submission(file).kind})"
    data = read_json(file)
    if isinstance(data, dict) and "tables" in data:
        validate(data, "manifest", file)
        return f"{file}: valid manifest ({data['name']} {data['version']})"
    load_result(file)
    return f"{file}: valid result"


def verify_benchmark_files(benchmark: str | None, quick: bool = False) -> str:
    """Re-hash every file of ``benchmark`` (a folder, hf://..., or a registered name) against
    its manifest (``quick``: sizes only); return the one-line summary with the counts.

    A folder-backed benchmark (an imported AbC) also checks the images under its source.

    Raises:
        AttribBenchError: a file is missing or differs from the manifest.
    """
    from benchmark.benchmarks import resolve_benchmark
    from benchmark.folder_benchmark import FolderBenchmark, verify_files
    from benchmark.splits import verify_benchmark

    bench = resolve_benchmark(benchmark)
    if quick or isinstance(bench, FolderBenchmark):
        info = verify_files(bench, quick=quick)
        return (
            f"ok   {bench.name} {bench.version}: {info.pop('files')} files match manifest.json "
            f"({info.pop('mode')}); " + ", ".join(f"{n} {k}" for k, n in info.items())
        )
    counts = verify_benchmark(bench.root)
    files = sum(len(t["files"]) for t in bench.manifest["tables"].values())
    return (
        f"ok   {bench.name} {bench.version}: {files} shards match manifest.json "
        f"(sha256 {bench.manifest_sha256[:12]}); "
        + ", ".join(f"{n} {k}" for k, n in counts.items())
    )
