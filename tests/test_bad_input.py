"""Every user-facing problem: exit code 2, one ``error: ...`` line naming file and field with a
``(fix: ...)``, no traceback, nothing unpickled and nothing already computed lost.

Each case copies an example submission into ``tmp_path`` and damages exactly one thing.
"""

from __future__ import annotations

import json
import pickle
import shutil
import struct
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from safetensors.numpy import load_file, save_file

from benchmark.cli import main

SUBMISSIONS = Path(__file__).resolve().parents[1] / "submissions"
RUNNER = CliRunner()


# --------------------------------------------------------------------------------------------
# helpers


def invoke(*args: object) -> Result:
    return RUNNER.invoke(main, [str(a) for a in args])


def assert_user_error(result: Result, *needles: str, stdout_empty: bool = True) -> str:
    """Exit 2 and exactly one ``error: ... (fix: ...)`` line on stderr holding ``needles``."""
    detail = ""
    if result.exc_info is not None and not isinstance(result.exception, SystemExit):
        detail = "".join(traceback.format_exception(*result.exc_info))
    assert result.exit_code == 2, f"exit code {result.exit_code}\nstderr: {result.stderr}\n{detail}"
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {result.stderr!r}"
    line = lines[0]
    assert line.startswith("error: "), line
    assert "(fix: " in line and line.endswith(")"), line
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    if stdout_empty:
        assert result.stdout == "", result.stdout
    return line


def copy_example(tmp_path: Path, example: str) -> Path:
    dst = tmp_path / example
    shutil.copytree(SUBMISSIONS / example, dst)
    return dst


def edit_yaml(folder: Path, old: str, new: str) -> None:
    path = folder / "submission.yaml"
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))


def evaluate_args(folder: Path, tmp_path: Path, *extra: object) -> list[object]:
    return ["evaluate", "-s", folder, "-q", "-o", tmp_path / "out", *extra]


def features(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray, list[str]]:
    """A copy of example_features with its query, candidate arrays and query ids."""
    d = copy_example(tmp_path, "example_features")
    queries = load_file(str(d / "query_features.safetensors"))["features"]
    candidates = np.load(d / "candidate_features.npy")
    ids = (d / "query_ids.txt").read_text().splitlines()
    return d, queries, candidates, ids


def save_queries(d: Path, queries: np.ndarray) -> None:
    save_file({"features": np.ascontiguousarray(queries)}, str(d / "query_features.safetensors"))


def write_ids(d: Path, ids: list[str]) -> None:
    (d / "query_ids.txt").write_text("".join(f"{i}\n" for i in ids))


def safetensors_parts(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def write_safetensors_raw(path: Path, header: bytes, data: bytes) -> None:
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)


# --------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(autouse=True)
def _built_benchmark(tiny):
    """Build abc-tiny before any CLI call, so its build output never reaches stderr."""
    return tiny


@pytest.fixture(autouse=True)
def never_unpickle(monkeypatch):
    """Fail any test during which something is unpickled or np.load may unpickle."""
    calls: list[str] = []

    def refuse(name):
        def fn(*args, **kwargs):
            calls.append(name)
            raise AssertionError(f"{name} was called: something was unpickled")

        return fn

    monkeypatch.setattr(pickle, "load", refuse("pickle.load"))
    monkeypatch.setattr(pickle, "loads", refuse("pickle.loads"))
    real_np_load = np.load

    def np_load(*args, **kwargs):
        if kwargs.get("allow_pickle"):
            calls.append("numpy.load(allow_pickle=True)")
            raise AssertionError("numpy.load(allow_pickle=True)")
        return real_np_load(*args, **kwargs)

    monkeypatch.setattr(np, "load", np_load)
    yield calls
    assert calls == [], f"unpickling attempted: {calls}"


@pytest.fixture(scope="module")
def good_result(tiny, tmp_path_factory) -> Path:
    """One good evaluation (dense similarity) whose result.json later tests must not lose."""
    out = tmp_path_factory.mktemp("good")
    res = invoke("evaluate", "-s", SUBMISSIONS / "example_similarity", "-q", "-o", out)
    assert res.exit_code == 0, res.output
    return out / "result.json"


# --------------------------------------------------------------------------------------------
# bad inputs: each builder damages one thing and returns (CLI args, needles in the line)

Case = Callable[[Path], tuple[list[object], tuple[str, ...]]]
CASES: dict[str, Case] = {}


def case(name: str) -> Callable[[Case], Case]:
    def register(fn: Case) -> Case:
        assert name not in CASES
        CASES[name] = fn
        return fn

    return register


# features: shape, dtype, values ------------------------------------------------------------

CAND = ("candidate_features.npy", "features.candidates.file")
QUER = ("query_features.safetensors", "features.queries.file")
IDS = ("query_ids.txt", "features.queries.ids")


@case("features-1d-array")
def _(tmp_path):
    d, _q, c, _ids = features(tmp_path)
    np.save(d / "candidate_features.npy", np.ascontiguousarray(c[:, 0]))
    return evaluate_args(d, tmp_path), (*CAND, "2-D")


@case("features-wrong-row-count-without-ids")
def _(tmp_path):
    d, _q, c, _ids = features(tmp_path)
    np.save(d / "candidate_features.npy", c[:-1])
    needles = ("candidate_features.npy", "features.candidates", f"{len(c) - 1} rows", str(len(c)))
    return evaluate_args(d, tmp_path), needles


@case("features-int32")
def _(tmp_path):
    d, _q, c, _ids = features(tmp_path)
    np.save(d / "candidate_features.npy", (c * 100).astype(np.int32))
    return evaluate_args(d, tmp_path), (*CAND, "int32")


@case("features-int32-safetensors")
def _(tmp_path):
    d, q, _c, _ids = features(tmp_path)
    save_queries(d, (q * 100).astype(np.int32))
    return evaluate_args(d, tmp_path), (*QUER, "int32")


@case("features-nan")
def _(tmp_path):
    d, _q, c, _ids = features(tmp_path)
    c[5, 3] = np.nan
    np.save(d / "candidate_features.npy", c)
    return evaluate_args(d, tmp_path), (*CAND, "NaN", "row 5")


@case("features-inf")
def _(tmp_path):
    d, q, _c, _ids = features(tmp_path)
    q[7, 0] = np.inf
    save_queries(d, q)
    return evaluate_args(d, tmp_path), (*QUER, "inf", "row 7")


@case("features-dim-mismatch")
def _(tmp_path):
    d, _q, c, _ids = features(tmp_path)
    np.save(d / "candidate_features.npy", np.ascontiguousarray(c[:, :-1]))
    return evaluate_args(d, tmp_path), (*CAND, f"dim {c.shape[1] - 1}", str(c.shape[1]))


# features: ids files ---------------------------------------------------------------------


@case("features-missing-id")
def _(tmp_path):
    d, q, _c, ids = features(tmp_path)
    save_queries(d, q[:-1])
    write_ids(d, ids[:-1])
    return evaluate_args(d, tmp_path), (*IDS, "missing", ids[-1])


@case("features-ids-fewer-than-rows")
def _(tmp_path):
    d, q, _c, ids = features(tmp_path)
    write_ids(d, ids[:-1])
    return evaluate_args(d, tmp_path), (*IDS, f"{len(ids) - 1} ids for {len(q)} rows")


@case("features-duplicate-id")
def _(tmp_path):
    d, _q, _c, ids = features(tmp_path)
    ids[1] = ids[0]
    write_ids(d, ids)
    return evaluate_args(d, tmp_path), (*IDS, "duplicate", ids[0])


@case("features-unknown-id")
def _(tmp_path):
    d, _q, _c, ids = features(tmp_path)
    ids[3] = "no-such-query"
    write_ids(d, ids)
    return evaluate_args(d, tmp_path), (*IDS, "unknown", "no-such-query")


@case("features-id-with-whitespace")
def _(tmp_path):
    d, _q, _c, ids = features(tmp_path)
    ids[2] = ids[2] + " "
    write_ids(d, ids)
    return evaluate_args(d, tmp_path), ("query_ids.txt", "features.queries.ids line 3")


@case("features-ids-not-utf8")
def _(tmp_path):
    d, _q, _c, _ids = features(tmp_path)
    raw = (d / "query_ids.txt").read_bytes()
    (d / "query_ids.txt").write_bytes(b"\xe9t\xe9\n" + raw.split(b"\n", 1)[1])
    return evaluate_args(d, tmp_path), IDS


# features: unsafe or damaged files -------------------------------------------------------


@case("features-pkl-path-in-yaml")
def _(tmp_path):
    d, _q, c, _ids = features(tmp_path)
    (d / "candidate_features.pkl").write_bytes(pickle.dumps(c))
    edit_yaml(d, "candidate_features.npy", "candidate_features.pkl")
    return evaluate_args(d, tmp_path), ("submission.yaml", "features.candidates.file")


@case("features-pickle-renamed-npy")
def _(tmp_path):
    d, _q, c, _ids = features(tmp_path)
    (d / "candidate_features.npy").write_bytes(pickle.dumps(c))
    return evaluate_args(d, tmp_path), (*CAND, "pickle")


@case("features-pickle-protocol0-renamed-npy")
def _(tmp_path):
    d, _q, c, _ids = features(tmp_path)
    (d / "candidate_features.npy").write_bytes(pickle.dumps(c, protocol=0))
    return evaluate_args(d, tmp_path), (*CAND, "not a valid .npy")


@case("features-pickle-renamed-safetensors")
def _(tmp_path):
    d, q, _c, _ids = features(tmp_path)
    (d / "query_features.safetensors").write_bytes(pickle.dumps(q))
    return evaluate_args(d, tmp_path), (*QUER, "pickle")


@case("features-npz-renamed-npy")
def _(tmp_path):
    d, _q, c, _ids = features(tmp_path)
    with open(d / "candidate_features.npy", "wb") as f:
        np.savez(f, features=c)
    return evaluate_args(d, tmp_path), (*CAND, "zip")


@case("features-object-dtype-npy")
def _(tmp_path):
    d, _q, c, _ids = features(tmp_path)
    obj = np.empty(c.shape, dtype=object)
    obj[:] = c
    np.save(d / "candidate_features.npy", obj, allow_pickle=True)  # a hostile file to refuse
    return evaluate_args(d, tmp_path), (*CAND, "object dtype")


@case("features-truncated-npy")
def _(tmp_path):
    d, _q, _c, _ids = features(tmp_path)
    path = d / "candidate_features.npy"
    path.write_bytes(path.read_bytes()[:-10])
    return evaluate_args(d, tmp_path), (*CAND, "truncated")


@case("features-npy-cut-inside-header")
def _(tmp_path):
    d, _q, _c, _ids = features(tmp_path)
    path = d / "candidate_features.npy"
    path.write_bytes(path.read_bytes()[:30])
    return evaluate_args(d, tmp_path), (*CAND, "not a valid .npy")


@case("features-oversized-npy")
def _(tmp_path):
    d, _q, _c, _ids = features(tmp_path)
    with open(d / "candidate_features.npy", "ab") as f:
        f.write(b"\0" * 64)
    return evaluate_args(d, tmp_path), (*CAND, "oversized")


@case("features-fortran-npy")
def _(tmp_path):
    d, _q, c, _ids = features(tmp_path)
    np.save(d / "candidate_features.npy", np.asfortranarray(c))
    return evaluate_args(d, tmp_path), (*CAND, "Fortran")


@case("features-truncated-safetensors")
def _(tmp_path):
    d, _q, _c, _ids = features(tmp_path)
    path = d / "query_features.safetensors"
    path.write_bytes(path.read_bytes()[:-10])
    return evaluate_args(d, tmp_path), (*QUER, "truncated")


@case("features-safetensors-cut-in-length-prefix")
def _(tmp_path):
    d, _q, _c, _ids = features(tmp_path)
    path = d / "query_features.safetensors"
    path.write_bytes(path.read_bytes()[:5])
    return evaluate_args(d, tmp_path), (*QUER, "truncated")


@case("features-safetensors-header-length-too-large")
def _(tmp_path):
    d, _q, _c, _ids = features(tmp_path)
    path = d / "query_features.safetensors"
    raw = path.read_bytes()
    path.write_bytes(struct.pack("<Q", 1 << 40) + raw[8:])
    return evaluate_args(d, tmp_path), (*QUER, "header length")


@case("features-safetensors-header-length-too-small")
def _(tmp_path):
    d, _q, _c, _ids = features(tmp_path)
    path = d / "query_features.safetensors"
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    path.write_bytes(struct.pack("<Q", n - 5) + raw[8:])
    return evaluate_args(d, tmp_path), (*QUER, "corrupt safetensors header")


@case("features-safetensors-unsupported-dtype")
def _(tmp_path):
    d, _q, _c, _ids = features(tmp_path)
    path = d / "query_features.safetensors"
    header, data = safetensors_parts(path)
    header["features"]["dtype"] = "BF16"
    write_safetensors_raw(path, json.dumps(header).encode(), data)
    return evaluate_args(d, tmp_path), ("query_features.safetensors", "BF16")


@case("features-safetensors-header-not-an-object")
def _(tmp_path):
    d, _q, _c, _ids = features(tmp_path)
    path = d / "query_features.safetensors"
    _header, data = safetensors_parts(path)
    write_safetensors_raw(path, b"[1, 2]", data)
    return evaluate_args(d, tmp_path), QUER


@case("features-safetensors-tensor-without-shape")
def _(tmp_path):
    d, _q, _c, _ids = features(tmp_path)
    path = d / "query_features.safetensors"
    header, data = safetensors_parts(path)
    del header["features"]["shape"]
    write_safetensors_raw(path, json.dumps(header).encode(), data)
    return evaluate_args(d, tmp_path), QUER


# dense similarity ------------------------------------------------------------------------

DENSE = ("scores.npy", "similarity.file")


@case("dense-wrong-shape")
def _(tmp_path):
    d = copy_example(tmp_path, "example_similarity")
    s = np.load(d / "scores.npy")
    np.save(d / "scores.npy", np.ascontiguousarray(s[:, :-1]))
    return evaluate_args(d, tmp_path), (*DENSE, "expected")


@case("dense-transposed")
def _(tmp_path):
    d = copy_example(tmp_path, "example_similarity")
    s = np.load(d / "scores.npy")
    np.save(d / "scores.npy", np.ascontiguousarray(s.T))
    return evaluate_args(d, tmp_path), (*DENSE, str(s.T.shape))


@case("dense-nan")
def _(tmp_path):
    d = copy_example(tmp_path, "example_similarity")
    s = np.load(d / "scores.npy")
    s[2, 4] = np.nan
    np.save(d / "scores.npy", s)
    return evaluate_args(d, tmp_path), (*DENSE, "NaN", "row 2")


# top-K similarity ------------------------------------------------------------------------


def topk(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    d = copy_example(tmp_path, "example_topk")
    return d, load_file(str(d / "topk.safetensors"))


def save_topk(d: Path, tensors: dict[str, np.ndarray]) -> None:
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(d / "topk.safetensors"))


def positive_positions(tiny) -> list[tuple[int, int, int]]:
    """(query row, candidate column, positives.tsv row) of every positive pair."""
    column = {c: i for i, c in enumerate(tiny.candidate_ids)}
    row = {q.query_id: i for i, q in enumerate(tiny.evaluated_queries)}
    return [(row[q], column[e], p) for p, (q, e) in enumerate(tiny.positives())]


@case("topk-k-too-small")
def _(tmp_path):
    d, t = topk(tmp_path)
    t["indices"], t["scores"] = t["indices"][:, :50], t["scores"][:, :50]
    save_topk(d, t)
    return evaluate_args(d, tmp_path), ("topk.safetensors", "similarity.indices", "K = 50")


@case("topk-index-out-of-range")
def _(tmp_path):
    d, t = topk(tmp_path)
    t["indices"][0, 0] = 10_000
    save_topk(d, t)
    return evaluate_args(d, tmp_path), ("topk.safetensors", "similarity.indices", "out of range")


@case("topk-negative-index")
def _(tmp_path):
    d, t = topk(tmp_path)
    t["indices"][3, 7] = -1
    save_topk(d, t)
    return evaluate_args(d, tmp_path), ("topk.safetensors", "similarity.indices", "out of range")


@case("topk-duplicate-index")
def _(tmp_path):
    d, t = topk(tmp_path)
    t["indices"][4, 1] = t["indices"][4, 0]
    save_topk(d, t)
    return evaluate_args(d, tmp_path), ("topk.safetensors", "similarity.indices", "row 4")


@case("topk-positive-scores-wrong-length")
def _(tmp_path):
    d, t = topk(tmp_path)
    t["positive_scores"] = t["positive_scores"][:-1]
    save_topk(d, t)
    return evaluate_args(d, tmp_path), ("topk.safetensors", "similarity.positive_scores")


@case("topk-missing-tensor")
def _(tmp_path):
    d, t = topk(tmp_path)
    del t["positive_scores"]
    save_topk(d, t)
    return evaluate_args(d, tmp_path), ("topk.safetensors", "positive_scores")


@case("topk-nan-score")
def _(tmp_path):
    d, t = topk(tmp_path)
    t["scores"][6, 2] = np.nan
    save_topk(d, t)
    return evaluate_args(d, tmp_path), ("topk.safetensors", "similarity.scores", "NaN")


def _unlisted_exemplar_above_floor(tmp_path, tiny):
    d, t = topk(tmp_path)
    qi, col, p = next(
        (qi, col, p) for qi, col, p in positive_positions(tiny) if col not in t["indices"][qi]
    )
    t["positive_scores"][p] = t["scores"][qi].max() + 0.5
    save_topk(d, t)
    args = evaluate_args(d, tmp_path)
    return args, ("topk.safetensors", "similarity.indices", "not listed", tiny.candidate_ids[col])


def _listed_exemplar_other_score(tmp_path, tiny):
    d, t = topk(tmp_path)
    col, p = next((col, p) for qi, col, p in positive_positions(tiny) if col in t["indices"][qi])
    t["positive_scores"][p] += 0.25
    save_topk(d, t)
    args = evaluate_args(d, tmp_path)
    return args, ("topk.safetensors", "similarity.positive_scores", tiny.candidate_ids[col])


# submission.yaml -------------------------------------------------------------------------


@case("yaml-unknown-kind")
def _(tmp_path):
    d = copy_example(tmp_path, "example_features")
    edit_yaml(d, "kind: features", "kind: embeddings")
    return evaluate_args(d, tmp_path), ("submission.yaml", "kind", "schema")


@case("yaml-missing-required-field")
def _(tmp_path):
    d = copy_example(tmp_path, "example_similarity")
    edit_yaml(d, "license: MIT\n", "")
    return evaluate_args(d, tmp_path), ("submission.yaml", "license", "schema")


@case("yaml-unknown-extra-key")
def _(tmp_path):
    d = copy_example(tmp_path, "example_similarity")
    edit_yaml(d, "license: MIT\n", "license: MIT\ncolour: blue\n")
    return evaluate_args(d, tmp_path), ("submission.yaml", "colour", "schema")


@case("yaml-unknown-nested-key")
def _(tmp_path):
    d = copy_example(tmp_path, "example_similarity")
    edit_yaml(d, "file: scores.npy}", "file: scores.npy, metric: cosine}")
    return evaluate_args(d, tmp_path), ("submission.yaml", "similarity", "metric")


@case("yaml-not-yaml")
def _(tmp_path):
    d = copy_example(tmp_path, "example_similarity")
    (d / "submission.yaml").write_text("name: [unclosed\nkind: {\n")
    return evaluate_args(d, tmp_path), ("submission.yaml", "YAML")


@case("yaml-not-a-mapping")
def _(tmp_path):
    d = copy_example(tmp_path, "example_similarity")
    (d / "submission.yaml").write_text("- just\n- a list\n")
    return evaluate_args(d, tmp_path), ("submission.yaml", "mapping")


@case("yaml-missing")
def _(tmp_path):
    d = copy_example(tmp_path, "example_similarity")
    (d / "submission.yaml").unlink()
    return evaluate_args(d, tmp_path), ("submission.yaml", "not found")


@case("yaml-other-benchmark-version")
def _(tmp_path):
    d = copy_example(tmp_path, "example_similarity")
    edit_yaml(d, "benchmark: abc-tiny@1.0.0", "benchmark: abc-tiny@9.9.9")
    return evaluate_args(d, tmp_path), ("submission.yaml", "benchmark", "abc-tiny@9.9.9")


@case("yaml-file-outside-submission")
def _(tmp_path):
    d = copy_example(tmp_path, "example_similarity")
    shutil.copy(d / "scores.npy", tmp_path / "scores.npy")
    edit_yaml(d, "file: scores.npy", "file: ../scores.npy")
    return evaluate_args(d, tmp_path), ("submission.yaml", "similarity.file", "outside")


@case("yaml-array-file-missing")
def _(tmp_path):
    d = copy_example(tmp_path, "example_similarity")
    (d / "scores.npy").unlink()
    return evaluate_args(d, tmp_path), (*DENSE, "not found")


# benchmarks ------------------------------------------------------------------------------


@case("benchmark-unknown-name")
def _(tmp_path):
    args = evaluate_args(SUBMISSIONS / "example_similarity", tmp_path, "-b", "no-such-bench")
    return args, ("benchmark", "no-such-bench", "abc-tiny")


@case("benchmark-typo")
def _(tmp_path):
    args = evaluate_args(SUBMISSIONS / "example_similarity", tmp_path, "-b", "abc-tin")
    return args, ("benchmark", "abc-tin", "did you mean 'abc-tiny'")


@case("benchmark-folder-without-manifest")
def _(tmp_path):
    folder = tmp_path / "not-a-benchmark"
    folder.mkdir()
    args = evaluate_args(SUBMISSIONS / "example_similarity", tmp_path, "-b", folder)
    return args, ("not-a-benchmark", "manifest.json")


@case("benchmark-hub-spec-without-revision")
def _(tmp_path):
    args = evaluate_args(SUBMISSIONS / "example_similarity", tmp_path, "-b", "hf://org/abc")
    return args, ("--benchmark", "hf://org/abc", "revision")


@case("export-unknown-benchmark")
def _(tmp_path):
    return ["export", "-b", "abc-tin", "--out", tmp_path / "ids"], ("did you mean 'abc-tiny'",)


# extractors ------------------------------------------------------------------------------


def extractor_with(tmp_path: Path, body: str) -> Path:
    """A copy of example_extractor whose TinyPixels.embed is replaced by ``body``."""
    d = copy_example(tmp_path, "example_extractor")
    src = d / "extractor.py"
    text = src.read_text()
    head, sep, _old = text.partition("    def embed(self, batch: torch.Tensor) -> torch.Tensor:")
    assert sep
    src.write_text(f"{head}{sep}\n        {body}\n")
    return d


def extractor_args(d: Path, tmp_path: Path) -> list[object]:
    return evaluate_args(d, tmp_path, "--no-cache", "--device", "cpu")


@case("extractor-entry-file-missing")
def _(tmp_path):
    d = copy_example(tmp_path, "example_extractor")
    edit_yaml(d, "entry: extractor.py:", "entry: missing.py:")
    return extractor_args(d, tmp_path), ("submission.yaml", "extractor.entry", "missing.py")


@case("extractor-class-missing")
def _(tmp_path):
    d = copy_example(tmp_path, "example_extractor")
    edit_yaml(d, "extractor.py:TinyPixels", "extractor.py:NoSuchClass")
    return extractor_args(d, tmp_path), ("extractor.py", "extractor.entry", "NoSuchClass")


@case("extractor-bad-kwargs")
def _(tmp_path):
    d = copy_example(tmp_path, "example_extractor")
    edit_yaml(d, "kwargs: {size: 8}", "kwargs: {size: 8, colour: red}")
    return extractor_args(d, tmp_path), ("submission.yaml", "extractor.kwargs", "colour")


@case("extractor-missing-method")
def _(tmp_path):
    d = copy_example(tmp_path, "example_extractor")
    src = d / "extractor.py"
    src.write_text(src.read_text().replace("def preprocess(", "def prepare("))
    return extractor_args(d, tmp_path), ("extractor.py", "TinyPixels", "preprocess")


@case("extractor-embed-3d")
def _(tmp_path):
    d = extractor_with(tmp_path, "return batch[:, None, :]")
    return extractor_args(d, tmp_path), ("embed", "[batch, dim]")


@case("extractor-embed-wrong-batch")
def _(tmp_path):
    d = extractor_with(tmp_path, "return batch[:1]")
    return extractor_args(d, tmp_path), ("embed", "[batch, dim]")


@case("extractor-embed-not-a-tensor")
def _(tmp_path):
    d = extractor_with(tmp_path, "return batch.numpy()")
    return extractor_args(d, tmp_path), ("embed", "[batch, dim]")


@case("extractor-embed-nan")
def _(tmp_path):
    d = extractor_with(tmp_path, "return batch * float('nan')")
    return extractor_args(d, tmp_path), ("embed", "NaN")


@case("extractor-embed-raises")
def _(tmp_path):
    d = extractor_with(tmp_path, "raise ValueError('weights not loaded')")
    return extractor_args(d, tmp_path), ("extractor.py", "embed", "ValueError", "weights not")


@case("extractor-syntax-error")
def _(tmp_path):
    d = copy_example(tmp_path, "example_extractor")
    (d / "extractor.py").write_text("def broken(:\n")
    return extractor_args(d, tmp_path), ("extractor.py", "extractor.entry", "SyntaxError")


@case("extractor-bad-device")
def _(tmp_path):
    args = evaluate_args(SUBMISSIONS / "example_extractor", tmp_path, "--device", "nonsense")
    return args, ("--device", "nonsense")


# result files ----------------------------------------------------------------------------


@case("validate-corrupt-json")
def _(tmp_path):
    path = tmp_path / "result.json"
    path.write_text('{"schema_version": 1, "created": ')
    return ["validate", path], ("result.json", "not valid JSON")


@case("validate-missing-file")
def _(tmp_path):
    return ["validate", tmp_path / "nothing.json"], ("nothing.json", "not found")


@case("validate-broken-submission-folder")
def _(tmp_path):
    d = copy_example(tmp_path, "example_similarity")
    edit_yaml(d, "kind: similarity", "kind: magic")
    return ["validate", d], ("submission.yaml", "kind")


# --------------------------------------------------------------------------------------------
# tests


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, tmp_path):
    args, needles = CASES[name](tmp_path)
    result = invoke(*args)
    assert_user_error(result, *needles)
    if args[0] == "evaluate":
        assert not (tmp_path / "out").exists(), "a failed evaluate wrote output"


@pytest.mark.parametrize(
    "build",
    [_unlisted_exemplar_above_floor, _listed_exemplar_other_score],
    ids=["topk-unlisted-exemplar-above-floor", "topk-listed-exemplar-other-score"],
)
def test_bad_topk_positive_scores(build, tmp_path, tiny):
    args, needles = build(tmp_path, tiny)
    assert_user_error(invoke(*args), *needles)


def test_selfcheck_bad_benchmark_is_one_clean_line():
    result = invoke("selfcheck", SUBMISSIONS / "example_similarity", "-b", "abc-tin")
    assert_user_error(result, "did you mean 'abc-tiny'", stdout_empty=False)


def test_pickle_guard_is_armed(never_unpickle):
    """The guard itself works: a real unpickle attempt is caught and recorded."""
    with pytest.raises(AssertionError):
        pickle.loads(pickle.dumps([1]))
    with pytest.raises(AssertionError):
        np.load("whatever.npy", allow_pickle=True)
    assert never_unpickle == ["pickle.loads", "numpy.load(allow_pickle=True)"]
    never_unpickle.clear()


# result files and comparisons ------------------------------------------------------------


def _edited_copy(src: Path, dst: Path, edit: Callable[[dict], None]) -> Path:
    data = json.loads(src.read_text())
    edit(data)
    dst.write_text(json.dumps(data))
    return dst


def test_validate_result_failing_schema(good_result, tmp_path):
    def edit(r):
        r["settings"]["tie_policy"] = "random"

    path = _edited_copy(good_result, tmp_path / "broken-result.json", edit)
    line = assert_user_error(invoke("validate", path), "broken-result.json", "settings.tie_policy")
    assert "result schema" in line


def test_validate_result_missing_field(good_result, tmp_path):
    path = _edited_copy(good_result, tmp_path / "r.json", lambda r: r.pop("metrics"))
    assert_user_error(invoke("validate", path), "r.json", "metrics")


def test_validate_result_other_schema_version(good_result, tmp_path):
    def edit(r):
        r["schema_version"] = 99

    path = _edited_copy(good_result, tmp_path / "r.json", edit)
    assert_user_error(invoke("validate", path), "r.json", "schema_version", "99")


def _other_benchmark(r):
    r["benchmark"]["manifest_sha256"] = "0" * 64


def test_compare_results_of_different_benchmarks(good_result, tmp_path):
    other = _edited_copy(good_result, tmp_path / "other.json", _other_benchmark)
    assert_user_error(invoke("compare", good_result, other), "benchmark.manifest_sha256", "0" * 64)


def test_compare_results_with_different_tie_policies(good_result, tmp_path):
    def edit(r):
        r["settings"]["tie_policy"] = "optimistic"

    other = _edited_copy(good_result, tmp_path / "other.json", edit)
    assert_user_error(invoke("compare", good_result, other), "settings.tie_policy")


def test_compare_error_names_the_result_file(good_result, tmp_path):
    other = _edited_copy(good_result, tmp_path / "other.json", _other_benchmark)
    assert_user_error(invoke("compare", good_result, other), "other.json")


def test_compare_result_without_queries(good_result, tmp_path):
    def edit(r):
        r["queries"] = []

    empty = _edited_copy(good_result, tmp_path / "empty.json", edit)
    assert_user_error(invoke("validate", empty), "queries")
    assert_user_error(invoke("compare", good_result, empty), "queries")


def test_embed_error_names_the_extractor_file(tmp_path):
    d = extractor_with(tmp_path, "return batch * float('nan')")
    assert_user_error(invoke(*extractor_args(d, tmp_path)), "extractor.py")


# nothing already computed is lost ----------------------------------------------------------


def test_failed_evaluate_keeps_previous_result(good_result, tmp_path):
    before = good_result.read_bytes()
    listing = sorted(p.name for p in good_result.parent.iterdir())
    d = copy_example(tmp_path, "example_similarity")
    s = np.load(d / "scores.npy")
    s[0, 0] = np.inf
    np.save(d / "scores.npy", s)
    result = invoke("evaluate", "-s", d, "-q", "-o", good_result.parent)
    assert_user_error(result, *DENSE)
    assert good_result.read_bytes() == before
    assert sorted(p.name for p in good_result.parent.iterdir()) == listing


def test_evaluate_zero_bootstrap_samples(tmp_path):
    args = evaluate_args(SUBMISSIONS / "example_topk", tmp_path, "--bootstrap-samples", "0")
    assert_user_error(invoke(*args), "bootstrap")


def test_evaluate_output_is_a_file(tmp_path):
    target = tmp_path / "taken"
    target.write_text("not a folder")
    args = ["evaluate", "-s", SUBMISSIONS / "example_topk", "-q", "-o", target]
    assert_user_error(invoke(*args), "taken")


def test_export_out_is_a_file(tmp_path):
    target = tmp_path / "taken"
    target.write_text("not a folder")
    assert_user_error(invoke("export", "--out", target), "taken")
