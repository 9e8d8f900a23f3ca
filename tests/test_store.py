"""The results store: gzip JSON keyed by (benchmark version, submission name)."""

from __future__ import annotations

import copy

import pytest
from click.testing import CliRunner

from benchmark.cli import main
from benchmark.errors import AttribBenchError, ResultError
from benchmark.evaluation import RunOptions, evaluate
from benchmark.results import load_result, store_result, stored_result_path
from tests.conftest import SUBMISSIONS


@pytest.fixture(scope="module")
def result(tiny):
    return evaluate(SUBMISSIONS / "example_extractor", tiny, options=RunOptions(progress=False))


def test_store_writes_deterministic_gzip_that_loads_back(result, tmp_path):
    path = store_result(tmp_path, result)
    assert (
        path
        == tmp_path / f"abc-tiny@{result['benchmark']['version']}" / "example-extractor.json.gz"
    )
    first = path.read_bytes()
    assert load_result(path) == result
    with pytest.raises(ResultError, match=r"made from the same files exists.*--replace"):
        store_result(tmp_path, result)  # never replaced silently, whatever its hashes
    store_result(tmp_path, result, replace=True)
    assert path.read_bytes() == first


def test_an_entry_from_other_files_is_never_silently_replaced(result, tmp_path):
    store_result(tmp_path, result)
    other = copy.deepcopy(result)
    other["submission"]["sha256"] = "0" * 64
    with pytest.raises(ResultError, match=r"made from other files exists.*--replace"):
        store_result(tmp_path, other)
    assert load_result(stored_result_path(tmp_path, result)) == result  # untouched
    store_result(tmp_path, other, replace=True)
    assert load_result(stored_result_path(tmp_path, result))["submission"]["sha256"] == "0" * 64


def test_corrupt_gzip_is_one_clear_line(tmp_path):
    bad = tmp_path / "x.json.gz"
    bad.write_bytes(b"\x1f\x8b\x08garbage")
    with pytest.raises(AttribBenchError, match="not a valid gzip file"):
        load_result(bad)


def test_evaluate_store_option(tiny, tmp_path):
    args = ["evaluate", "--submission", str(SUBMISSIONS / "example_extractor"), "-b", "abc-tiny"]
    args += ["-q", "-o", str(tmp_path / "out"), "--store", str(tmp_path / "store")]
    run = CliRunner().invoke(main, args)
    assert run.exit_code == 0, run.output
    assert "stored " in run.output
    assert len(list((tmp_path / "store").rglob("*.json.gz"))) == 1
