"""splits push: dry run, the operations sent (up to the network call), refusal when corrupt."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from benchmark.cli import main
from benchmark.errors import BenchmarkError
from benchmark.publish import planned_uploads, push_benchmark


def test_dry_run_lists_manifest_card_and_shards(tiny):
    result = CliRunner().invoke(
        main, ["splits", "push", str(tiny.root), "--repo-id", "o/n", "--dry-run"]
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    shards = [f["path"] for t in tiny.manifest["tables"].values() for f in t["files"]]
    assert len(lines) == 2 + len(shards) + 1
    assert lines[0].startswith("add  manifest.json") and "nothing sent" in lines[-1]


def test_push_sends_one_commit_and_a_version_tag(tiny, monkeypatch):
    import huggingface_hub

    calls = []

    class FakeApi:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, repo_type, exist_ok):
            calls.append(("create_repo", repo_id, repo_type))

        def create_commit(self, repo_id, operations, repo_type, create_pr, commit_message):
            calls.append(("create_commit", sorted(o.path_in_repo for o in operations), create_pr))
            return SimpleNamespace(
                oid="abc123", commit_url="https://hub/commit/abc123", pr_url="https://hub/pr/1"
            )

        def create_tag(self, repo_id, tag, repo_type, revision):
            calls.append(("create_tag", tag, revision))

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    url = push_benchmark(tiny.root, "org/abc-tiny")
    assert url.endswith("abc123")
    assert calls[0] == ("create_repo", "org/abc-tiny", "dataset")
    assert calls[1][1] == sorted(u.path_in_repo for u in planned_uploads(tiny.root))
    assert calls[2] == ("create_tag", "v1.0.0", "abc123")
    calls.clear()
    assert push_benchmark(tiny.root, "org/abc-tiny", create_pr=True).endswith("/pr/1")
    assert [c[0] for c in calls] == ["create_repo", "create_commit"]  # no tag on a PR


def test_push_refuses_a_corrupt_folder(tiny, tmp_path):
    root = tmp_path / "b"
    shutil.copytree(tiny.root, root)
    shard = root / tiny.manifest["tables"]["models"]["files"][0]["path"]
    shard.write_bytes(shard.read_bytes() + b"x")
    with pytest.raises(BenchmarkError, match="sha256"):
        planned_uploads(root)
