"""The leaderboard: store checks, verification, markdown, reports, and Hub push logic (merge,
refusal, dry run) against an in-memory Hub that stands in for the network only."""

from __future__ import annotations

import copy
import json
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from PIL import Image

from baselines.models import baseline_submission
from benchmark import leaderboard as lb
from benchmark import publish, ranking
from benchmark.cli import main
from benchmark.errors import AttribBenchError, ResultError
from benchmark.evaluation import EvalConfig, RunOptions, evaluate
from benchmark.fileio import read_json
from benchmark.report import top_candidates, write_report
from benchmark.results import load_result, store_result
from tests.conftest import SUBMISSIONS

QUIET = RunOptions(progress=False)


@pytest.fixture(scope="module")
def results(tiny):
    """Three real results on abc-tiny."""
    return {
        "example": evaluate(SUBMISSIONS / "example_extractor", tiny, options=QUIET),
        "pixels": evaluate(baseline_submission("pixels"), tiny, options=QUIET),
        "random": evaluate(baseline_submission("random"), tiny, options=QUIET),
    }


@pytest.fixture
def store(tmp_path, results):
    root = tmp_path / "leaderboard"
    for r in results.values():
        store_result(root / lb.RESULTS_DIR, r)
    return root


# --------------------------------------------------------------------------------------------
# store, verification, markdown


def test_store_reads_entries_by_key_and_refuses_misfiled_ones(store, results):
    entries = lb.read_store(store)
    assert sorted(e.name for e in entries) == ["example-extractor", "pixels", "random"]
    assert all(e.verified is None for e in entries)
    wrong = store / lb.RESULTS_DIR / entries[0].path.parent.name / "someone-else.json.gz"
    wrong.write_bytes(entries[0].path.read_bytes())
    with pytest.raises(ResultError, match="filed under another name"):
        lb.read_store(store)


def test_verify_marks_a_reproduced_entry_and_the_badge_follows_the_file(store, tiny, results):
    fresh = evaluate(
        baseline_submission("pixels"), tiny, options=RunOptions(progress=False, cache=False)
    )
    record = lb.verify(store, fresh)
    assert record["max_abs_metric_difference"] == 0.0
    marked = {e.name: e.verified is not None for e in lb.read_store(store)}
    assert marked == {"example-extractor": False, "pixels": True, "random": False}
    # The stored file is now the re-run itself, and the record binds its bytes.
    [entry] = [e for e in lb.read_store(store) if e.name == "pixels"]
    assert entry.result == fresh and entry.verified["file_sha256"] == entry.file_sha256
    # Replacing the stored result (needs replace=True) drops its badge.
    tampered = copy.deepcopy(results["pixels"])
    mAP = tampered["metrics"][0]["metrics"]["mAP"]
    mAP["value"] = mAP["ci_high"]
    store_result(store / lb.RESULTS_DIR, tampered, replace=True)
    assert not any(e.verified for e in lb.read_store(store))
    # ...and the tampered entry does not verify: the honest re-run disagrees with it.
    with pytest.raises(ResultError, match="does not reproduce"):
        lb.verify(store, fresh)


def test_verify_refuses_other_files(store, results):
    other = copy.deepcopy(results["random"])
    other["submission"]["sha256"] = "1" * 64
    other["submission"]["files"] = {"code:baselines": "2" * 64}
    with pytest.raises(ResultError, match=r"the re-run's files differ .code:baselines"):
        lb.verify(store, other)


def test_markdown_has_one_ranked_row_per_entry(store):
    entries = lb.read_store(store)
    text = lb.markdown(entries)
    assert "## abc-tiny@" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and "](" in line]
    assert len(rows) == 3  # one row per entry, not per cell
    heads = {e.name: ranking.headline_score(e.result) for e in entries}
    shown = []
    for place, line in enumerate(rows, start=1):
        cells = [c.strip() for c in line.strip("|").split("|")]
        name = cells[1].split("]")[0].lstrip("[")
        assert cells[0] == str(place) and cells[1].endswith(f"/{name}/index.html)")
        assert cells[2] == "self-reported" and float(cells[3]) == round(heads[name], 3)
        assert 1.0 <= float(cells[4]) <= 3.0
        shown.append(heads[name])
    assert shown == sorted(shown, reverse=True)


def test_influence_is_the_calibrated_share_of_the_candidates(tiny):
    r = evaluate(
        SUBMISSIONS / "example_extractor",
        tiny,
        config=EvalConfig(top_n=10, store_top=10),
        options=QUIET,
    )
    for q in r["queries"]:
        total = sum(e.get("influence", 0.0) for e in q["exemplars"])
        total += sum(d[2] for d in q["top_distractors"])
        assert abs(total - 1.0) < 1e-9  # every candidate is stored: the shares sum to one


def test_top_candidates_merge_exemplars_and_distractors_by_score():
    q = {
        "exemplars": [
            {"id": "e1", "score": 0.5, "influence": 0.3},
            {"id": "e2", "score": -0.2, "influence": 0.0},
        ],
        "top_distractors": [["d1", 0.9, 0.6], ["d2", 0.5, 0.1], ["d3", 0.1, 0.0]],
    }
    top = top_candidates(q, 3)
    assert [c["id"] for c in top] == ["d1", "e1", "d2"]  # a tied exemplar comes first
    assert [c["exemplar"] for c in top] == [False, True, False]


def test_report_writes_page_and_pngs(results, tiny, tmp_path):
    path = write_report(results["pixels"], tmp_path / "r", tiny)
    page = path.read_text()
    for png in ("recall_at_k.png", "test_cases.png", "reliability.png", "gallery.png"):
        assert f"src='{png}'" in page
        with Image.open(tmp_path / "r" / png) as im:
            assert im.size[0] > 300
    assert "pixels" in page and "cluster-bootstrap" in page
    no_gallery = write_report(results["pixels"], tmp_path / "n", None).read_text()
    assert "gallery.png" not in no_gallery and "Gallery skipped" in no_gallery


def test_report_cli_writes_each_entry_into_its_own_folder(store, tmp_path):
    entries = lb.read_store(store)
    for entry in entries:
        run = CliRunner().invoke(main, ["report", str(entry.path), "--out", str(tmp_path / "rep")])
        assert run.exit_code == 0, run.output
    for entry in entries:  # rep/<benchmark>@<version>/<submission>/, as site/reports/ files them
        folder = tmp_path / "rep" / entry.key
        assert (folder / "gallery.png").is_file() and entry.name in (
            folder / "index.html"
        ).read_text()
    assert not (tmp_path / "rep" / "index.html").exists()
    # Without --out: beside the result, still one folder per entry.
    run = CliRunner().invoke(main, ["report", str(entries[0].path)])
    assert run.exit_code == 0, run.output
    assert (entries[0].path.parent / "reports" / entries[0].key / "index.html").is_file()
    # A folder that holds another entry's report is refused, nothing overwritten.
    taken = tmp_path / "rep" / entries[1].key
    before = (taken / "index.html").read_bytes()
    with pytest.raises(AttribBenchError, match="holds another entry's report"):
        write_report(entries[0].result, taken)
    assert (taken / "index.html").read_bytes() == before


def test_report_draws_chance_levels_and_states_a_flat_calibrator(results, tiny, tmp_path):
    flat = copy.deepcopy(results["pixels"])
    flat["calibration"]["calibrator"]["threshold"] = 1e7
    page = write_report(flat, tmp_path / "flat", tiny).read_text()
    assert "is flat" in page and "reliability.png" not in page
    assert "Dotted lines: the chance level" in page
    page = write_report(results["pixels"], tmp_path / "nobench", None).read_text()
    assert "Chance levels not drawn" in page


# --------------------------------------------------------------------------------------------
# Hub push


class FakeHub:
    """The Hub API calls push makes, served from memory (the network boundary only)."""

    def __init__(self, tmp_path):
        self.dir = tmp_path / "hub-downloads"
        self.files: dict[str, bytes] = {}
        self.exists = False
        self.commits: list[SimpleNamespace] = []
        self.repos: dict[str, SimpleNamespace] = {}

    @staticmethod
    def _missing(kind, message):
        import httpx2
        from huggingface_hub import errors

        response = httpx2.Response(404, request=httpx2.Request("GET", "https://hub.invalid"))
        return getattr(errors, kind)(message, response=response)

    def hf_hub_download(self, repo_id, filename, repo_type=None, **_):
        if not self.exists:
            raise self._missing("RepositoryNotFoundError", repo_id)
        if filename not in self.files:
            raise self._missing("RemoteEntryNotFoundError", filename)
        path = self.dir / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.files[filename])
        return str(path)

    def create_repo(self, repo_id, repo_type=None, exist_ok=False, space_sdk=None):
        self.exists = True
        self.repos[repo_id] = SimpleNamespace(repo_type=repo_type, space_sdk=space_sdk)

    def create_commit(self, repo_id, repo_type, operations, commit_message, create_pr=False):
        if repo_id in self.repos and self.repos[repo_id].repo_type != repo_type:
            raise ValueError(f"{repo_id} is a {self.repos[repo_id].repo_type} repo")
        self.commits.append(
            SimpleNamespace(
                repo_id=repo_id,
                repo_type=repo_type,
                ops=operations,
                message=commit_message,
                pr=create_pr,
            )
        )
        if not create_pr:
            for op in operations:
                self.files[op.path_in_repo] = op.path_or_fileobj
        return SimpleNamespace(
            commit_url="https://hub.invalid/commit",
            pr_url="https://hub.invalid/pr" if create_pr else None,
        )


def test_first_push_is_one_commit_with_results_index_and_site(store, tmp_path):
    hub = FakeHub(tmp_path)
    plan = lb.plan_push(store, "org/board", hub)
    assert len(plan.added) == 3 and not plan.kept_remote
    lb.push(plan, hub)
    assert len(hub.commits) == 1
    names = set(hub.files)
    assert {"leaderboard.json", "verified.json", "README.md", "site/index.html"} <= names
    assert sum(n.startswith("results/") for n in names) == 3
    index = json.loads(hub.files["leaderboard.json"])
    assert index["result_schema_version"] == lb.SCHEMA_VERSION and len(index["entries"]) == 3


def test_push_merges_by_key_and_never_drops_an_entry(store, tmp_path, results, tiny):
    hub = FakeHub(tmp_path)
    lb.push(lb.plan_push(store, "org/board", hub), hub)
    # Another maintainer's store has only one new entry.
    other = tmp_path / "other"
    newcomer = copy.deepcopy(results["random"])
    newcomer["submission"]["name"] = "random-2"
    store_result(other / lb.RESULTS_DIR, newcomer)
    plan = lb.plan_push(other, "org/board", hub)
    assert plan.added == [f"abc-tiny@{tiny.version}/random-2"]
    assert len(plan.kept_remote) == 3
    uploaded = {p for p, _ in plan.operations}
    assert sum(p.startswith("results/") for p in uploaded) == 1  # only the new result
    lb.push(plan, hub)
    index = json.loads(hub.files["leaderboard.json"])
    assert len(index["entries"]) == 4
    assert (
        b"random-2" in hub.files["site/index.html"]
        and b"example-extractor" in hub.files["site/index.html"]
    )
    # A re-run of the same files updates; nothing else changes.
    again = lb.plan_push(store, "org/board", hub)
    assert again.added == [] and again.updated == [] and len(again.unchanged) == 3


def test_push_refuses_other_versions_and_other_files_under_a_key(store, tmp_path, results):
    hub = FakeHub(tmp_path)
    lb.push(lb.plan_push(store, "org/board", hub), hub)
    other_board = json.loads(hub.files["leaderboard.json"])
    other_board["benchmark"] = "abc-tiny@9.9.9"
    real_index = hub.files["leaderboard.json"]
    hub.files["leaderboard.json"] = json.dumps(other_board).encode()
    with pytest.raises(AttribBenchError, match=r"the Hub leaderboard is for abc-tiny@9\.9\.9"):
        lb.plan_push(store, "org/board", hub)
    hub.files["leaderboard.json"] = real_index

    impostor_store = tmp_path / "impostor"
    impostor = copy.deepcopy(results["pixels"])
    impostor["submission"]["sha256"] = "3" * 64
    store_result(impostor_store / lb.RESULTS_DIR, impostor)
    with pytest.raises(AttribBenchError, match="made from other submission files"):
        lb.plan_push(impostor_store, "org/board", hub)

    index = json.loads(hub.files["leaderboard.json"])
    index["result_schema_version"] = lb.SCHEMA_VERSION + 1
    hub.files["leaderboard.json"] = json.dumps(index).encode()
    with pytest.raises(AttribBenchError, match=f"holds schema {lb.SCHEMA_VERSION + 1} results"):
        lb.plan_push(store, "org/board", hub)
    assert len(hub.commits) == 1  # nothing was uploaded by the refused pushes


def test_push_cli_dry_run_lists_operations_and_uploads_nothing(store, tmp_path, monkeypatch):
    hub = FakeHub(tmp_path)
    monkeypatch.setattr("huggingface_hub.HfApi", lambda token=None: hub)
    args = ["leaderboard", "push", "--repo-id", "org/board", "--root", str(store)]
    run = CliRunner().invoke(main, [*args, "--dry-run"])
    assert run.exit_code == 0, run.output
    assert "add entry" in run.output and "upload leaderboard.json" in run.output
    assert "dry run: nothing uploaded" in run.output and hub.commits == []
    run = CliRunner().invoke(main, [*args, "--create-pr"])
    assert run.exit_code == 0, run.output
    assert hub.commits[0].pr and "hub.invalid/pr" in run.output


def test_push_offline_is_a_clear_error_not_an_empty_remote(store, tmp_path):
    from huggingface_hub.errors import LocalEntryNotFoundError

    class Offline(FakeHub):
        def hf_hub_download(self, *a, **k):
            raise LocalEntryNotFoundError("offline")

    with pytest.raises(AttribBenchError, match="cannot reach the Hub"):
        lb.plan_push(store, "org/board", Offline(tmp_path))


def test_build_cli_writes_readme_site_and_reports(store):
    run = CliRunner().invoke(main, ["leaderboard", "build", "--root", str(store)])
    assert run.exit_code == 0, run.output
    assert (store / "README.md").is_file() and (store / "site" / "index.html").is_file()
    for e in lb.read_store(store):
        assert (store / "site" / lb.report_path(e)).is_file()
    data = (store / "site" / "index.html").read_text()
    assert "__DATA__" not in data and "http://" not in data and "https://" not in data


def test_add_cli_stores_a_result_file(results, tmp_path):
    from benchmark.results import write_result

    path = write_result(results["example"], tmp_path)
    run = CliRunner().invoke(
        main, ["leaderboard", "add", str(path), "--root", str(tmp_path / "lb")]
    )
    assert run.exit_code == 0, run.output
    [stored] = (tmp_path / "lb" / "results").rglob("*.json.gz")
    assert load_result(stored) == results["example"]
    assert read_json(stored)["submission"]["name"] == "example-extractor"


# --------------------------------------------------------------------------------------------
# the ranked site, metadata, reproducibility, the Space


@pytest.fixture(scope="module")
def described(tiny, tmp_path_factory):
    """A result from a submission.yaml with authors (one hostile), a link and a bare date."""
    import shutil

    sub = tmp_path_factory.mktemp("sub") / "described"
    shutil.copytree(SUBMISSIONS / "example_extractor", sub)
    cfg = (sub / "submission.yaml").read_text()
    cfg = cfg.replace("name: example-extractor", "name: described")
    cfg = cfg.replace(
        "authors: [attrib-bench maintainers]",
        'authors: [Ada Lovelace, "<b>Mallory</b>"]\nurl: https://example.org/method\n'
        "date: 2026-11-02",
    )
    (sub / "submission.yaml").write_text(cfg)
    return evaluate(sub, tiny, options=QUIET)


def test_submission_metadata_is_carried_into_the_result(described, tmp_path):
    from benchmark.results import write_result

    s = described["submission"]
    assert s["authors"] == ["Ada Lovelace", "<b>Mallory</b>"] and s["license"] == "MIT"
    assert s["url"] == "https://example.org/method" and s["date"] == "2026-11-02"
    assert load_result(write_result(described, tmp_path))["submission"] == s  # schema-valid
    bad = copy.deepcopy(described)
    bad["submission"]["date"] = "02/11/2026"
    with pytest.raises(AttribBenchError, match=r"submission\.date"):
        load_result(write_result(bad, tmp_path / "bad"))


def test_site_ranks_entries_and_shows_metadata_escaped(store, described, tmp_path):
    store_result(store / lb.RESULTS_DIR, described)
    entries = lb.read_store(store)
    data = lb.site_entries(entries)
    assert len(data) == 4 and len(lb.site_rows(entries)) == 4 * 8  # per-cell rows for details
    heads = [d["headline"] for d in data]
    assert heads == sorted(heads, reverse=True)
    [d] = [d for d in data if d["submission"] == "described"]
    assert d["authors"] == ["Ada Lovelace", "<b>Mallory</b>"] and d["date"] == "2026-11-02"
    assert d["url"] == "https://example.org/method" and d["license"] == "MIT"
    page = lb.render_site(entries)
    assert "<b>Mallory" not in page and "\\u003cb\\u003eMallory" in page
    text = lb.markdown(entries)
    assert "Ada Lovelace, &lt;b&gt;Mallory&lt;/b&gt;" in text and "2026-11-02" in text
    report = write_report(described, tmp_path / "rep").read_text()
    assert "Ada Lovelace, &lt;b&gt;Mallory&lt;/b&gt;" in report
    assert 'href="https://example.org/method"' in report and "date: 2026-11-02" in report
    # A link that is not http(s) is never a link.
    evil = copy.deepcopy(entries[0])
    evil.result["submission"]["url"] = "javascript:alert(1)"
    assert lb.site_entries([evil])[0]["url"] is None


def test_build_twice_gives_identical_bytes(store, tiny):
    def snapshot():
        lb.build(store, benchmark_for=lambda result: tiny)
        site = store / "site"
        files = sorted(p for p in site.rglob("*") if p.is_file())
        return {p.relative_to(store).as_posix(): p.read_bytes() for p in files} | {
            "README.md": (store / "README.md").read_bytes()
        }

    first = snapshot()
    assert any(k.endswith("gallery.png") for k in first) and len(first) > 10
    assert snapshot() == first
    page = first["site/index.html"].decode()
    assert "newest" not in page and "20" + "26-" not in page.split("<script")[0]


def test_build_keeps_reports_drawn_with_a_benchmark_that_is_gone(store, tiny, results):
    """After a new benchmark version replaces the embedded one, rebuilding the board keeps
    the earlier version's reports (gallery, chance levels) instead of redrawing them without;
    a report whose result changed is redrawn."""
    lb.build(store, benchmark_for=lambda result: tiny)
    pixels = next(iter((store / "site" / "reports").glob("*/pixels")))
    assert (pixels / "gallery.png").is_file()
    before = (pixels / "index.html").read_bytes()
    lb.build(store, benchmark_for=lambda result: None)  # the benchmark is no longer available
    assert (pixels / "index.html").read_bytes() == before
    assert "Gallery skipped" not in before.decode()
    changed = copy.deepcopy(results["pixels"])
    changed["submission"]["description"] = "re-run"
    store_result(store / lb.RESULTS_DIR, changed, replace=True)
    lb.build(store, benchmark_for=lambda result: None)
    assert "Gallery skipped" in (pixels / "index.html").read_text(encoding="utf-8")


def test_reports_of_one_board_share_their_y_axes(store, results):
    from benchmark.report import shared_ylim

    ylim = shared_ylim(list(results.values()))
    top = max(c["metrics"]["mAP"]["ci_high"] for r in results.values() for c in r["metrics"])
    assert top <= ylim["mAP"] < top + 0.05 + 1e-9


def test_push_publishes_the_site_as_a_static_space(store, tmp_path, monkeypatch):
    hub = FakeHub(tmp_path)
    with pytest.raises(AttribBenchError, match="no site to publish"):
        publish.plan_site(store, "org/board-site")
    lb.build(store, reports=True)
    plan = publish.plan_site(store, "org/board-site")
    paths = [p for p, _ in plan.operations]
    assert "index.html" in paths and not any(p.startswith("site/") for p in paths)
    assert sum(p.endswith("/index.html") and p.startswith("reports/") for p in paths) == 3
    publish.push_site(plan, hub)
    assert hub.repos["org/board-site"].repo_type == "space"
    assert hub.repos["org/board-site"].space_sdk == "static"
    [commit] = hub.commits
    assert (
        commit.repo_type == "space"
        and hub.files["index.html"] == (store / "site" / "index.html").read_bytes()
    )
    # A site older than the store is refused.
    extra = copy.deepcopy(lb.read_store(store)[0].result)
    extra["submission"]["name"] = "late"
    store_result(store / lb.RESULTS_DIR, extra)
    with pytest.raises(AttribBenchError, match="older than the results store"):
        publish.plan_site(store, "org/board-site")
    # The CLI: results to a dataset repo and the site to a Space, each in its own commit.
    lb.build(store, reports=False)
    monkeypatch.setattr("huggingface_hub.HfApi", lambda token=None: hub)
    args = ["leaderboard", "push", "--root", str(store)]
    run = CliRunner().invoke(
        main, [*args, "--repo-id", "org/board", "--space-id", "org/board-site"]
    )
    assert run.exit_code == 0, run.output
    assert [c.repo_type for c in hub.commits] == ["space", "dataset", "space"]
    assert hub.repos["org/board"].repo_type == "dataset"
    run = CliRunner().invoke(main, args)
    assert run.exit_code == 2 and "--space-id" in run.output
