"""Hostile numbers and files: each class of attack, judged by what a user observes.

- precision: float64 dense scores 1e-12 apart are ranked, not tied (float16 stays exact);
- scale: features x 1e30, x 1e-30 or mixed per row give the counts of x 1;
- zero rows: an all-zero feature row is one error line naming the file, field and id;
- options: a negative seed, a huge bootstrap and a CI level outside (0, 1) are one line;
- parquet footer: a shard corrupted with its size and mtime kept is caught on load;
- yaml: duplicate keys, aliases, oversized files and fields are refused in one line.
"""

from __future__ import annotations

import os
import shutil
import time
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result

from benchmark import scoring, stats
from benchmark.cli import main
from benchmark.errors import AttribBenchError, BenchmarkError
from benchmark.evaluation import EvalConfig, RunOptions, evaluate
from benchmark.splits import load_benchmark
from benchmark.submission import MAX_CONFIG_BYTES, load_submission

SUBMISSIONS = Path(__file__).resolve().parents[1] / "submissions"
FAST = EvalConfig(bootstrap_samples=10)
QUIET = RunOptions(progress=False, cache=False)


def invoke(*args: object) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_user_error(result: Result, *needles: str) -> str:
    """Exit 2 and exactly one short ``error: ... (fix: ...)`` line holding ``needles``."""
    detail = ""
    if result.exc_info is not None and not isinstance(result.exception, SystemExit):
        detail = "".join(traceback.format_exception(*result.exc_info))
    assert result.exit_code == 2, f"exit {result.exit_code}\n{result.output}\n{detail}"
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("error: ") and "(fix: " in line and line.endswith(")"), line
    assert len(line) < 600, f"error line of {len(line)} characters"
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    return line


def write_yaml(folder: Path, body: str, header: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "submission.yaml").write_text(
        header + "schema_version: 1\nlicense: MIT\nbenchmark: abc-tiny@1.0.0\n" + body
    )
    return folder


def features_submission(folder: Path, queries: np.ndarray, candidates: np.ndarray) -> Path:
    """A features submission in export order (no ids files)."""
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "q.npy", queries)
    np.save(folder / "c.npy", candidates)
    return write_yaml(
        folder,
        "name: scaled\nkind: features\ndescription: scaled features\n"
        "features:\n  queries: {file: q.npy}\n  candidates: {file: c.npy}\n",
    )


def dense_submission(folder: Path, matrix: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "scores.npy", matrix)
    return write_yaml(
        folder,
        "name: dense\nkind: similarity\ndescription: dense scores\n"
        "similarity: {format: dense, file: scores.npy}\n",
    )


def counts_of(result: dict) -> list[tuple[int, int]]:
    return [(e["above"], e["ties"]) for q in result["queries"] for e in q["exemplars"]]


def own_exemplar_columns(bench) -> list[list[int]]:
    column = {c: i for i, c in enumerate(bench.candidate_ids)}
    return [
        [column[e] for e in bench.model(q.model_id).exemplar_ids] for q in bench.evaluated_queries
    ]


@pytest.fixture(params=["fused", "torch"])
def engine(request, monkeypatch):
    """Scoring-level tests run on the numba tile kernel and on the plain torch passes."""
    monkeypatch.setattr(scoring, "USE_FUSED", request.param == "fused")
    if request.param == "fused":
        pytest.importorskip("numba")
    return request.param


# --------------------------------------------------------------------------------------------
# precision


def dense_counts(matrix: np.ndarray, n_d: int, ex_cols: list[list[int]]):
    return scoring.score_dense(
        matrix,
        n_d,
        ex_cols,
        query_ids=[str(i) for i in range(len(matrix))],
        exemplar_ids=[tuple(map(str, c)) for c in ex_cols],
        top_n=5,
    )


def test_float64_dense_scores_1e_12_apart_are_ranked_not_tied(engine):
    # query 0: its exemplar scores 0.5, one distractor 1e-12 above it, the rest 1e-12 below.
    # query 1: the same exemplar score exactly equals one distractor (a true tie).
    matrix = np.full((2, 6), 0.5 - 1e-12)
    matrix[:, 5] = 0.5  # the exemplar column
    matrix[0, 2] = 0.5 + 1e-12
    matrix[1, 3] = 0.5
    rc = dense_counts(matrix, 5, [[5], [5]])
    assert rc.above[:, 0].tolist() == [1, 0]
    assert rc.ties[:, 0].tolist() == [0, 1]
    assert rc.exemplar_scores[0, 0] == 0.5
    assert rc.top_scores[0, 0] == 0.5 + 1e-12 and rc.top_index[0, 0] == 2
    # Scaled far beyond float32's range, float64 scores keep their order.
    huge = dense_counts(matrix * 1e300, 5, [[5], [5]])
    assert huge.above.tolist() == rc.above.tolist() and huge.ties.tolist() == rc.ties.tolist()


def test_float16_dense_counts_match_an_exact_reference(engine):
    rng = np.random.default_rng(0)
    # Few distinct float16 values near 0.5: many exact ties and one-ulp neighbours.
    values = np.array([0.5 - 2**-12, 0.5, 0.5 + 2**-11, 0.25, -0.5], np.float16)
    matrix = rng.choice(values, size=(40, 300))
    ex_cols = [[250 + i % 50] for i in range(40)]
    rc = dense_counts(matrix, 250, ex_cols)
    ref = matrix.astype(np.float64)
    for i, (col,) in enumerate(ex_cols):
        s = ref[i, col]
        assert rc.above[i, 0] == (ref[i, :250] > s).sum()
        assert rc.ties[i, 0] == (ref[i, :250] == s).sum()


def test_float64_dense_submission_end_to_end(tiny, tmp_path):
    n_q, n_c = len(tiny.evaluated_queries), len(tiny.candidate_ids)
    n_d = len(tiny.distractor_ids)
    matrix = np.zeros((n_q, n_c))
    matrix[:, :n_d] = 0.5 - 1e-12
    for i, cols in enumerate(own_exemplar_columns(tiny)):
        matrix[i, cols] = 0.5
    matrix[0, 7] = 0.5 + 1e-12  # one distractor just above query 0's exemplar
    result = evaluate(dense_submission(tmp_path / "d64", matrix), tiny, FAST, QUIET)
    first = result["queries"][0]["exemplars"]
    assert [(e["above"], e["ties"], e["rank"]) for e in first] == [(1, 0, 2)] * len(first)
    rest = {
        c for q in result["queries"][1:] for e in q["exemplars"] for c in [e["above"], e["ties"]]
    }
    assert rest == {0}, "distinct float64 scores were rounded into ties"


# --------------------------------------------------------------------------------------------
# scale


def integer_features(rng: np.random.Generator, n: int, dim: int = 16) -> np.ndarray:
    """Integer vectors in [-50, 50] (no zero rows), float32."""
    x = rng.integers(-50, 51, size=(n, dim)).astype(np.float32)
    x[~x.any(axis=1), 0] = 1.0
    return x


def codebook_rows(rng: np.random.Generator, book: np.ndarray, n: int):
    """``n`` rows drawn from a small codebook: repeated rows give exact ties."""
    codes = rng.integers(0, len(book), size=n)
    return book[codes], codes


def assert_separated(qbook: np.ndarray, cbook: np.ndarray) -> None:
    """Honesty check: between two different candidate codes, no query code's float64 cosines
    are within 1e-5 (nor equal), so rounding scaled inputs (relative error ~6e-8) cannot flip
    an order; only a broken normalization can. Equal scores come from equal rows only, which
    a common scale keeps equal."""

    def unit(a):
        a = a.astype(np.float64)
        return a / np.linalg.norm(a, axis=1, keepdims=True)

    table = unit(qbook) @ unit(cbook).T
    gaps = np.diff(np.sort(table, axis=1), axis=1)
    assert gaps.min() > 1e-5


def scale_rows(x: np.ndarray, codes: np.ndarray, scale: str) -> np.ndarray:
    """``x`` times a factor, computed in float64 and stored as float32; "mixed" gives each
    codebook entry its own factor from 1e-30 to 1e30 (one factor for all copies of a row)."""
    factor = MIXED[codes % len(MIXED)][:, None] if scale == "mixed" else SCALES[scale]
    return (x.astype(np.float64) * factor).astype(np.float32)


MIXED = np.array([1e-30, 1e-10, 1.0, 1e10, 1e30])
SCALES = {"1e30": 1e30, "1e-30": 1e-30, "2**100": 2.0**100, "2**-100": 2.0**-100}


def tiny_features(tiny, seed: int = 0):
    """(queries, candidates, query codes, candidate codes) in export order."""
    rng = np.random.default_rng(seed)
    qbook, cbook = integer_features(rng, 20), integer_features(rng, 30)
    assert_separated(qbook, cbook)
    q, q_codes = codebook_rows(rng, qbook, len(tiny.evaluated_queries))
    c, c_codes = codebook_rows(rng, cbook, len(tiny.candidate_ids))
    return q, c, q_codes, c_codes


@pytest.mark.parametrize("scale", ["1e30", "1e-30", "mixed", "2**100", "2**-100"])
def test_features_submission_counts_do_not_depend_on_scale(tiny, tmp_path, scale):
    q, c, q_codes, c_codes = tiny_features(tiny)
    base = evaluate(features_submission(tmp_path / "x1", q, c), tiny, FAST, QUIET)
    assert any(t for _, t in counts_of(base)), "the codebook should give some exact ties"
    folder = features_submission(
        tmp_path / scale, scale_rows(q, q_codes, scale), scale_rows(c, c_codes, scale)
    )
    other = evaluate(folder, tiny, FAST, QUIET)
    assert counts_of(other) == counts_of(base)
    assert other["metrics"] == base["metrics"]


def test_float64_features_beyond_float32_are_refused_in_one_line(tiny, tmp_path):
    q, c, _, _ = tiny_features(tiny)
    c = c.astype(np.float64)
    c[3] *= 1e300
    d = features_submission(tmp_path / "f64", q, c)
    line = assert_user_error(invoke("evaluate", "-s", d, "-q", "-o", tmp_path / "out"))
    assert "c.npy" in line and "features.candidates" in line and tiny.distractor_ids[3] in line
    assert "float32" in line


def run_features(q, x, d, ex, ids=None):
    def chunks(size):
        for a in range(0, len(d), size):
            yield torch.from_numpy(d[a : a + size])

    return scoring.score_features(
        torch.from_numpy(q),
        torch.from_numpy(x),
        ex,
        chunks,
        query_ids=[f"q{i}" for i in range(len(q))],
        exemplar_ids=[tuple(f"x{j}" for j in e) for e in ex],
        top_n=10,
        distractor_ids=ids,
    )


@pytest.mark.parametrize("scale", ["1e30", "1e-30", "mixed", "2**100", "2**-100"])
def test_extractor_tensors_at_any_scale_give_identical_counts(engine, scale):
    """The extractor path hands float32 tensors to score_features: same check there."""
    rng = np.random.default_rng(1)
    qbook, cbook = integer_features(rng, 20), integer_features(rng, 30)
    assert_separated(qbook, cbook)
    (q, qc), (x, xc), (d, dc) = (
        codebook_rows(rng, book, n) for book, n in ((qbook, 30), (cbook, 20), (cbook, 500))
    )
    ex = [[i % 20, (i + 7) % 20] for i in range(30)]
    base = run_features(q, x, d, ex)
    other = run_features(
        scale_rows(q, qc, scale), scale_rows(x, xc, scale), scale_rows(d, dc, scale), ex
    )
    assert np.array_equal(other.above, base.above) and np.array_equal(other.ties, base.ties)
    assert (base.ties > 0).any()
    assert np.array_equal(other.top_index, base.top_index)
    if scale.startswith("2**"):  # power-of-two scales are bit-identical
        assert np.array_equal(other.top_scores, base.top_scores)


# --------------------------------------------------------------------------------------------
# zero rows


@pytest.mark.parametrize("which", ["query", "distractor", "exemplar"])
def test_zero_feature_row_is_one_line_naming_the_id(tiny, tmp_path, which):
    q, c, _, _ = tiny_features(tiny)
    n_d = len(tiny.distractor_ids)
    if which == "query":
        q[5] = 0
        needles = ("q.npy", "features.queries", tiny.evaluated_queries[5].query_id)
    elif which == "distractor":
        c[11] = 0
        needles = ("c.npy", "features.candidates", tiny.distractor_ids[11])
    else:
        c[n_d + 2] = 0
        needles = ("c.npy", "features.candidates", tiny.candidate_ids[n_d + 2])
    d = features_submission(tmp_path / which, q, c)
    assert_user_error(invoke("evaluate", "-s", d, "-q", "-o", tmp_path / "out"), *needles, "zero")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("which", ["query", "exemplar", "distractor"])
def test_zero_row_from_an_extractor_is_named(engine, which):
    rng = np.random.default_rng(2)
    q, x, d = (integer_features(rng, n) for n in (10, 5, 40))
    ex = [[i % 5] for i in range(10)]
    {"query": q, "exemplar": x, "distractor": d}[which][3] = 0
    with pytest.raises(AttribBenchError) as err:
        run_features(q, x, d, ex, ids=[f"laion-{i}" for i in range(40)])
    name = {"query": "'q3'", "exemplar": "'x3'", "distractor": "'laion-3'"}[which]
    assert f"{which} features" in str(err.value) and name in str(err.value)
    assert "all zeros" in str(err.value)


# --------------------------------------------------------------------------------------------
# options


@pytest.mark.parametrize(
    ("option", "value", "needle"),
    [
        ("--seed", "-1", "--seed"),
        ("--seed", str(2**63), "--seed"),
        ("--bootstrap-samples", str(10**9), "100,000"),
        ("--bootstrap-samples", "0", "--bootstrap-samples"),
        ("--ci-level", "1.5", "--ci-level"),
        ("--ci-level", "0", "--ci-level"),
        ("--ci-level", "nan", "--ci-level"),
    ],
)
def test_bad_numeric_option_is_one_line_before_any_work(tmp_path, option, value, needle):
    args = ["evaluate", "-s", SUBMISSIONS / "example_topk", "-q", "-o", tmp_path / "out"]
    assert_user_error(invoke(*args, option, value), needle)
    assert not (tmp_path / "out").exists()


def test_compare_negative_seed_is_one_line(tmp_path):
    assert_user_error(
        invoke("compare", tmp_path / "a.json", tmp_path / "b.json", "--seed", "-1"), "--seed"
    )


def test_library_bootstrap_refuses_bad_seeds_and_sizes():
    clusters = np.array(["a", "b", "b"])
    with pytest.raises(AttribBenchError, match="seed"):
        stats.cluster_bootstrap(np.ones(3), clusters, seed=-1, stream="s")
    with pytest.raises(AttribBenchError, match="100,000"):
        stats.cluster_resamples(clusters, 0, "s", stats.MAX_SAMPLES + 1)
    with pytest.raises(AttribBenchError, match="--seed"):
        EvalConfig(seed=-1)
    _, counts = stats.cluster_resamples(clusters, 0, "s", stats.MAX_SAMPLES)
    assert counts.shape == (stats.MAX_SAMPLES, 2) and counts.sum() == 2 * stats.MAX_SAMPLES


# --------------------------------------------------------------------------------------------
# parquet footer


def test_corrupt_footer_with_size_and_mtime_kept_is_one_line(tiny, tmp_path):
    root = tmp_path / "bench"
    shutil.copytree(tiny.root, root)
    load_benchmark(root)  # a successful check stamps every shard
    shard = root / tiny.manifest["tables"]["models"]["files"][0]["path"]
    st = shard.stat()
    time.sleep(0.05)  # past the kernel's coarse timestamp tick, so the ctime must move
    data = bytearray(shard.read_bytes())
    data[-12:-4] = b"\xff" * 8  # the footer: its length field ends 4 bytes before the end
    shard.write_bytes(bytes(data))
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert shard.stat().st_size == st.st_size and shard.stat().st_mtime_ns == st.st_mtime_ns
    line = assert_user_error(invoke("export", "--benchmark", root, "--out", tmp_path / "ids"))
    assert shard.name in line and "tables.models" in line
    assert "sha256 does not match" in line  # the stamp no longer vouches for the shard


def test_unreadable_shard_is_one_line_even_unverified(tiny, tmp_path):
    """Defence in depth: whatever let a bad shard through, pyarrow's failure is one line."""
    root = tmp_path / "bench"
    shutil.copytree(tiny.root, root)
    shard = root / tiny.manifest["tables"]["queries"]["files"][0]["path"]
    data = bytearray(shard.read_bytes())
    data[-12:-4] = b"\xff" * 8
    shard.write_bytes(bytes(data))
    with pytest.raises(BenchmarkError, match="cannot read this Parquet shard") as err:
        load_benchmark(root, verify=False)
    assert shard.name in str(err.value) and "splits verify" in str(err.value)


# --------------------------------------------------------------------------------------------
# yaml


EXAMPLE = (SUBMISSIONS / "example_topk" / "submission.yaml").read_text()


def yaml_error(tmp_path: Path, text: str, *needles: str) -> str:
    d = tmp_path / "sub"
    shutil.copytree(SUBMISSIONS / "example_topk", d)
    (d / "submission.yaml").write_text(text)
    with pytest.raises(AttribBenchError):
        load_submission(d)
    return assert_user_error(invoke("validate", d / "submission.yaml"), *needles)


def test_yaml_duplicate_key_is_refused(tmp_path):
    yaml_error(tmp_path, EXAMPLE + "name: someone-else\n", "name", "duplicate key")


def test_yaml_duplicate_nested_key_is_refused(tmp_path):
    text = EXAMPLE.replace("similarity: {", "similarity: {format: dense, ")
    assert text != EXAMPLE
    yaml_error(tmp_path, text, "format", "duplicate key")


def test_yaml_aliases_are_refused(tmp_path):
    text = EXAMPLE + "url: &a https://x.invalid\n"
    yaml_error(tmp_path, text, "aliases")


def test_yaml_larger_than_the_cap_is_refused_before_parsing(tmp_path):
    text = EXAMPLE + "# " + "x" * MAX_CONFIG_BYTES + "\n"
    yaml_error(tmp_path, text, "64 KiB")


def test_long_description_is_refused_in_a_short_line(tmp_path):
    text = EXAMPLE.replace("description: ", "description: " + "y" * 20000 + " ", 1)
    yaml_error(tmp_path, text, "description", "too long")


def test_deep_nesting_is_refused_not_a_traceback(tmp_path):
    text = EXAMPLE + "url: " + "[" * 5000 + "]" * 5000 + "\n"
    yaml_error(tmp_path, text, "nested")
