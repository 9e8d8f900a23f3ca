"""Shared fixtures: an isolated cache, the tiny benchmark, offline Hub."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SUBMISSIONS = REPO / "submissions"


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Every test session gets its own attrib-bench cache (features, stamps, abc-tiny)."""
    cache = tmp_path_factory.mktemp("attrib-bench-cache")
    old = os.environ.get("ATTRIB_BENCH_CACHE")
    os.environ["ATTRIB_BENCH_CACHE"] = str(cache)
    yield cache
    if old is None:
        os.environ.pop("ATTRIB_BENCH_CACHE", None)
    else:
        os.environ["ATTRIB_BENCH_CACHE"] = old


@pytest.fixture(scope="session")
def tiny(_isolated_cache):
    """The abc-tiny benchmark, built once per session into the isolated cache."""
    from benchmark.testing import tiny_benchmark

    return tiny_benchmark()
