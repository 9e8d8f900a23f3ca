"""Benchmark folders: hashing, corruption, Hugging Face compatibility, resolution."""

from __future__ import annotations

import shutil
from pathlib import Path

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


# --------------------------------------------------------------------------------------------
# splits push publishes everything the manifest lists (issue 9, item 9)


class InMemoryHub:
    """The HfApi calls `splits push` makes, kept in memory (the network boundary only)."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.tags: dict[str, str] = {}

    def create_repo(self, repo_id, repo_type=None, exist_ok=False):
        assert repo_type == "dataset"

    def create_commit(self, repo_id, operations, repo_type, create_pr, commit_message):
        from types import SimpleNamespace

        for op in operations:
            src = op.path_or_fileobj
            self.files[op.path_in_repo] = src if isinstance(src, bytes) else Path(src).read_bytes()
        return SimpleNamespace(oid="c0ffee", commit_url="https://hub.invalid/commit", pr_url=None)

    def create_tag(self, repo_id, tag, repo_type, revision):
        self.tags[tag] = revision

    def download(self, dest: Path) -> Path:
        for rel, data in self.files.items():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            (dest / rel).write_bytes(data)
        return dest


def _png(color: tuple[int, int, int]) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, format="PNG")
    return buf.getvalue()


def benchmark_with_artifacts(root: Path):
    """A one-model benchmark whose manifest pins a base model and a delta, as AbC-mini's does."""
    from benchmark.splits import write_benchmark
    from benchmark.types import CustomModel, PromptType, Query

    (root / "base").mkdir(parents=True)
    (root / "base" / "unet.safetensors").write_bytes(b"base model weights" * 100)
    (root / "deltas").mkdir()
    (root / "deltas" / "object-seen-000.safetensors").write_bytes(b"delta weights")
    (root / "notes.txt").write_text("a stray file that is not part of the benchmark")
    model = CustomModel("object-seen-000", Part.OBJECT_SEEN, "turtle", ("ex0",))
    query = Query("q0", model.model_id, model.part, "<new1> turtle", PromptType.GPT, 1, "ddim")
    return write_benchmark(
        root,
        name="with-artifacts",
        version="0.1.0",
        description="test",
        license="MIT",
        models=[model],
        queries=[(query, _png((1, 2, 3)))],
        exemplars=[("ex0", _png((4, 5, 6)))],
        distractors=[("d0", "a cat", _png((7, 8, 9))), ("d1", "a dog", _png((9, 8, 7)))],
        artifacts=["base/unet.safetensors", "deltas/object-seen-000.safetensors"],
    )


def test_push_publishes_artifacts_and_the_download_verifies(tmp_path):
    from benchmark.integrity import listed_files
    from benchmark.publish import push_benchmark

    bench = benchmark_with_artifacts(tmp_path / "src")
    hub = InMemoryHub()
    push_benchmark(bench.root, "org/with-artifacts", api=hub)
    listed = {f.path for f in listed_files(bench.manifest)}
    assert {"base/unet.safetensors", "deltas/object-seen-000.safetensors"} <= listed
    assert set(hub.files) == {"manifest.json", "README.md"} | listed  # no stray files
    assert hub.tags == {"v0.1.0": "c0ffee"}
    downloaded = hub.download(tmp_path / "downloaded")
    counts = verify_benchmark(downloaded)
    assert counts["artifacts"] == 2 and counts["distractors"] == 2
    assert load_benchmark(downloaded).manifest_sha256 == bench.manifest_sha256
    # verify really checks the artifacts: without one, the download fails it.
    (downloaded / "deltas" / "object-seen-000.safetensors").unlink()
    with pytest.raises(BenchmarkError, match="missing") as err:
        verify_benchmark(downloaded)
    assert "artifacts" in str(err.value)


def test_splits_stamp_survives_nothing_but_an_untouched_file(tiny, tmp_path):
    """A shard rewritten with its size and mtime restored is re-hashed, not trusted."""
    import os
    import time

    root = copy_of(tiny, tmp_path)
    load_benchmark(root)
    shard = root / tiny.manifest["tables"]["distractors"]["files"][0]["path"]
    st = shard.stat()
    time.sleep(0.05)  # past the kernel's coarse timestamp tick, so the ctime must move
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (shard.stat().st_size, shard.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    with pytest.raises(BenchmarkError, match="sha256 does not match"):
        load_benchmark(root)
