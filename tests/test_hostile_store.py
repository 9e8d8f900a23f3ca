"""A hostile (or careless) submitter against the leaderboard store, through the CLI.

One test (or one parametrized family) per class of attack, each asserting what a maintainer
would observe: the command's exit status and its one-line error, which files exist, which
entries carry a badge. Real evaluations run on abc-tiny.
"""

from __future__ import annotations

import copy
import gzip
import json
import multiprocessing
import os
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from benchmark import leaderboard as lb
from benchmark import store
from benchmark.cli import main
from benchmark.errors import AttribBenchError
from benchmark.evaluation import RunOptions, evaluate
from benchmark.fileio import MAX_JSON_BYTES, sha256_file
from benchmark.results import load_result, write_result
from benchmark.schemas import validate
from tests.conftest import SUBMISSIONS

QUIET = RunOptions(progress=False)
SIMILARITY = SUBMISSIONS / "example_similarity"  # a fast re-run: no feature extraction


def cli(*args: Any):
    return CliRunner().invoke(main, [str(a) for a in args])


def refused(run, *needles: str) -> str:
    """Assert exit 2 with exactly one ``error:`` line on stderr (no traceback)."""
    assert run.exit_code == 2, run.output
    assert "Traceback" not in run.output
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), run.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def write_gz(path: Path, result: dict[str, Any]) -> Path:
    """Put a result in a store by hand, as a hostile pull request would."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(json.dumps(result).encode(), mtime=0))
    return path


@pytest.fixture(scope="module")
def constant(tiny, tmp_path_factory) -> Path:
    """A constant scorer: every candidate gets the same similarity."""
    sub = tmp_path_factory.mktemp("constant")
    shape = (len(tiny.evaluated_queries), len(tiny.candidate_ids))
    np.save(sub / "scores.npy", np.zeros(shape, np.float16))
    (sub / "submission.yaml").write_text(
        "schema_version: 1\nname: constant\nkind: similarity\n"
        "description: the same score for every candidate\nlicense: MIT\n"
        f"benchmark: abc-tiny@{tiny.version}\n"
        "similarity: {format: dense, file: scores.npy}\n"
    )
    return sub


@pytest.fixture(scope="module")
def honest(tiny) -> dict[str, Any]:
    """A canonical result of the example similarity submission."""
    return evaluate(SIMILARITY, tiny, options=QUIET)


@pytest.fixture
def verified_board(tmp_path, honest):
    """A leaderboard whose example-similarity entry was added and then verified."""
    root = tmp_path / "lb"
    src = write_result(honest, tmp_path / "submitted")
    assert cli("leaderboard", "add", src, "--root", root).exit_code == 0
    run = cli("leaderboard", "verify", "-s", SIMILARITY, "-b", "abc-tiny", "--root", root)
    assert run.exit_code == 0, run.output
    [entry] = lb.read_store(root)
    assert entry.verified is not None
    return root, entry.path


def badges(root: Path) -> dict[str, bool]:
    return {e.name: e.verified is not None for e in lb.read_store(root, on_error=lambda e: None)}


# --------------------------------------------------------------------------------------------
# ranked results are canonical


def test_optimistic_constant_scorer_is_refused_by_store_add_and_verify(constant, tmp_path):
    root = tmp_path / "lb"
    diag = cli("evaluate", "-s", constant, "-b", "abc-tiny", "-q", "-o", tmp_path / "diag",
               "--tie-policy", "optimistic")  # fmt: skip
    assert diag.exit_code == 0, diag.output  # diagnosis is allowed...
    cheat = load_result(tmp_path / "diag" / "result.json")
    assert all(c["metrics"]["mAP"]["value"] == 1.0 for c in cheat["metrics"])  # ...and cheats
    stored = cli("evaluate", "-s", constant, "-b", "abc-tiny", "-q", "-o", tmp_path / "o2",
                 "--tie-policy", "optimistic", "--store", root / "results")  # fmt: skip
    refused(stored, "--store", "tie_policy is 'optimistic', canonical is 'pessimistic'")
    assert not (tmp_path / "o2").exists()  # refused before the work
    refused(cli("leaderboard", "add", tmp_path / "diag" / "result.json", "--root", root),
            "not the canonical settings")  # fmt: skip
    assert files_under(root / "results") - {root / "results" / ".lock"} == set()
    # Smuggled into the store by hand, it is still refused by verify (and left unbadged).
    path = write_gz(store.entry_path(root / "results", cheat), cheat)
    refused(cli("leaderboard", "verify", "-s", constant, "-b", "abc-tiny", "--root", root),
            "tie_policy is 'optimistic'")  # fmt: skip
    assert not (root / "verified.json").exists()
    # Canonically scored, the same constant scorer is stored, verifies, and loses.
    path.unlink()
    ok = cli("evaluate", "-s", constant, "-b", "abc-tiny", "-q", "-o", tmp_path / "o3",
             "--store", root / "results")  # fmt: skip
    assert ok.exit_code == 0, ok.output
    assert (
        cli("leaderboard", "verify", "-s", constant, "-b", "abc-tiny", "--root", root).exit_code
        == 0
    )
    [entry] = lb.read_store(root)
    assert entry.verified and all(
        c["metrics"]["mAP"]["value"] < 0.1 for c in entry.result["metrics"]
    )


@pytest.mark.parametrize(
    "option", [["--seed", "1"], ["--bootstrap-samples", "10"], ["--ci-level", "0.5"]]
)
def test_other_non_canonical_settings_are_refused_by_store(constant, tmp_path, option):
    run = cli("evaluate", "-s", constant, "-b", "abc-tiny", "-q", *option,
              "--store", tmp_path / "results")  # fmt: skip
    refused(run, "canonical is")


# --------------------------------------------------------------------------------------------
# names cannot leave the store

HOSTILE_NAMES = [
    "../x",
    "../../escaped",
    "/abs",
    "a/b",
    "..",
    "\uff41bc",  # fullwidth a
    "pixel\u0455",  # Cyrillic s
    "Pixels",
    "a\nb",
    "x" * 65,
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
@pytest.mark.parametrize("field", ["submission.name", "benchmark.version"])
def test_traversal_names_are_refused_by_schema_code_and_cli(honest, tmp_path, name, field):
    bad = copy.deepcopy(honest)
    part, key = field.split(".")
    bad[part][key] = name
    with pytest.raises(AttribBenchError, match="fails the result schema"):
        validate(bad, "result", "r.json")
    with pytest.raises(AttribBenchError, match="is not a valid name"):
        store.entry_path(tmp_path / "lb" / "results", bad)  # the code checks on its own
    src = tmp_path / "in" / "result.json"
    src.parent.mkdir()
    src.write_text(json.dumps(bad))
    before = files_under(tmp_path)
    refused(cli("leaderboard", "add", src, "--root", tmp_path / "lb"), field)
    assert files_under(tmp_path) == before  # nothing written anywhere
    assert not Path("/abs.json.gz").exists()


def test_a_symlinked_folder_cannot_lead_a_write_out_of_the_store(honest, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    results = tmp_path / "lb" / "results"
    results.mkdir(parents=True)
    key = store.entry_key(honest).split("/")[0]
    (results / key).symlink_to(outside, target_is_directory=True)
    src = write_result(honest, tmp_path / "in")
    refused(cli("leaderboard", "add", src, "--root", tmp_path / "lb"), "outside the store")
    assert list(outside.iterdir()) == []


# --------------------------------------------------------------------------------------------
# tampering with verified entries


@pytest.mark.parametrize("edit", ["metric", "per-query record", "calibration", "timings"])
def test_editing_a_verified_file_drops_its_badge(verified_board, edit):
    root, path = verified_board
    result = load_result(path)
    if edit == "metric":
        result["metrics"][0]["metrics"]["mAP"]["value"] = result["metrics"][0]["metrics"]["mAP"][
            "ci_high"
        ]
    elif edit == "per-query record":
        result["queries"][0]["exemplars"][0]["rank"] = 1
        result["queries"][0]["exemplars"][0]["above"] = 0
    elif edit == "calibration":
        result["calibration"]["test"]["ece"] = 0.0
    else:
        result["timings"]["total_s"] = 0.001
    write_gz(path, result)
    assert badges(root) == {"example-similarity": False}
    run = cli("leaderboard", "build", "--root", root, "--no-reports")
    assert run.exit_code == 0, run.output
    assert "self-reported" in (root / "README.md").read_text()


def test_add_over_a_verified_entry_needs_replace_and_loses_the_badge(verified_board, tmp_path):
    root, path = verified_board
    before = path.read_bytes()
    edited = load_result(path)
    edited["submission"]["description"] = "hand-edited"
    src = write_result(edited, tmp_path / "edited")
    refused(cli("leaderboard", "add", src, "--root", root), "--replace", "same files")
    assert path.read_bytes() == before and badges(root) == {"example-similarity": True}
    run = cli("leaderboard", "add", src, "--root", root, "--replace")
    assert run.exit_code == 0, run.output
    assert badges(root) == {"example-similarity": False}


def test_verify_makes_the_recomputation_the_stored_file(honest, tmp_path):
    """Fields that do not change the headline metrics are still never kept from a submitter:
    after verification the stored bytes are the re-run's, and the record binds them."""
    submitted = copy.deepcopy(honest)
    submitted["submission"]["description"] = "my own words"
    submitted["queries"][0]["exemplars"][0]["score"] = 0.999
    submitted["calibration"]["test"]["ece"] = 0.0
    src = write_result(submitted, tmp_path / "in")
    root = tmp_path / "lb"
    assert cli("leaderboard", "add", src, "--root", root).exit_code == 0
    run = cli("leaderboard", "verify", "-s", SIMILARITY, "-b", "abc-tiny", "--root", root)
    assert run.exit_code == 0, run.output
    [entry] = lb.read_store(root)
    stored = entry.result
    assert stored["submission"]["description"] == honest["submission"]["description"]
    assert stored["queries"] == honest["queries"]
    assert stored["calibration"] == honest["calibration"]
    record = json.loads((root / "verified.json").read_text())[entry.key]
    assert record["file_sha256"] == sha256_file(entry.path) and entry.verified == record


def test_verify_refuses_a_disagreeing_entry_and_keeps_it_as_it_was(honest, tmp_path):
    inflated = copy.deepcopy(honest)
    cell = inflated["metrics"][0]["metrics"]["mAP"]
    for k in ("value", "ci_low", "ci_high"):
        cell[k] = min(1.0, cell[k] + 0.05)
    cell["value"] = min(cell["value"], cell["ci_high"])
    src = write_result(inflated, tmp_path / "in")
    root = tmp_path / "lb"
    assert cli("leaderboard", "add", src, "--root", root).exit_code == 0
    [entry] = lb.read_store(root)
    before = entry.path.read_bytes()
    run = cli("leaderboard", "verify", "-s", SIMILARITY, "-b", "abc-tiny", "--root", root)
    line = refused(run, "does not reproduce: largest difference 0.05", "mAP")
    assert "stays as submitted" in line
    assert entry.path.read_bytes() == before and not (root / "verified.json").exists()


# --------------------------------------------------------------------------------------------
# concurrent writers


def _add_in_child(barrier, queue, src: str, root: str) -> None:
    barrier.wait()
    run = CliRunner().invoke(main, ["leaderboard", "add", src, "--root", root])
    queue.put((src, run.exit_code, run.stderr))


def _race(sources: list[Path], root: Path) -> list[tuple[str, int, str]]:
    """Run one ``leaderboard add`` per source in its own process, released together."""
    ctx = multiprocessing.get_context("fork")
    barrier, queue = ctx.Barrier(len(sources)), ctx.Queue()
    procs = [
        ctx.Process(target=_add_in_child, args=(barrier, queue, str(s), str(root))) for s in sources
    ]
    for p in procs:
        p.start()
    out = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return out


def test_two_concurrent_adds_of_different_entries_both_land(honest, tmp_path):
    other = copy.deepcopy(honest)
    other["submission"]["name"] = "example-similarity-2"
    sources = [write_result(honest, tmp_path / "a"), write_result(other, tmp_path / "b")]
    for i in range(10):
        root = tmp_path / f"lb{i}"
        out = _race(sources, root)
        assert [code for _, code, _ in out] == [0, 0], out
        assert sorted(e.name for e in lb.read_store(root)) == [
            "example-similarity",
            "example-similarity-2",
        ]


def test_two_concurrent_adds_of_one_key_never_both_succeed(honest, tmp_path):
    other = copy.deepcopy(honest)
    other["submission"]["sha256"] = "1" * 64  # another submission under the same name
    sources = [write_result(honest, tmp_path / "a"), write_result(other, tmp_path / "b")]
    for i in range(10):
        root = tmp_path / f"lb{i}"
        out = sorted(_race(sources, root), key=lambda r: r[1])
        assert [code for _, code, _ in out] == [0, 2], out
        loser = out[1][2].strip().splitlines()
        assert len(loser) == 1 and "--replace" in loser[0]
        [entry] = lb.read_store(root)
        assert entry.result == load_result(out[0][0])  # the stored one is the winner's


# --------------------------------------------------------------------------------------------
# insane values


def _mutate(result: dict[str, Any], how: str) -> str:
    """Apply a hostile edit; return the JSON text to submit."""
    cell = result["metrics"][0]["metrics"]["mAP"]
    if how == "mAP 1.5":
        cell.update(value=1.5, ci_low=1.4, ci_high=1.6)
    elif how == "value outside CI":
        cell.update(value=0.9, ci_low=0.1, ci_high=0.2)
    elif how == "negative CI":
        cell.update(ci_low=-0.5)
    elif how == "NaN":
        cell["value"] = float("nan")
    elif how == "Infinity":
        cell["ci_high"] = float("inf")
    elif how == "1e400":
        return json.dumps(result).replace(json.dumps(cell["value"]), "1e400", 1)
    elif how == "NUL in description":
        result["submission"]["description"] = "nice\x00<script>"
    elif how == "NUL in a query id":
        result["queries"][0]["query_id"] += "\x00"
    elif how == "bidi override":
        result["flags"] = ["\u202eevil"]
    elif how == "fractional count":
        result["queries"][0]["exemplars"][0]["above"] = 3.0
    elif how == "zero queries":
        result["metrics"][0]["num_queries"] = 0
    return json.dumps(result)  # NaN and Infinity come out as bare NaN / Infinity


INSANE = [
    "mAP 1.5",
    "value outside CI",
    "negative CI",
    "NaN",
    "Infinity",
    "1e400",
    "NUL in description",
    "NUL in a query id",
    "bidi override",
    "fractional count",
    "zero queries",
]


@pytest.mark.parametrize("how", INSANE)
def test_insane_values_are_refused_by_add(honest, tmp_path, how):
    src = tmp_path / "result.json"
    src.write_text(_mutate(copy.deepcopy(honest), how))
    refused(cli("leaderboard", "add", src, "--root", tmp_path / "lb"))
    assert not list((tmp_path / "lb").rglob("*.json.gz"))


def test_a_gzip_bomb_is_refused_after_the_cap(honest, tmp_path):
    bomb = tmp_path / "bomb.json.gz"
    chunk = b" " * (1 << 20)
    with gzip.open(bomb, "wb", compresslevel=9) as f:
        for _ in range((MAX_JSON_BYTES >> 20) + 4):
            f.write(chunk)
    assert bomb.stat().st_size < 1 << 20  # tiny on disk
    refused(cli("leaderboard", "add", bomb, "--root", tmp_path / "lb"), "decompresses to more")
    # In the store, build skips it with one warning.
    root = tmp_path / "lb"
    dest = store.entry_path(root / "results", honest)
    dest.parent.mkdir(parents=True)
    dest.write_bytes(bomb.read_bytes())
    run = cli("leaderboard", "build", "--root", root, "--no-reports")
    assert run.exit_code == 0, run.output
    assert run.stderr.count("warning:") == 1 and "decompresses to more" in run.stderr


# --------------------------------------------------------------------------------------------
# one bad entry never breaks build


def test_build_skips_each_bad_entry_with_one_warning(honest, tmp_path):
    root = tmp_path / "lb"
    other = copy.deepcopy(honest)
    other["submission"]["name"] = "second"
    for r in (honest, other):
        assert cli("leaderboard", "add", write_result(r, tmp_path / r["submission"]["name"]),
                   "--root", root).exit_code == 0  # fmt: skip
    folder = store.entry_path(root / "results", honest).parent
    (folder / "corrupt.json.gz").write_bytes(b"\x1f\x8b\x08garbage")
    (folder / "misfiled.json.gz").write_bytes((folder / "second.json.gz").read_bytes())
    cheat = copy.deepcopy(honest)
    cheat["submission"]["name"] = "cheat"
    cheat["settings"]["tie_policy"] = "optimistic"
    write_gz(folder / "cheat.json.gz", cheat)
    run = cli("leaderboard", "build", "--root", root, "--no-reports")
    assert run.exit_code == 0, run.output
    warnings = [line for line in run.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 3
    for name in ("corrupt", "misfiled", "cheat"):
        assert sum(f"{name}.json.gz" in w for w in warnings) == 1
    readme = (root / "README.md").read_text()
    assert "example-similarity" in readme and "second" in readme and "cheat" not in readme


@pytest.mark.parametrize("text", ["[]", '"verified"', '{"abc-tiny@1.0.0/x": ', "null", '{"a": 1}'])
def test_a_verified_json_that_is_not_an_object_of_records_is_one_line(verified_board, text):
    root, _ = verified_board
    (root / "verified.json").write_text(text)
    refused(cli("leaderboard", "build", "--root", root, "--no-reports"), "verified.json")
    refused(cli("leaderboard", "verify", "-s", SIMILARITY, "-b", "abc-tiny", "--root", root),
            "verified.json")  # fmt: skip


# --------------------------------------------------------------------------------------------
# registered benchmark versions only


def test_a_wrong_manifest_sha_is_refused_by_add_build_and_push(honest, tmp_path, monkeypatch):
    from tests.test_leaderboard import FakeHub

    forged = copy.deepcopy(honest)
    forged["benchmark"]["manifest_sha256"] = "0" * 64
    src = write_result(forged, tmp_path / "in")
    root = tmp_path / "lb"
    refused(cli("leaderboard", "add", src, "--root", root), "is not the manifest of abc-tiny")
    unknown = copy.deepcopy(honest)
    unknown["benchmark"]["version"] = "9.9.9"
    refused(cli("leaderboard", "add", write_result(unknown, tmp_path / "u"), "--root", root),
            "not a registered benchmark version")  # fmt: skip
    # Smuggled in by hand: build leaves it out with a warning; push refuses to publish.
    assert (
        cli("leaderboard", "add", write_result(honest, tmp_path / "ok"), "--root", root).exit_code
        == 0
    )
    forged["submission"]["name"] = "forged"
    write_gz(store.entry_path(root / "results", forged), forged)
    run = cli("leaderboard", "build", "--root", root, "--no-reports")
    assert run.exit_code == 0 and "forged.json.gz" in run.stderr and "manifest" in run.stderr
    assert "forged" not in (root / "README.md").read_text()
    hub = FakeHub(tmp_path)
    monkeypatch.setattr("huggingface_hub.HfApi", lambda token=None: hub)
    refused(cli("leaderboard", "push", "--repo-id", "org/board", "--root", root),
            "forged.json.gz", "manifest")  # fmt: skip
    assert hub.commits == []


def test_the_shipped_abc_mini_manifest_is_the_registered_one():
    from benchmark.benchmarks import PUBLISHED, SHIPPED

    manifest = SHIPPED / "abc-mini" / "manifest.json"
    version = json.loads(manifest.read_text(encoding="utf-8"))["version"]
    assert PUBLISHED[("abc-mini", version)] == sha256_file(manifest)


# --------------------------------------------------------------------------------------------
# permissions


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640)])
def test_written_files_get_normal_permissions(constant, tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        root = tmp_path / "lb"
        run = cli("evaluate", "-s", constant, "-b", "abc-tiny", "-q", "-o", tmp_path / "out",
                  "--store", root / "results")  # fmt: skip
        assert run.exit_code == 0, run.output
        assert (
            cli("leaderboard", "verify", "-s", constant, "-b", "abc-tiny", "--root", root).exit_code
            == 0
        )
        assert cli("leaderboard", "build", "--root", root).exit_code == 0
    finally:
        os.umask(old)
    written = files_under(tmp_path / "out") | files_under(root)
    assert len(written) > 8  # result, store entry, lock, verified.json, README, site, report
    modes = {p.relative_to(tmp_path).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in written}
    assert set(modes.values()) == {mode}, modes
