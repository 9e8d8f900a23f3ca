"""Named benchmarks and how ``--benchmark`` values resolve.

A ``--benchmark`` value is one of:

- a registered name (``attrib-bench list benchmarks``);
- a local folder holding ``manifest.json``;
- ``hf://OWNER/NAME@REVISION``: a Hugging Face dataset repo, downloaded at that pinned
  revision with ``huggingface_hub.snapshot_download`` and verified like a local folder.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

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

#: Published versions of the shipped benchmarks: (name, version) -> manifest sha256.
#: Append-only, like the manifests themselves (a published version never changes); a test
#: checks that the shipped ``splits/abc-mini/manifest.json`` hashes to its row. A leaderboard
#: accepts results for these versions only.
PUBLISHED: dict[tuple[str, str], str] = {
    ("abc-mini", "0.2.0"): "ff4aeba400d3f687ff38201e1d3e6483c74bdf29df006530265737b27ded9655",
    ("abc-mini", "0.3.0"): "5579de11918e8240f3935122e40b40afba3a94ec01fa924617bc1e19e0c9c5ad",
    ("abc-mini", "0.4.0"): "8ed662b4035daa0f40dfe379f0ae623d70a40e1c638a0f977ef076a41bc411d5",
    ("abc-mini", "0.5.0"): "f2be0531d2da0855b7e2d6d15c3ab00717d3f999427e0c025465a3ca73651195",
}
#: Registered benchmarks built on each machine by code (their bytes may differ with library
#: versions): the registered manifest sha256 is the one of the local build.
BUILT_LOCALLY = ("abc-tiny",)


@cache
def registered_manifest_sha256(name: str, version: str) -> str | None:
    """The manifest sha256 of a registered benchmark version, or None if not registered."""
    if (name, version) in PUBLISHED:
        return PUBLISHED[(name, version)]
    if name in BUILT_LOCALLY:
        bench = BENCHMARKS.load(name)()
        return bench.manifest_sha256 if bench.version == version else None
    return None


def check_registered(benchmark: dict[str, Any], source: str | Path | None) -> None:
    """Refuse a result's ``benchmark`` block unless it names a registered version with that
    version's manifest sha256 (a result computed on a modified or unknown build)."""
    name, version = benchmark.get("name"), benchmark.get("version")
    expected = (
        registered_manifest_sha256(name, version)
        if isinstance(name, str) and isinstance(version, str)
        else None
    )
    if expected is None:
        known = sorted({f"{n}@{v}" for n, v in PUBLISHED} | {f"{n}@*" for n in BUILT_LOCALLY})
        raise BenchmarkError(
            source,
            "benchmark",
            f"{name}@{version} is not a registered benchmark version",
            f"leaderboards take results on {', '.join(known)}",
        )
    if benchmark.get("manifest_sha256") != expected:
        raise BenchmarkError(
            source,
            "benchmark.manifest_sha256",
            f"{str(benchmark.get('manifest_sha256'))[:12]}... is not the manifest of "
            f"{name}@{version} ({expected[:12]}...)",
            "evaluate on the registered, unmodified benchmark",
        )


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
