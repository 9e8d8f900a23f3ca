"""Benchmark folders: hashing, corruption, Hugging Face compatibility, resolution."""

from __future__ import annotations

import shutil

import pytest

from benchmark.benchmarks import resolve_benchmark
from benchmark.errors import AttribBenchError, BenchmarkError
from benchmark.splits import load_benchmark, verify_benchmark
from benchmark.types import Part, parse_part


def copy_of(tiny, tmp_path):
    dst = tmp_path / "bench"
    shutil.copytree(tiny.root, dst)
    return dst


def test_verify_passes_and_counts(tiny):
    counts = verify_benchmark(tiny.root)
    assert counts == {
        "models": 32,
        "queries": 256,
        "exemplars": 62,
        "distractors": 300,
        "artifacts": 0,
    }


def test_one_corrupt_byte_fails_loading(tiny, tmp_path):
    root = copy_of(tiny, tmp_path)
    shard = root / tiny.manifest["tables"]["distractors"]["files"][0]["path"]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(BenchmarkError, match="sha256 does not match") as err:
        load_benchmark(root)
    assert "distractors" in str(err.value) and "fix:" in str(err.value)
    with pytest.raises(BenchmarkError):
        verify_benchmark(root)


def test_missing_shard_is_named(tiny, tmp_path):
    root = copy_of(tiny, tmp_path)
    (root / tiny.manifest["tables"]["models"]["files"][0]["path"]).unlink()
    with pytest.raises(BenchmarkError, match="missing"):
        load_benchmark(root)


def test_loadable_with_datasets(tiny):
    import datasets

    queries = datasets.load_dataset(str(tiny.root), "queries", split="full")
    assert len(queries) == 256
    row = queries[0]
    assert row["image"].size == (32, 32) and "<new1>" in row["prompt"]
    models = datasets.load_dataset(str(tiny.root), "models", split="full")
    assert set(models["part"]) == {p.value for p in Part}


def test_build_is_deterministic(tiny, tmp_path):
    from benchmark.testing import build_tiny

    again = build_tiny(tmp_path / "again")
    assert again.manifest_sha256 == tiny.manifest_sha256


def test_structure_follows_abc(tiny):
    for q in tiny.evaluated_queries:
        if q.part.value.startswith("object"):
            assert q.prompt_type.value in {"gpt", "media"}
        elif q.part.value.startswith("style"):
            assert q.prompt_type.value in {"gpt", "object"}
    assert tiny.candidate_ids[: len(tiny.distractor_ids)] == tiny.distractor_ids
    assert {len(tiny.model(q.model_id).exemplar_ids) for q in tiny.queries} == {1, 2, 3, 4}


def test_hub_spec_downloads_a_pinned_revision(tiny, monkeypatch):
    import huggingface_hub

    seen = {}

    def fake_snapshot_download(repo_id, repo_type, revision):
        seen.update(repo_id=repo_id, repo_type=repo_type, revision=revision)
        return str(tiny.root)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    bench = resolve_benchmark("hf://attrib-bench/abc-tiny@v1.0.0")
    assert seen == {
        "repo_id": "attrib-bench/abc-tiny",
        "repo_type": "dataset",
        "revision": "v1.0.0",
    }
    assert bench.manifest_sha256 == tiny.manifest_sha256


def test_hub_spec_needs_a_revision_and_fails_cleanly_offline():
    with pytest.raises(BenchmarkError, match="pin a revision"):
        resolve_benchmark("hf://attrib-bench/abc")
    with pytest.raises(BenchmarkError, match="cannot be reached"):
        resolve_benchmark("hf://attrib-bench/does-not-exist@main")


def test_unknown_names_suggest():
    with pytest.raises(AttribBenchError, match="did you mean 'abc-tiny'"):
        resolve_benchmark("abc-tin")
    with pytest.raises(AttribBenchError, match="unknown test case"):
        parse_part("imagenet-sideways")
    assert parse_part("Artchive") is Part.STYLE_UNSEEN
    assert parse_part("object_seen") is Part.OBJECT_SEEN


def test_cli_splits_verify(tiny, tmp_path):
    from click.testing import CliRunner

    from benchmark.cli import main

    ok = CliRunner().invoke(main, ["splits", "verify", str(tiny.root)])
    assert ok.exit_code == 0 and "shards match manifest.json" in ok.output
    assert "300 distractors" in ok.output
    root = copy_of(tiny, tmp_path)
    shard = root / tiny.manifest["tables"]["queries"]["files"][0]["path"]
    data = bytearray(shard.read_bytes())
    data[100] ^= 1
    shard.write_bytes(bytes(data))
    bad = CliRunner().invoke(main, ["splits", "verify", str(root)])
    assert bad.exit_code == 2 and "Traceback" not in bad.output
    assert bad.stderr.startswith("error: ") and "sha256 does not match" in bad.stderr
