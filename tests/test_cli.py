"""Happy paths of the ``attrib-bench`` CLI, through click's CliRunner, on abc-tiny."""

from __future__ import annotations

import json
import re
import traceback
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from benchmark import __version__
from benchmark.cli import main
from benchmark.metrics import MEASURES
from benchmark.types import PART_ALIASES, TEST_CASES, Part

SUBMISSIONS = Path(__file__).resolve().parents[1] / "submissions"
EXAMPLES = {
    "extractor": "example_extractor",
    "features": "example_features",
    "similarity": "example_similarity",
    "topk": "example_topk",
}
RUNNER = CliRunner()


def invoke(*args: object) -> Result:
    return RUNNER.invoke(main, [str(a) for a in args])


def ok(result: Result) -> Result:
    """Assert exit 0 with nothing on stderr; show the traceback otherwise."""
    detail = ""
    if result.exc_info is not None and not isinstance(result.exception, SystemExit):
        detail = "".join(traceback.format_exception(*result.exc_info))
    assert result.exit_code == 0, f"exit {result.exit_code}\n{result.output}\n{detail}"
    assert result.stderr == "", result.stderr
    return result


@pytest.fixture(scope="module")
def runs(tiny, tmp_path_factory) -> dict[str, tuple[Result, Path]]:
    """``evaluate --quiet --output`` once per example kind: (CLI result, output folder)."""
    out = {}
    for kind, example in EXAMPLES.items():
        folder = tmp_path_factory.mktemp(f"eval-{kind}")
        args = ("evaluate", "-s", SUBMISSIONS / example, "-b", "abc-tiny", "-q", "-o", folder)
        out[kind] = (invoke(*args), folder)
    return out


# evaluate --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", EXAMPLES)
def test_evaluate_prints_table_and_writes_result(runs, kind):
    result, folder = runs[kind]
    ok(result)
    lines = result.stdout.splitlines()
    name = EXAMPLES[kind].replace("_", "-")
    assert lines[0].startswith(f"{name} (")
    assert "abc-tiny 1.0.0" in lines[0]
    assert lines[1].split()[:4] == ["test", "case", "prompt", "models"]
    for part in TEST_CASES:
        assert any(line.startswith(part.value) for line in lines), part.value
    assert lines[-1] == f"wrote {folder / 'result.json'}"
    data = json.loads((folder / "result.json").read_text())
    assert data["submission"]["name"] == name
    assert {c["test_case"] for c in data["metrics"]} == {p.value for p in TEST_CASES}
    # no progress bars with --quiet: nothing but the table, the notes and the path
    assert not any("it/s" in line for line in lines)


def test_evaluate_topk_is_flagged_as_bounded(runs):
    result, folder = runs["topk"]
    assert "note: " in result.stdout and "bounded" in result.stdout
    assert json.loads((folder / "result.json").read_text())["exact"] is False


@pytest.mark.parametrize("kind", EXAMPLES)
def test_validate_accepts_written_result(runs, kind):
    _, folder = runs[kind]
    path = folder / "result.json"
    result = ok(invoke("validate", path))
    assert result.stdout.strip() == f"{path}: valid result"


def test_evaluate_json_prints_the_written_result(tiny, tmp_path):
    result = ok(
        invoke("evaluate", "-s", SUBMISSIONS / "example_similarity", "-q", "-o", tmp_path, "--json")
    )
    printed = json.loads(result.stdout)
    assert printed == json.loads((tmp_path / "result.json").read_text())
    assert printed["submission"]["kind"] == "similarity"
    assert printed["benchmark"]["name"] == "abc-tiny"


def test_evaluate_default_output_folder(tiny, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = ok(invoke("evaluate", "-s", SUBMISSIONS / "example_topk", "-q"))
    path = Path("results") / "abc-tiny" / "example-topk" / "result.json"
    assert result.stdout.splitlines()[-1] == f"wrote {path}"
    assert (tmp_path / path).is_file()


# validate (other file kinds) ---------------------------------------------------------------


@pytest.mark.parametrize("kind", EXAMPLES)
def test_validate_submission(kind):
    folder = SUBMISSIONS / EXAMPLES[kind]
    expected = "extractor" if kind == "extractor" else kind.replace("topk", "similarity")
    for target in (folder, folder / "submission.yaml"):
        result = ok(invoke("validate", target))
        assert result.stdout.strip() == f"{target}: valid submission ({expected})"


def test_validate_manifest(tiny):
    path = tiny.root / "manifest.json"
    result = ok(invoke("validate", path))
    assert result.stdout.strip() == f"{path}: valid manifest (abc-tiny 1.0.0)"


# selfcheck ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", EXAMPLES)
def test_selfcheck(tiny, kind):
    result = ok(invoke("selfcheck", SUBMISSIONS / EXAMPLES[kind]))
    lines = result.stdout.splitlines()
    assert lines[0].startswith("ok   submission.yaml is valid")
    assert any(line.startswith("ok   scored 224 queries on abc-tiny 1.0.0") for line in lines)
    for part in TEST_CASES:
        assert any(line.strip().startswith(part.value) for line in lines), part.value
    assert lines[-1] == "selfcheck passed"


# list --------------------------------------------------------------------------------------


def test_list_benchmarks():
    for args in (["list"], ["list", "benchmarks"]):
        result = ok(invoke(*args))
        lines = result.stdout.splitlines()
        assert lines[0].startswith("abc-mini (default)\t") and lines[1].startswith("abc-tiny\t")


def test_list_test_cases():
    result = ok(invoke("list", "test-cases"))
    rows = {line.split("\t")[0]: line.split("\t")[1:] for line in result.stdout.splitlines()}
    assert set(rows) == {p.value for p in Part}
    for part in TEST_CASES:
        assert rows[part.value][0] == "test"
    assert rows["train"][0] == rows["val"][0] == "tuning"
    assert "artchive" in rows["style-unseen"][1]
    assert "bam-fg" in rows["style-seen"][1]
    for alias, part in PART_ALIASES.items():
        assert alias in rows[part.value][1].split(", ")


def test_list_measures():
    result = ok(invoke("list", "measures"))
    lines = result.stdout.splitlines()
    assert [line.split("\t")[0] for line in lines] == [m.name for m in MEASURES]
    assert "mAP\thigher is better" in lines
    assert "recall@100\thigher is better" in lines


def test_list_rejects_unknown_topic():
    result = invoke("list", "models")
    assert result.exit_code == 2
    assert "Traceback" not in result.output


# export ------------------------------------------------------------------------------------


def test_export(tiny, tmp_path):
    out = tmp_path / "ids"
    result = ok(invoke("export", "-b", "abc-tiny", "--out", out))
    names = ("queries.tsv", "candidates.txt", "positives.tsv")
    assert result.stdout.splitlines() == [f"wrote {out / n}" for n in names]
    assert sorted(p.name for p in out.iterdir()) == sorted(names)

    queries = (out / "queries.tsv").read_text().splitlines()
    assert queries[0] == "query_id\tmodel_id\ttest_case\tprompt_type"
    assert [q.split("\t")[0] for q in queries[1:]] == [q.query_id for q in tiny.evaluated_queries]

    candidates = (out / "candidates.txt").read_text().splitlines()
    assert len(candidates) == len(tiny.candidate_ids)
    assert len(candidates) == len(tiny.distractor_ids) + len(tiny.evaluated_exemplar_ids)
    assert candidates == list(tiny.candidate_ids)

    positives = (out / "positives.tsv").read_text().splitlines()
    assert positives[0] == "query_id\texemplar_id"
    assert len(positives) - 1 == sum(1 for _ in tiny.positives())


def test_export_named_benchmark(tiny, tmp_path):
    ok(invoke("export", "-b", "abc-tiny", "--out", tmp_path))
    assert len((tmp_path / "candidates.txt").read_text().splitlines()) == len(tiny.candidate_ids)


# compare -----------------------------------------------------------------------------------

ROW = re.compile(
    r"^(?P<case>\S+)\s+(?P<prompt>\S+)\s+(?P<measure>\S+)\s+(?P<a>-?\d\.\d{3})\s+"
    r"(?P<b>-?\d\.\d{3})\s+(?P<diff>[+-]\d\.\d{3})\s+\[[+-]\d\.\d{3}, [+-]\d\.\d{3}\]( \*)?$"
)


def test_compare_refuses_bounded_topk(runs):
    a, b = runs["extractor"][1] / "result.json", runs["topk"][1] / "result.json"
    result = invoke("compare", a, b)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"error: {b}: queries: ")
    assert "bounded" in lines[0] and "(fix: " in lines[0]


def test_compare_extractor_with_features(runs):
    a, b = runs["extractor"][1] / "result.json", runs["features"][1] / "result.json"
    result = ok(invoke("compare", a, b))
    lines = result.stdout.splitlines()
    assert lines[0] == "A = example-extractor, B = example-features (abc-tiny 1.0.0)"
    assert lines[1].split()[:5] == ["test", "case", "prompt", "measure", "A"]
    assert lines[-1] == "* the interval excludes 0"
    rows = [ROW.match(line) for line in lines[2:-1]]
    assert all(rows), lines
    # default measures: mAP and recall@10, for every test case x prompt type cell
    assert {r["measure"] for r in rows} == {"mAP", "recall@10"}
    assert {r["case"] for r in rows} == {p.value for p in TEST_CASES}
    assert len(rows) == 2 * 8
    # float16 features of the same extractor: not identical, but close
    assert all(abs(float(r["diff"])) < 0.05 for r in rows)


def test_compare_measure_option(runs):
    a = runs["extractor"][1] / "result.json"
    result = ok(invoke("compare", a, a, "-m", "MRR", "-m", "hit@5"))
    rows = [ROW.match(line) for line in result.stdout.splitlines()[2:-1]]
    assert all(rows)
    assert {r["measure"] for r in rows} == {"MRR", "hit@5"}
    assert all(float(r["diff"]) == 0 for r in rows)


# misc --------------------------------------------------------------------------------------


def test_version():
    result = ok(invoke("--version"))
    assert result.stdout.strip() == f"attrib-bench, version {__version__}"


def test_help_lists_commands():
    result = ok(invoke("--help"))
    for command in ("evaluate", "selfcheck", "validate", "list", "export", "compare"):
        assert command in result.stdout


def test_a_flat_calibration_is_reported_as_uniform(runs):
    from benchmark.format import result_table as render_table

    data = json.loads((runs["features"][1] / "result.json").read_text())
    assert "tau=" in render_table(data).splitlines()[-1]
    data["calibration"]["calibrator"]["threshold"] = 1.03e8
    last = render_table(data).splitlines()[-1]
    assert last.startswith("calibration (fit on val, uniform over the candidates, b=1.03e+08)")
