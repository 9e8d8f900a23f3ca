"""The Python API as a researcher uses it from a notebook: ``from benchmark import evaluate``.

Each entry point (an inline extractor object, arrays, a score matrix, a submission folder, a
baseline name) returns a ``Result``; ``load_result`` reads results back, old schema versions
included (tests/data/historic holds real results from the repository's history).
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmark.errors import AttribBenchError, ResultError, SubmissionError

REPO = Path(__file__).resolve().parents[1]
HISTORIC = sorted((REPO / "tests" / "data" / "historic").glob("*.json.gz"))
FAST = {"bootstrap_samples": 200}


def test_import_is_light_and_exports_the_api():
    code = (
        "import sys, benchmark\n"
        "assert 'torch' not in sys.modules and 'benchmark.api' not in sys.modules\n"
        "from benchmark import evaluate, load_result, Result\n"
        "assert callable(evaluate) and callable(load_result) and isinstance(Result, type)\n"
        "assert 'torch' not in sys.modules, 'the API module must not import torch'\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


@pytest.fixture(scope="module")
def notebook_result(tiny):
    """The acceptance test of issue 11: an extractor class defined inline, as in a notebook."""
    import torch
    from PIL import Image

    from benchmark import evaluate

    class MyPixels:
        def preprocess(self, image: Image.Image) -> torch.Tensor:
            small = image.convert("RGB").resize((8, 8), Image.Resampling.BILINEAR)
            return torch.frombuffer(bytearray(small.tobytes()), dtype=torch.uint8).float() / 255

        def embed(self, batch: torch.Tensor) -> torch.Tensor:
            centred = batch - batch.mean(dim=1, keepdim=True)
            return torch.cat([centred, torch.full((len(batch), 1), 1e-3)], dim=1)

    return evaluate(MyPixels(), benchmark="abc-tiny", **FAST)


def test_notebook_extractor_gives_a_result(notebook_result):
    r = notebook_result
    mean_map = np.mean([c["metrics"]["mAP"]["value"] for c in r.cells])
    assert r.headline == pytest.approx(mean_map)
    assert len(r.cells) == 8 and 0.0 < r.headline < 1.0
    assert r.name == "mypixels"
    assert r.data["environment"]["isolation"] == "in-process (user object)"
    assert r.data["submission"]["origin"] == "python object"
    assert r.data["submission"]["files"] == {}  # nothing on disk to hash or re-run
    summary = r.summary()
    assert "\n" not in summary and "mypixels" in summary and f"{r.headline:.4f}" in summary


def test_recall_norm_is_in_the_json_but_not_the_table(notebook_result):
    from benchmark.format import result_table

    r = notebook_result
    for cell in r.cells:
        for k in (5, 10, 100):
            norm, abc = cell["metrics"][f"recall_norm@{k}"], cell["metrics"][f"recall@{k}"]
            assert norm["value"] >= abc["value"]
    assert r.measures[:4] == ("mAP", "recall@5", "recall@10", "recall@100")
    assert "recall_norm@10" in r.measures
    table = r.table()
    assert table == result_table(r.data)  # the same table the CLI prints
    assert "recall@10" in table and "recall_norm" not in table


def test_to_dataframe(notebook_result):
    pd = pytest.importorskip("pandas")
    df = notebook_result.to_dataframe()
    assert isinstance(df, pd.DataFrame)
    assert len(df) == 8 * len(notebook_result.measures)
    row = df[(df.test_case == "object-seen") & (df.prompt_type == "gpt") & (df.measure == "mAP")]
    cell = notebook_result.cells[0]
    assert (cell["test_case"], cell["prompt_type"]) == ("object-seen", "gpt")
    assert row["value"].item() == cell["metrics"]["mAP"]["value"]
    assert row["ci_low"].item() == cell["metrics"]["mAP"]["ci_low"]
    assert bool(df["higher_is_better"].all())


def test_to_dataframe_without_pandas_says_so(notebook_result, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas now raises ImportError
    with pytest.raises(ImportError, match=r"needs pandas \(pip install pandas\)"):
        notebook_result.to_dataframe()


@pytest.mark.parametrize("suffix", ["json", "json.gz"])
def test_save_then_load_is_equal(notebook_result, tmp_path, suffix):
    from benchmark import Result, load_result

    path = notebook_result.save(tmp_path / "runs" / f"mine.{suffix}")
    assert path.is_file()
    assert load_result(path) == notebook_result
    assert Result.load(path).headline == notebook_result.headline
    if suffix == "json.gz":
        assert json.loads(gzip.decompress(path.read_bytes()))["schema_version"] == 2
    assert notebook_result.save(tmp_path).name == "result.json"  # a folder gets result.json


def test_store_refuses_in_memory_results(notebook_result, tmp_path):
    from benchmark.results import store_result

    with pytest.raises(ResultError, match="in-memory python object") as err:
        store_result(tmp_path / "store", notebook_result.data)
    assert "submission.origin" in str(err.value)
    stripped = json.loads(json.dumps(notebook_result.data))
    del stripped["submission"]["origin"]  # the isolation record still gives it away
    with pytest.raises(ResultError, match="in-memory python object"):
        store_result(tmp_path / "store", stripped)
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").rglob("*.gz"))


# --------------------------------------------------------------------------------------------
# arrays, score matrices, submission folders, baselines


def _export_order_features(tiny):
    from benchmark.fileio import open_array, read_id_list

    root = REPO / "submissions" / "example_features"
    q = np.asarray(open_array(root / "query_features.safetensors", "q"), np.float32)
    ids = read_id_list(root / "query_ids.txt", "ids")
    row = {qid: i for i, qid in enumerate(ids)}
    queries = q[[row[x.query_id] for x in tiny.evaluated_queries]]
    candidates = np.asarray(open_array(root / "candidate_features.npy", "c"), np.float32)
    return queries, candidates


def test_arrays_and_folder_entry_points_agree(tiny):
    import torch

    from benchmark import evaluate

    folder = evaluate(REPO / "submissions" / "example_features", **FAST)
    assert folder.name == "example-features" and "origin" not in folder.data["submission"]
    queries, candidates = _export_order_features(tiny)
    arrays = evaluate((queries, candidates), benchmark="abc-tiny", name="mine", **FAST)
    assert arrays.data["submission"]["origin"] == "arrays"
    assert arrays.data["submission"]["kind"] == "features"
    assert arrays.cells == folder.cells
    tensors = evaluate(
        (torch.from_numpy(queries), torch.from_numpy(candidates)), benchmark="abc-tiny", **FAST
    )
    assert tensors.cells == folder.cells


def test_score_matrix_entry_point_matches_the_similarity_folder(tiny):
    from benchmark import evaluate

    folder = evaluate(str(REPO / "submissions" / "example_similarity"), **FAST)
    scores = np.load(REPO / "submissions" / "example_similarity" / "scores.npy")
    dense = evaluate(scores, benchmark="abc-tiny", **FAST)
    assert dense.data["submission"]["kind"] == "similarity"
    assert dense.name == "scores" and dense.cells == folder.cells


def test_baseline_name_entry_point(tiny):
    from benchmark import evaluate

    r = evaluate("pixels", benchmark="abc-tiny", **FAST)
    assert r.name == "pixels"
    assert r.data["environment"]["isolation"] == "in-process (built-in baseline)"
    assert "origin" not in r.data["submission"]


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda e: e(42), AttribBenchError, "model_or_submission: a int is not something"),
        (lambda e: e("pixels", tie_policy="x", bogus=1), AttribBenchError, "bogus: not a setting"),
        (lambda e: e(np.zeros((3, 3), np.int64)), AttribBenchError, "scores: a 2-d int64 array"),
        (lambda e: e(np.zeros(3, np.float32)), AttribBenchError, "a 1-d float32 array"),
        (lambda e: e(type("Half", (), {"embed": lambda s, b: b})()), SubmissionError, "preprocess"),
        (lambda e: e("submissions/nope"), SubmissionError, "submission.yaml not found"),
        (lambda e: e(np.zeros((2, 2), np.float32), name="Bad Name"), AttribBenchError, "name"),
    ],
)
def test_bad_input_is_one_line(call, error, match):
    from benchmark import evaluate

    with pytest.raises(error, match=match) as err:
        call(evaluate)
    assert "\n" not in str(err.value)


def test_wrong_shape_arrays_are_refused_like_a_file(tiny):
    from benchmark import evaluate

    with pytest.raises(SubmissionError, match=r"^<in-memory score matrix>: similarity.file: shape"):
        evaluate(np.zeros((3, 4), np.float32) + 1, benchmark="abc-tiny", **FAST)
    queries, candidates = _export_order_features(tiny)
    with pytest.raises(SubmissionError, match=r"^<in-memory candidates array>: .*dim"):
        evaluate((queries, candidates[:, :5]), benchmark="abc-tiny", **FAST)


# --------------------------------------------------------------------------------------------
# load_result: historic files and the upgrade chain


def test_historic_results_are_committed():
    assert len(HISTORIC) >= 2
    for path in HISTORIC:
        assert json.loads(gzip.decompress(path.read_bytes()))["schema_version"] == 1


@pytest.mark.parametrize("path", HISTORIC, ids=lambda p: p.name)
def test_load_result_upgrades_historic_results(path):
    from benchmark import load_result

    raw = json.loads(gzip.decompress(path.read_bytes()))
    r = load_result(path)
    assert r.data["schema_version"] == 2 and r.data["upgraded_from"] == 1
    assert r.cells == raw["metrics"]  # nothing measured is changed by the upgrade
    assert r.headline == pytest.approx(np.mean([c["metrics"]["mAP"]["value"] for c in r.cells]))
    assert "recall@10" in r.measures and "recall_norm@10" not in r.measures  # not invented
    assert "pixels" in r.summary() and "recall@10" in r.table()


def test_store_reads_current_results_only(tmp_path):
    from benchmark.results import parse_result

    path = HISTORIC[0]
    with pytest.raises(ResultError, match="unsupported schema_version 1") as err:
        parse_result(path.read_bytes(), path)
    assert "benchmark.load_result upgrades" in str(err.value)


def _write(path: Path, obj) -> Path:
    path.write_bytes(gzip.compress(json.dumps(obj).encode()))
    return path


def test_unknown_or_broken_versions_are_one_line(tmp_path):
    from benchmark import load_result

    raw = json.loads(gzip.decompress(HISTORIC[0].read_bytes()))
    with pytest.raises(ResultError, match="unsupported schema_version 99"):
        load_result(_write(tmp_path / "future.json.gz", {**raw, "schema_version": 99}))
    with pytest.raises(ResultError, match="unsupported schema_version True"):
        load_result(_write(tmp_path / "bool.json.gz", {**raw, "schema_version": True}))
    broken = json.loads(json.dumps(raw))
    broken["metrics"][0]["test_case"] = "object-everywhere"
    want = r"metrics\.0\.test_case: fails the result\.v1 schema"
    with pytest.raises(AttribBenchError, match=want):
        load_result(_write(tmp_path / "broken.json.gz", broken))
