"""Named benchmarks and how ``--benchmark`` values resolve.

A ``--benchmark`` value is one of:

- a registered name (``attrib-bench list benchmarks``);
- a local folder holding ``manifest.json``;
- ``hf://OWNER/NAME@REVISION``: a Hugging Face dataset repo, downloaded at that pinned
  revision with ``huggingface_hub.snapshot_download`` and verified like a local folder.
"""

from __future__ import annotations

from pathlib import Path

from benchmark.errors import BenchmarkError
from benchmark.registry import Entry, Registry
from benchmark.splits import Benchmark, load_benchmark

SHIPPED = Path(__file__).resolve().parents[1] / "splits"


def abc_mini() -> Benchmark:
    """AbC-mini, embedded in the repository (``splits/abc-mini``), verified on load."""
    folder = SHIPPED / "abc-mini"
    if not (folder / "manifest.json").is_file():
        raise BenchmarkError(
            folder / "manifest.json",
            None,
            "the embedded benchmark is not here (installed without the repository's splits/)",
            "install from a clone (pip install -e .) or pass --benchmark with a folder",
        )
    return load_benchmark(folder)


BENCHMARKS = Registry(
    "benchmark",
    (
        Entry(
            "abc-mini",
            "benchmark.benchmarks:abc_mini",
            "AbC's protocol at 64x64 on real offline images, made by the reference pipeline "
            "(embedded; the default)",
        ),
        Entry(
            "abc-tiny",
            "benchmark.testing:tiny_benchmark",
            "tiny procedurally drawn benchmark with AbC's structure (tests, selfcheck)",
        ),
    ),
)
DEFAULT_BENCHMARK = "abc-mini"


def resolve_benchmark(spec: str | Path | None = None) -> Benchmark:
    spec = DEFAULT_BENCHMARK if spec is None else spec
    text = str(spec)
    if text.startswith("hf://"):
        return load_benchmark(download_hub_benchmark(text))
    if text not in BENCHMARKS and Path(text).exists():
        return load_benchmark(Path(text))
    return BENCHMARKS.load(text)()  # an unknown name raises with a did-you-mean


def download_hub_benchmark(spec: str) -> Path:
    """Fetch ``hf://OWNER/NAME@REVISION`` into the Hugging Face cache; return its folder."""
    repo, _, revision = spec.removeprefix("hf://").partition("@")
    if not revision or repo.count("/") != 1:
        raise BenchmarkError(
            None,
            "--benchmark",
            f"{spec!r} is not hf://OWNER/NAME@REVISION",
            "pin a revision (a commit sha or tag), e.g. hf://org/abc@v1.0.0",
        )
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id=repo, repo_type="dataset", revision=revision))
    except LocalEntryNotFoundError:
        raise BenchmarkError(
            None,
            "--benchmark",
            f"{repo}@{revision} is not in the local "
            "Hugging Face cache and the Hub cannot be reached",
            "go online once, or unset HF_HUB_OFFLINE",
        ) from None
    except HfHubHTTPError as exc:
        raise BenchmarkError(
            None,
            "--benchmark",
            f"Hub refused {repo}@{revision} ({str(exc).splitlines()[0]})",
            "check the repo id and revision",
        ) from None
