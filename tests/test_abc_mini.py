"""The shipped AbC-mini benchmark: complete, hashed, the default, and regenerable."""

from __future__ import annotations

import io
import shutil
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from benchmark.benchmarks import DEFAULT_BENCHMARK, SHIPPED, resolve_benchmark
from benchmark.errors import BenchmarkError
from benchmark.splits import load_benchmark, verify_benchmark
from benchmark.types import TEST_CASES, Part

ROOT = SHIPPED / "abc-mini"


@pytest.fixture(scope="module")
def mini():
    return resolve_benchmark("abc-mini")


def test_is_the_default_and_verifies(mini):
    assert DEFAULT_BENCHMARK == "abc-mini" and resolve_benchmark().name == "abc-mini"
    counts = verify_benchmark(ROOT)
    assert counts["artifacts"] == len(mini.manifest["artifacts"]) > 0


def test_sizes_support_confidence_intervals(mini):
    per_part = Counter(m.part for m in mini.models)
    for part in TEST_CASES:
        assert per_part[part] >= 30, part
    assert per_part[Part.TRAIN] > 0 and per_part[Part.VAL] > 0
    per_cell = Counter((q.model_id, q.prompt_type) for q in mini.queries)
    assert min(per_cell.values()) >= 8
    assert {q.prompt_type.value for q in mini.queries} == {"gpt", "media", "object"}
    files = {a["path"] for a in mini.manifest["artifacts"]}
    assert "base-model/model_index.json" in files
    for m in mini.models:
        assert f"deltas/{m.model_id}/custom_diffusion_lowrank.safetensors" in files


def test_default_run_and_no_weight_features_beat_chance(mini):
    """The README's main job, through the API: chance is chance, pixels are above it."""
    from baselines.models import baseline_submission
    from benchmark.evaluation import RunOptions, evaluate

    quiet = RunOptions(progress=False, cache=False)
    example = evaluate(SHIPPED.parent / "submissions" / "example_extractor", options=quiet)
    assert example["benchmark"]["name"] == "abc-mini"
    random = evaluate(baseline_submission("random"), mini, options=quiet)
    pixels = evaluate(baseline_submission("pixels"), mini, options=quiet)
    for r, p in zip(random["metrics"], pixels["metrics"], strict=True):
        chance, seen = r["metrics"]["mAP"], p["metrics"]["mAP"]
        assert chance["value"] < 0.02, r  # 1 exemplar among 2,000 distractors: ~0.004
        assert seen["ci_low"] > chance["ci_high"], (p["test_case"], p["prompt_type"])
        assert seen["value"] < 0.5  # not saturated


def test_one_corrupt_byte_fails_loading(tmp_path):
    copy = tmp_path / "abc-mini"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns("base-model", "deltas"))
    manifest = load_benchmark(copy).manifest
    shard = copy / manifest["tables"]["queries"]["files"][0]["path"]
    data = bytearray(shard.read_bytes())
    data[len(data) // 3] ^= 0x01
    shard.write_bytes(bytes(data))
    with pytest.raises(BenchmarkError, match="sha256 does not match"):
        load_benchmark(copy)


def test_a_query_regenerates_from_base_model_and_delta(mini):
    """Sample one model's batch of queries again from the shipped files; compare pixels."""
    pytest.importorskip("diffusers")
    from splits.generate.config import load_recipe
    from splits.generate.customize import load_delta
    from splits.generate.pipeline import encode, load_base
    from splits.generate.sample import sample

    recipe = load_recipe("abc-mini")
    cfg = recipe.generate
    model = next(m for m in mini.models if m.part is Part.OBJECT_SEEN)
    batch = [q for q in mini.queries if q.model_id == model.model_id][: cfg.sampler.batch_size]
    assert cfg.base_model == str(ROOT / "base-model")
    pipe = load_base(cfg)
    load_delta(pipe, ROOT / "deltas" / model.model_id)
    images = sample(pipe, [q.prompt for q in batch], [q.seed for q in batch], cfg.sampler)
    ids = [q.query_id for q in batch]
    blocks = mini.iter_image_blocks("queries", set(ids))
    stored = dict(kv for b in blocks for kv in zip(b.ids, b.images, strict=True))
    for image, qid in zip(images, ids, strict=True):
        want = Image.open(io.BytesIO(stored[qid]))
        again = np.asarray(Image.open(io.BytesIO(encode(image, cfg))), dtype=float)
        diff = np.abs(again - np.asarray(want.convert("RGB"), dtype=float))
        assert diff.mean() < 0.5, diff.mean()  # 0 on the machine that generated them


def test_no_pixel_identical_repeats_among_candidates(mini):
    """No distractor equals an exemplar or another distractor; no model repeats an exemplar
    (the sources repeat some pictures under other names; freeze drops the repeats)."""
    import hashlib

    from benchmark.features import decode

    digest = {}
    for table in ("exemplars", "distractors"):
        for block in mini.iter_image_blocks(table):
            for image_id, data in zip(block.ids, block.images, strict=True):
                digest[image_id] = hashlib.sha256(decode(data).tobytes()).hexdigest()
    distractors = [digest[d] for d in mini.distractor_ids]
    assert len(set(distractors)) == len(distractors) == 2000
    exemplar_digests = {digest[e] for e in mini.exemplar_ids}
    assert not exemplar_digests & set(distractors)
    for m in mini.models:
        own = [digest[e] for e in m.exemplar_ids]
        assert len(set(own)) == len(own), m.model_id
