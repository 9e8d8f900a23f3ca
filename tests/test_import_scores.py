"""AbU's track and peers' score formats (benchmark/abu_track.py, benchmark/import_scores.py).

Every format round-trips: scores computed from known features are written in that tool's
layout, imported, evaluated, and must give exactly the metrics of the same features scored
directly. AbU runs on a miniature AbU view of the miniature official release
(tests/test_abc_import.py), and is also checked against an independent evaluation of the
raw influence vectors (exemplars first), the way AbU's own scripts read them.
"""

from __future__ import annotations

import builtins
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from test_abc_import import CASES, N_LAION, build_miniature

from benchmark.abc_import import import_abc
from benchmark.cli import main
from benchmark.errors import AttribBenchError
from benchmark.evaluation import EvalConfig, RunOptions, evaluate
from benchmark.export import dense_scores
from benchmark.fileio import sha256_file
from benchmark.folder_benchmark import FolderBenchmark
from benchmark.import_scores import ScoreOptions, import_scores
from benchmark.splits import load_benchmark
from benchmark.submission import load_submission

DIM = 6
N_ABU = 20  # --num-distractors of the miniature view (of N_LAION = 30)


def run_eval(sub, bench):
    sub = load_submission(sub) if isinstance(sub, Path) else sub
    r = evaluate(
        sub, bench, EvalConfig(bootstrap_samples=20), RunOptions(progress=False, cache=False)
    )
    return r["metrics"]


def assert_same_metrics(got, want):
    assert len(got) == len(want) > 0
    for a, b in zip(got, want, strict=True):
        assert (a["test_case"], a["prompt_type"]) == (b["test_case"], b["prompt_type"])
        for m, v in b["metrics"].items():
            for k in ("value", "ci_low", "ci_high"):
                assert a["metrics"][m][k] == pytest.approx(v[k], abs=1e-12), (a["test_case"], m)


def features_submission(bench, feats: dict[str, np.ndarray], out: Path) -> Path:
    """A features submission with ``feats[id]`` for every query and candidate."""
    out.mkdir(parents=True, exist_ok=True)
    qids = [q.query_id for q in bench.evaluated_queries]
    np.save(out / "q.npy", np.stack([feats[i] for i in qids]))
    np.save(out / "c.npy", np.stack([feats[i] for i in bench.candidate_ids]))
    (out / "submission.yaml").write_text(
        "schema_version: 1\nname: direct\nkind: features\ndescription: d\nlicense: MIT\n"
        f"benchmark: {bench.name}@{bench.version}\n"
        "features: {queries: {file: q.npy}, candidates: {file: c.npy}}\n"
    )
    return out


def random_features(bench, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = [q.query_id for q in bench.queries] + list(bench.exemplar_ids)
    ids += list(bench.distractor_ids)
    return {i: rng.standard_normal(DIM).astype(np.float32) for i in ids}


def one_line_error(args, message: str) -> str:
    res = CliRunner().invoke(main, [str(a) for a in args])
    line = res.output.strip()
    assert res.exit_code == 2, res.output
    assert line.startswith("error: ") and "\n" not in line and message in line, line
    return line


# --------------------------------------------------------------------------------------------
# the AbU view


def abu_tasks(ds: Path) -> list[dict]:
    """All queries of the miniature as AbU tasks, plus one image only under synth_test/."""
    tasks = []
    for name, (folder, _models, _) in CASES.items():
        if not name.startswith("test_"):
            continue
        entries = json.loads((ds / "json" / f"{name}.json").read_text())
        for ind, e in enumerate(entries):
            for ptype, paths in e["synth"].items():
                for p in paths:
                    tasks.append(
                        {
                            "synth_image_path": p.removeprefix("dataset/"),
                            "prompt": f"a {ptype} prompt",
                            "test_case": name,
                            "test_case_ind": ind,
                            "model_path": f"models/{folder}/{e['class_id']}",
                            "train_prompt": "<new1>",
                            "category": e["category"] or "art",
                        }
                    )
    extra = "synth/bamfg/gpt/204311_2/samples/00099.png"  # not in the test JSON
    (ds / "synth_test" / extra.removeprefix("synth/")).write_bytes(b"\x89PNG extra sample")
    tasks.append({**tasks[-1], "synth_image_path": extra, "test_case": "test_bamfg"})
    tasks[-1].update(test_case_ind=1, model_path="models/bamfg/204311_2")
    return tasks


@pytest.fixture(scope="module")
def abu(tmp_path_factory):
    root = tmp_path_factory.mktemp("abu")
    ds = build_miniature(root, seed=11)
    source = import_abc(ds, root / "abc", show_progress=False)
    tasks = abu_tasks(ds)
    (root / "all_tasks.json").write_text(json.dumps(tasks))
    res = CliRunner().invoke(
        main,
        [
            "splits",
            "derive-abu",
            str(root / "abc"),
            str(root / "all_tasks.json"),
            "--dest",
            str(root / "view"),
            "--num-distractors",
            str(N_ABU),
            "--partial",
        ],
    )
    assert res.exit_code == 0, res.output
    return root, ds, source, load_benchmark(root / "view"), tasks


def test_abu_view_is_a_recorded_subset(abu):
    root, _ds, source, view, tasks = abu
    assert isinstance(view, FolderBenchmark)
    assert [q.query_id for q in view.queries] == ["dataset/" + t["synth_image_path"] for t in tasks]
    assert view.distractor_ids == source.distractor_ids[:N_ABU] and N_ABU < N_LAION
    assert {m.model_id for m in view.models} == {q.model_id for q in view.queries}
    assert view.queries[0].prompt == tasks[0]["prompt"]
    gen = view.manifest["generator"]
    assert gen["track"] == "abu" and gen["partial"] is True and gen["tasks"] == len(tasks)
    assert gen["derived_from"]["manifest_sha256"] == source.manifest_sha256
    assert gen["tasks_sha256"] == sha256_file(root / "all_tasks.json")
    assert gen["num_distractors"] == N_ABU and gen["queries_from_source_folder"] == 1
    assert view.manifest["counts"]["distractors"] == N_ABU
    last = view.queries[-1]
    assert last.model_id == "204311_2" and last.prompt_type.value == "gpt"
    (block,) = view.iter_image_blocks("queries", {last.query_id})
    assert block.images == (b"\x89PNG extra sample",)
    assert "PARTIAL" in (root / "view" / "README.md").read_text()
    res = CliRunner().invoke(main, ["splits", "verify", str(root / "view")])
    assert res.exit_code == 0, res.output


def abu_reference(view, influence: dict[str, np.ndarray], ks=(5, 10)) -> dict:
    """AbU's reading of its vectors, written independently: the first E entries are the
    model's exemplars; AP over the full argsort; recall@K = hits / E."""
    cells: dict = {}
    for q in view.queries:
        v = influence[q.query_id]
        e = len(view.model(q.model_id).exemplar_ids)
        hits = np.argsort(-v, kind="stable") < e
        ranks = np.flatnonzero(hits) + 1
        row = [np.mean(np.arange(1, e + 1) / ranks)] + [hits[:k].sum() / e for k in ks]
        cells.setdefault((q.part.value, q.prompt_type.value), []).append(row)
    return {c: np.mean(rows, 0) for c, rows in cells.items()}


def test_abu_influence_roundtrip(abu, tmp_path):
    _, _, _, view, _ = abu
    feats = random_features(view, 5)
    results = tmp_path / "results" / "influence"
    influence = {}
    for i, q in enumerate(view.queries):
        ex = view.model(q.model_id).exemplar_ids
        gallery = np.stack([feats[x] for x in (*ex, *view.distractor_ids)])
        vec = dense_scores(feats[q.query_id][None], gallery)[0].astype(np.float64)
        influence[q.query_id] = vec
        folder = results / q.query_id.removeprefix("dataset/synth/")
        folder.mkdir(parents=True)
        if i % 2:
            np.save(folder / "influence.npy", vec)
        else:
            with open(folder / "influence.pkl", "wb") as f:
                pickle.dump({"influence": vec, "rank": np.argsort(-vec)}, f)
    res = CliRunner().invoke(
        main,
        [
            "import-scores",
            "abu",
            str(results.parent),
            "-b",
            str(view.root),
            "--out",
            str(tmp_path / "s"),
        ],
    )
    assert res.exit_code == 0, res.output
    got = run_eval(tmp_path / "s", view)
    args = ["evaluate", "-s", tmp_path / "s", "--benchmark", view.root, "-q"]
    res = CliRunner().invoke(main, [*map(str, args), "--output", str(tmp_path / "r.json")])
    assert res.exit_code == 0 and "style-unseen" in res.output, res.output  # `--benchmark DIR`
    assert_same_metrics(got, run_eval(features_submission(view, feats, tmp_path / "f"), view))
    ref = abu_reference(view, influence)
    for cell in got:
        want = ref[(cell["test_case"], cell["prompt_type"])]
        assert cell["metrics"]["mAP"]["value"] == pytest.approx(want[0], abs=1e-12)
        assert cell["metrics"]["recall@5"]["value"] == pytest.approx(want[1], abs=1e-12)
        assert cell["metrics"]["recall@10"]["value"] == pytest.approx(want[2], abs=1e-12)
    # a missing query is an error, never a zero
    victim = next(results.rglob("influence.npy"))
    victim.rename(victim.with_suffix(".bak"))
    one_line_error(
        ["import-scores", "abu", results, "-b", view.root, "--out", tmp_path / "t"],
        "1 of the benchmark's 49 queries have no influence file",
    )
    victim.with_suffix(".bak").rename(victim)
    np.save(victim, np.zeros(N_ABU + 5))  # AbU run with another --laion_subset_size
    one_line_error(
        ["import-scores", "abu", results, "-b", view.root, "--out", tmp_path / "t"],
        "--num-distractors equal to AbU's",
    )


def _edit_tasks(tasks, change):
    tasks = json.loads(json.dumps(tasks))
    change(tasks)
    return tasks


@pytest.mark.parametrize(
    ("change", "extra", "message"),
    [
        (lambda t: t[0].update(test_case_ind=7), ["--partial"], "7 is out of range"),
        (
            lambda t: t[0].update(
                synth_image_path="synth/imagenet/gpt/n01518878_0008/samples/x.png"
            ),
            ["--partial"],
            "is not a query of the imported benchmark, nor a file under",
        ),
        (lambda t: t[0].update(test_case_ind=1), ["--partial"], "is not model 1 of"),
        (
            lambda t: t[0].update(model_path=t[7]["model_path"], test_case_ind=1),
            ["--partial"],
            "belongs to model 'n01518878_0008', but test_case_ind points to",
        ),
        (lambda t: t.append(dict(t[0])), ["--partial"], "is listed twice"),
        (lambda t: t[0].pop("test_case_ind"), ["--partial"], "needs the keys"),
        (lambda t: None, [], "tasks; AbU's track has 400"),
        (lambda t: None, ["--partial", "--num-distractors", "31"], "fewer than --num-distractors"),
    ],
)
def test_derive_abu_bad_input_one_line(abu, tmp_path, change, extra, message):
    root, _, _, _, tasks = abu
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps(_edit_tasks(tasks, change)))
    one_line_error(
        [
            "splits",
            "derive-abu",
            root / "abc",
            path,
            "--dest",
            tmp_path / "v",
            "--num-distractors",
            N_ABU,
            *extra,
        ],
        message,
    )


def test_push_refuses_folder_backed(abu):
    root = abu[0]
    for folder in ("abc", "view"):
        one_line_error(
            ["splits", "push", root / folder, "--repo-id", "o/n", "--dry-run"], "--pack it first"
        )


# --------------------------------------------------------------------------------------------
# matrix formats on abc-tiny


@pytest.fixture(scope="module")
def tiny_scores(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("direct")
    feats = random_features(tiny, 3)
    sub = features_submission(tiny, feats, out)
    q = np.stack([feats[x.query_id] for x in tiny.evaluated_queries])
    c = np.stack([feats[x] for x in tiny.candidate_ids])
    return dense_scores(q, c), run_eval(sub, tiny)


def _write_ids(path: Path, ids) -> Path:
    path.write_text("".join(f"{i}\n" for i in ids))
    return path


def test_matrix_formats_roundtrip(tiny, tiny_scores, tmp_path):
    scores, want = tiny_scores
    qids = [q.query_id for q in tiny.evaluated_queries]
    cands = list(tiny.candidate_ids)
    rng = np.random.default_rng(0)
    qp, cp = rng.permutation(len(qids)), rng.permutation(len(cands))
    # AbU-style gallery order (exemplars first) given by ids, and shuffled query rows
    ex_first = np.r_[
        np.arange(len(tiny.distractor_ids), len(cands)), np.arange(len(tiny.distractor_ids))
    ]
    ids_q = _write_ids(tmp_path / "q.txt", [qids[i] for i in qp])
    ids_c = _write_ids(tmp_path / "c.txt", [cands[i] for i in cp])
    ids_ex = _write_ids(tmp_path / "ex.txt", [cands[i] for i in ex_first])
    np.save(tmp_path / "plain.npy", scores)
    np.save(tmp_path / "shuffled.npy", scores[qp][:, cp])
    np.save(tmp_path / "tq.npy", np.ascontiguousarray(scores[qp][:, ex_first].T))
    torch.save({"scores": torch.from_numpy(scores.T.copy())}, tmp_path / "dattri.pt")
    np.save(tmp_path / "dist.npy", (1 - scores[:, ex_first]).astype(np.float64))
    rank = np.argsort(-scores[qp], axis=1, kind="stable")  # FastGDA: most influential first
    with open(tmp_path / "fastgda.pkl", "wb") as f:
        pickle.dump(
            {"test": {"influence": -scores[qp], "rank": rank, "map": {5: np.float64(1)}}}, f
        )
    np.save(tmp_path / "fastgda.npy", rank[np.argsort(qp)])
    cases = [
        ("generic", "plain.npy", []),
        ("generic", "shuffled.npy", ["--ids", ids_q, ids_c]),
        ("generic", "tq.npy", ["--orientation", "train_x_query", "--ids", ids_q, ids_ex]),
        ("train_x_query", "tq.npy", ["--ids", ids_q, ids_ex]),
        ("train_x_query", "dattri.pt", []),
        ("generic", "dist.npy", ["--lower-is-better", "--ids", tmp_path / "none", ids_ex]),
        (
            "fastgda",
            "fastgda.pkl",
            ["--key", "test.rank", "--ids", ids_q, ids_c.parent / "all.txt"],
        ),
        ("fastgda", "fastgda.npy", []),
    ]
    _write_ids(tmp_path / "none", qids)
    _write_ids(tmp_path / "all.txt", cands)
    for i, (fmt, name, extra) in enumerate(cases):
        out = tmp_path / f"sub{i}"
        args = ["import-scores", fmt, tmp_path / name, "-b", tiny.root, "--out", out, *extra]
        res = CliRunner().invoke(main, [str(a) for a in args])
        assert res.exit_code == 0, (fmt, name, res.output)
        assert_same_metrics(run_eval(out, tiny), want)


def test_fastgda_order_and_ties_documented(tiny, tmp_path):
    """Ranks become G - position: order kept, best = G, no ties; float32 exact."""
    g = len(tiny.candidate_ids)
    rank = np.tile(np.arange(g)[::-1], (len(tiny.evaluated_queries), 1))
    np.save(tmp_path / "r.npy", rank)
    import_scores("fastgda", tmp_path / "r.npy", tiny, tmp_path / "s", ScoreOptions())
    got = np.load(tmp_path / "s" / "scores.npy")
    assert got.dtype == np.float32 and (got[0] == np.arange(1, g + 1)).all()
    rank[3, :2] = 0  # not a permutation
    np.save(tmp_path / "r.npy", rank)
    with pytest.raises(AttribBenchError, match="rank row 3 is not a permutation"):
        import_scores("fastgda", tmp_path / "r.npy", tiny, tmp_path / "s", ScoreOptions())


def test_missing_or_unknown_rows_are_errors(tiny, tiny_scores, tmp_path):
    scores, _ = tiny_scores
    qids = [q.query_id for q in tiny.evaluated_queries]
    cands = _write_ids(tmp_path / "c.txt", tiny.candidate_ids)
    np.save(tmp_path / "s.npy", scores[1:])
    base = [
        "import-scores",
        "generic",
        tmp_path / "s.npy",
        "-b",
        tiny.root,
        "--out",
        tmp_path / "o",
    ]
    one_line_error(base, "223 queries, the benchmark has 224")
    ids = _write_ids(tmp_path / "q.txt", qids[1:])
    one_line_error([*base, "--ids", ids, cands], "1 of the benchmark's queries have no scores")
    _write_ids(tmp_path / "q.txt", ["dataset/not-a-query.png", *qids[2:]])
    one_line_error([*base, "--ids", ids, cands], "1 ids are not in the benchmark")
    np.save(tmp_path / "s.npy", np.ascontiguousarray(scores.T))
    one_line_error(base, "check --orientation")
    np.save(tmp_path / "s.npy", scores)
    import_scores("generic", tmp_path / "s.npy", tiny, tmp_path / "o", ScoreOptions())
    assert (tmp_path / "o" / "submission.yaml").is_file()
    bad = scores.copy()
    bad[5, 7] = np.nan
    np.save(tmp_path / "s.npy", bad)
    one_line_error(base, "NaN or inf scores (query row 5)")
    # a failed import leaves no old submission.yaml beside partial scores
    assert not (tmp_path / "o" / "submission.yaml").exists()
    assert not (tmp_path / "o" / "scores.npy").exists()


class _Evil:
    def __init__(self, fn, arg):
        self.fn, self.arg = fn, arg

    def __reduce__(self):
        return (self.fn, (self.arg,))


@pytest.mark.parametrize(
    ("payload", "needs"),
    [
        (lambda marker: _Evil(os.system, f"touch {marker}"), "system"),
        (lambda marker: _Evil(builtins.eval, f"open({str(marker)!r}, 'w')"), "builtins.eval"),
        (lambda marker: _Evil(builtins.open, str(marker)), "io.open"),
        (lambda marker: {"influence": np.ma.masked_array([1.0, 2.0])}, "numpy.ma.core"),
        (lambda marker: {"influence": _Evil(np.load, str(marker))}, "numpy.load"),
    ],
)
def test_unsafe_pickles_refused(abu, tmp_path, payload, needs):
    """Only numpy's array reconstruction globals load; nothing else is ever called."""
    _, _, _, view, _ = abu
    marker = tmp_path / "pwned"
    results = tmp_path / "r"
    for q in view.queries:
        folder = results / q.query_id.removeprefix("dataset/synth/")
        folder.mkdir(parents=True)
        with open(folder / "influence.pkl", "wb") as f:
            pickle.dump(payload(marker), f)
    line = one_line_error(
        ["import-scores", "abu", results, "-b", view.root, "--out", tmp_path / "o"], "refused"
    )
    assert needs in line and "only numpy arrays" in line
    assert not marker.exists()
    with open(tmp_path / "g.pkl", "wb") as f:
        pickle.dump(payload(marker), f)
    one_line_error(
        ["import-scores", "generic", tmp_path / "g.pkl", "-b", view.root, "--out", tmp_path / "o"],
        needs,
    )
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_numpy_pickles_load_under_every_protocol(tmp_path, protocol):
    from benchmark.safe_pickle import NumpyOnlyUnpickler, load_numpy_pickle

    assert issubclass(NumpyOnlyUnpickler, pickle.Unpickler)
    data = {
        "influence": np.linspace(-1, 1, 7),
        "rank": np.arange(7)[::-1].copy(),
        "half": np.ones((2, 3), np.float16, order="F"),
        "nested": [(np.int32(3), None, "x", b"y")],
    }
    (tmp_path / "a.pkl").write_bytes(pickle.dumps(data, protocol=protocol))
    got = load_numpy_pickle(tmp_path / "a.pkl")
    for k in ("influence", "rank", "half"):
        np.testing.assert_array_equal(got[k], data[k])
        assert got[k].dtype == data[k].dtype
    assert got["nested"] == data["nested"]
