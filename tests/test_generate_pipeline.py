"""The whole generation pipeline, smoke-sized: two models, a few steps, frozen and loaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("diffusers")

from benchmark.errors import BenchmarkError
from benchmark.splits import load_benchmark, verify_benchmark
from benchmark.types import Part
from splits.generate.customize import CustomizeConfig, load_delta
from splits.generate.domain import Domain, ModelSpec
from splits.generate.model import random_pipeline
from splits.generate.pipeline import (
    GenerateConfig,
    freeze,
    generate_in_parallel,
    generate_models,
)
from splits.generate.sample import SamplerConfig, sample
from splits.generate.sources import SourceImage


def image(path: Path, seed: int, package: str, category: str, group: str) -> SourceImage:
    rng = np.random.default_rng(seed)
    Image.fromarray((rng.random((48, 48, 3)) * 255).astype(np.uint8)).save(path)
    return SourceImage(path.stem, path, package, category, "", group, "CC0-1.0")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen")
    photos = [
        image(root / f"bird{i}.png", i, "tuxpaint-stamps-default", "birds", "t") for i in range(4)
    ]
    drawings = [
        image(root / f"drw{i}.png", 10 + i, "openclipart-png", "shapes", "ada") for i in range(4)
    ]
    pretrain = tuple(photos[1:] + drawings[2:])
    captions = tuple(["a photo of a bird"] * 3 + ["a drawing of a shape"] * 2)
    models = (
        ModelSpec("object-seen-obj-000", Part.OBJECT_SEEN, "object", "bird", (photos[0],)),
        ModelSpec("style-seen-style-000", Part.STYLE_SEEN, "style", "ada", tuple(drawings[:2])),
    )
    domain = Domain(pretrain, captions, pretrain[:3], models)
    base = root / "base"
    random_pipeline(
        ["a", "photo", "of", "bird", "drawing", "in", "the", "style", "art"]
    ).save_pretrained(base)
    cfg = GenerateConfig(
        base_model=str(base),
        customize=CustomizeConfig(steps=2, batch_size=1),
        sampler=SamplerConfig(steps=2),
        queries_per_type=2,
        prior_images=2,
    )
    return root, domain, cfg


def test_generate_is_resumable_sharded_and_reproducible(setup):
    import json

    root, domain, cfg = setup
    out = root / "run"
    first = generate_models(domain, cfg, out, num_shards=2, shard_index=0)
    second = generate_models(domain, cfg, out, num_shards=2, shard_index=1)
    assert [f.name for f in first + second] == [m.model_id for m in domain.models]
    done = sorted(p.parent.name for p in out.glob("models/*/done.json"))
    assert done == sorted(m.model_id for m in domain.models)
    stamp = (out / "models" / domain.models[0].model_id / "done.json").stat().st_mtime_ns
    generate_models(domain, cfg, out)  # everything done: nothing is redone
    assert (out / "models" / domain.models[0].model_id / "done.json").stat().st_mtime_ns == stamp

    # Only done.json and delta/ kept (a run carried over to another machine): the images are
    # sampled again from base + delta, identical, and the model is not customized again.
    folder = out / "models" / domain.models[0].model_id
    before = {p.name: p.read_bytes() for p in sorted((folder / "queries").glob("*.png"))}
    delta = {p.name: p.read_bytes() for p in (folder / "delta").iterdir()}
    for png in (folder / "queries").glob("*.png"):
        png.unlink()
    # CPU results depend on torch's thread count: resampling uses the recorded one.
    import torch

    recorded = json.loads((folder / "done.json").read_text())["torch_threads"]
    threads = torch.get_num_threads()
    torch.set_num_threads(2 if recorded == 1 else 1)
    try:
        generate_models(domain, cfg, out, num_shards=2, shard_index=0)
    finally:
        torch.set_num_threads(threads)
    assert {p.name: p.read_bytes() for p in sorted((folder / "queries").glob("*.png"))} == before
    assert {p.name: p.read_bytes() for p in (folder / "delta").iterdir()} == delta
    assert (folder / "done.json").stat().st_mtime_ns == stamp

    # A query regenerated from base + delta with its recorded seed is the same image.
    from diffusers import StableDiffusionPipeline

    folder = out / "models" / domain.models[1].model_id
    info = json.loads((folder / "done.json").read_text())
    assert [q["prompt_type"] for q in info["queries"]] == ["gpt", "gpt", "object", "object"]
    q = info["queries"][2]
    pipe = StableDiffusionPipeline.from_pretrained(cfg.base_model)
    pipe.set_progress_bar_config(disable=True)
    load_delta(pipe, folder / "delta")
    again = sample(pipe, [q["prompt"]], [q["seed"]], cfg.sampler)[0]
    saved = Image.open(folder / "queries" / f"{q['query_id']}.png")
    assert saved.size == (64, 64)
    assert np.array_equal(np.asarray(again), np.asarray(saved))


def test_parallel_jobs_make_the_same_models_as_one_process(setup):
    import torch

    root, domain, cfg = setup
    serial, parallel = root / "serial", root / "parallel"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the jobs run one thread each: compare like with like
    try:
        generate_models(domain, cfg, serial)
    finally:
        torch.set_num_threads(threads)
    seen = []
    folders = generate_in_parallel(domain, cfg, parallel, 2, progress=seen.append)
    assert [f.name for f in folders] == [m.model_id for m in domain.models]
    assert sorted(seen) == sorted(m.model_id for m in domain.models)

    def files(run: Path, model_id: str) -> dict[str, bytes]:
        folder = run / "models" / model_id
        return {
            str(p.relative_to(folder)): p.read_bytes()
            for sub in ("delta", "queries", "base")
            for p in sorted((folder / sub).glob("*"))
        }

    for m in domain.models:
        made = files(parallel, m.model_id)
        assert any(name.startswith("queries/") for name in made)
        assert made == files(serial, m.model_id), m.model_id


def test_a_failing_job_fails_the_parallel_run_and_keeps_what_others_finished(setup):
    from dataclasses import replace

    root, domain, cfg = setup
    gone = replace(domain.models[1].exemplars[0], path=root / "missing.png")
    broken = replace(domain.models[1], exemplars=(gone,))
    domain = replace(domain, models=(domain.models[0], broken))
    out = root / "failing"
    with pytest.raises(FileNotFoundError):
        generate_in_parallel(domain, cfg, out, 2)
    assert (out / "models" / domain.models[0].model_id / "done.json").is_file()
    assert not (out / "models" / broken.model_id / "done.json").exists()


def test_freeze_writes_a_loadable_benchmark(setup):
    root, domain, cfg = setup
    out = root / "run"
    generate_models(domain, cfg, out)
    # A run made with other settings cannot be frozen under this recipe's name.
    from dataclasses import replace

    from benchmark.errors import AttribBenchError

    other = replace(cfg, sampler=replace(cfg.sampler, guidance=cfg.sampler.guidance / 2))
    with pytest.raises(AttribBenchError, match=r"done.json: recipe.sampler.guidance"):
        freeze(domain, other, out, root / "refused", name="x", version="0", description="x")
    assert not (root / "refused").exists()
    stale = root / "frozen" / "deltas" / "model-of-an-older-run"
    stale.mkdir(parents=True)
    (stale / "token_embedding.safetensors").write_bytes(b"old")
    bench = freeze(
        domain, cfg, out, root / "frozen", name="abc-smoke", version="0.0.1", description="smoke"
    )
    again = load_benchmark(root / "frozen")
    assert again.manifest_sha256 == bench.manifest_sha256
    assert len(bench.models) == 2 and len(bench.queries) == 8
    assert set(bench.exemplar_ids) == {"bird0", "drw0", "drw1"}
    assert len(bench.distractor_ids) == 3
    assert bench.manifest["generator"]["queries_per_type"] == 2
    # The base model and every delta travel with the benchmark, hashed in the manifest.
    files = {a["path"] for a in bench.manifest["artifacts"]}
    assert "base-model/model_index.json" in files
    assert not stale.exists() and not any("older-run" in f for f in files)
    for spec in domain.models:
        assert f"deltas/{spec.model_id}/token_embedding.safetensors" in files
    assert verify_benchmark(root / "frozen")["artifacts"] == len(files)
    delta = root / "frozen" / "deltas" / domain.models[0].model_id / "token_embedding.safetensors"
    data = bytearray(delta.read_bytes())
    data[-1] ^= 0xFF
    delta.write_bytes(bytes(data))
    with pytest.raises(BenchmarkError, match=r"token_embedding.*sha256 does not match"):
        verify_benchmark(root / "frozen")


def test_compressed_deltas_and_base_samples(setup):
    from dataclasses import replace

    from splits.generate.pipeline import untokened

    root, domain, cfg = setup
    cfg = replace(
        cfg,
        customize=replace(cfg.customize, delta_rank=2),
        base_samples=True,
        template_prompts=True,
    )
    out = root / "run-lowrank"
    generate_models(domain, cfg, out)
    import json

    for spec in domain.models:
        folder = out / "models" / spec.model_id
        assert (folder / "delta" / "custom_diffusion_lowrank.safetensors").is_file()
        info = json.loads((folder / "done.json").read_text())
        for q in info["queries"]:
            phrased = "of a <new1> bird" in q["prompt"] or q["prompt"].startswith("a drawing of ")
            assert phrased, q["prompt"]
            custom = np.asarray(Image.open(folder / "queries" / f"{q['query_id']}.png"))
            base = np.asarray(Image.open(folder / "base" / f"{q['query_id']}.png"))
            assert custom.shape == base.shape == (64, 64, 3)
            # Same seed, the prompt without the token, the base model: same image as sampling
            # the base model directly.
            direct = sample(_plain(cfg), [untokened(q["prompt"])], [q["seed"]], cfg.sampler)[0]
            assert np.array_equal(np.asarray(direct), base)
    assert untokened("a photo of a <new1> bird") == "a photo of a bird"


def test_models_are_processed_round_robin_over_parts():
    """A partial run covers every part early; the order changes no result (per-model seeds)."""
    from splits.generate.pipeline import _round_robin

    def spec(part: Part, i: int) -> ModelSpec:
        return ModelSpec(f"{part.value}-{i}", part, "object", "bird", ())

    specs = [spec(Part.OBJECT_SEEN, i) for i in range(3)] + [spec(Part.STYLE_SEEN, 0)]
    specs += [spec(Part.TRAIN, i) for i in range(2)]
    assert [s.model_id for s in _round_robin(specs)] == [
        "object-seen-0",
        "style-seen-0",
        "train-0",
        "object-seen-1",
        "train-1",
        "object-seen-2",
    ]


def _plain(cfg):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(cfg.base_model)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_frozen_images_have_no_pixel_identical_repeats(tmp_path):
    """Repeated source pictures: one exemplar per repeat, no distractor equal to an exemplar
    or to another distractor, and the pool refilled to its size."""
    import functools
    import io

    from splits.generate.domain import Domain, ModelSpec
    from splits.generate.pipeline import distinct_images, encode
    from splits.generate.sources import square_rgb

    def image(name: str, rgb) -> SourceImage:
        path = tmp_path / f"{name}.png"
        Image.new("RGB", (8, 8), rgb).save(path)
        return SourceImage(name, path, "pkg", "c", "", "g", "CC0-1.0")

    a1, a2, b = image("a1", (255, 0, 0)), image("a2", (255, 0, 0)), image("b", (0, 0, 255))
    pool = [image(f"p{i}", (i * 20, 100, 50)) for i in range(6)]
    copy_of_a = image("pa", (255, 0, 0))
    twin = image("p0-twin", (0, 100, 50))  # the same pixels as p0
    pretrain = (*pool, copy_of_a, twin)
    domain = Domain(
        pretrain=pretrain,
        captions=tuple("a drawing of a thing" for _ in pretrain),
        distractors=(pool[0], copy_of_a, twin),
        models=(ModelSpec("m0", Part.STYLE_SEEN, "style", "x", (a1, a2, b)),),
    )
    images = {p.image_id: square_rgb(p.path, 8) for p in [*pretrain, a1, a2, b]}
    kept, distractors = distinct_images(domain, images)
    assert kept == {"m0": ("a1", "b")}
    assert len(distractors) == 3 and "pa" not in distractors
    assert len({images[i].tobytes() for i in distractors}) == 3  # no twins left
    assert not {"p0", "p0-twin"} <= set(distractors)
    assert distractors == sorted(distractors)

    # Renderings that differ by one level in one pixel are distinct, but equal once stored
    # lossily: judged as stored, only one of them stays a distractor.
    near = np.full((8, 8, 3), (0, 100, 50), dtype=np.uint8)
    near[3, 3, 0] = 1
    images["p0-twin"] = Image.fromarray(near)
    webp = GenerateConfig(base_model="unused", image_format="webp")
    stored = functools.partial(encode, cfg=webp)
    assert Image.open(io.BytesIO(stored(images["p0"]))).tobytes() == (
        Image.open(io.BytesIO(stored(images["p0-twin"]))).tobytes()
    )
    assert {"p0", "p0-twin"} <= set(distinct_images(domain, images)[1])
    kept, distractors = distinct_images(domain, images, stored)
    assert not {"p0", "p0-twin"} <= set(distractors) and len(distractors) == 3


def test_models_can_be_selected_by_glob_and_only_unseen_nouns_learn(setup, tmp_path):
    """``only`` (splits generate --models) runs just the matching models; with
    ``unseen_noun`` an object-unseen model stores its noun's rows, other models do not."""
    from dataclasses import replace

    from safetensors import safe_open

    from splits.generate.pipeline import delta_words, select_models

    _, domain, cfg = setup
    unseen = ModelSpec(
        "object-unseen-000", Part.OBJECT_UNSEEN, "object", "bird", domain.models[0].exemplars
    )
    domain = Domain(domain.pretrain, domain.captions, domain.distractors, (*domain.models, unseen))
    assert [s.model_id for s in select_models(domain.models, ["object-*"])] == [
        "object-seen-obj-000",
        "object-unseen-000",
    ]
    assert select_models(domain.models) == list(domain.models)
    cfg = replace(cfg, customize=replace(cfg.customize, unseen_noun="train"))
    assert delta_words(unseen, cfg) == ("bird",) and delta_words(domain.models[0], cfg) == ()
    out = tmp_path / "run"
    done = generate_models(domain, cfg, out, only=["*-unseen-*", "style-*"])
    assert [p.name for p in done] == ["style-seen-style-000", "object-unseen-000"]
    assert sorted(p.name for p in (out / "models").iterdir()) == sorted(p.name for p in done)
    for folder, has_words in ((done[1], True), (done[0], False)):
        with safe_open(str(folder / "delta" / "token_embedding.safetensors"), "pt") as f:
            assert ("word_rows" in set(f.keys())) is has_words


def test_settings_by_kind_and_a_changed_recipe_is_refused_on_resume(setup, tmp_path):
    """``customize.by_kind`` applies to that kind only and is recorded per model; resuming
    a run with other settings names the setting instead of mixing two recipes."""
    import json
    from dataclasses import replace

    from benchmark.errors import AttribBenchError

    _, domain, cfg = setup
    cfg = replace(cfg, customize=replace(cfg.customize, by_kind={"style": {"steps": 3}}))
    out = tmp_path / "run"
    generate_models(domain, cfg, out)
    info = {
        m.model_id: json.loads((out / "models" / m.model_id / "done.json").read_text())
        for m in domain.models
    }
    obj, style = info["object-seen-obj-000"], info["style-seen-style-000"]
    assert obj["customize"]["steps"] == 2 and style["customize"]["steps"] == 3
    assert obj["recipe"]["customize"]["steps"] == 2 and style["recipe"]["customize"]["steps"] == 3
    assert "by_kind" not in style["recipe"]["customize"]
    assert style["recipe"]["base_model"].startswith("sha256:")

    generate_models(domain, cfg, out)  # same recipe: resumes (nothing to do)
    halved = replace(cfg, customize=replace(cfg.customize, lr_kv=cfg.customize.lr_kv / 2))
    with pytest.raises(AttribBenchError) as err:
        generate_models(domain, halved, out)
    line = err.value.line()
    assert "object-seen-obj-000/done.json: recipe.customize.lr_kv" in line
    assert "delete" in line
    # Only the style models' settings changed: the object model is still this recipe's.
    longer = replace(cfg, customize=replace(cfg.customize, by_kind={"style": {"steps": 4}}))
    with pytest.raises(AttribBenchError) as err:
        generate_models(domain, longer, out)
    assert "style-seen-style-000/done.json: recipe.customize.steps" in err.value.line()
    generate_models(domain, longer, out, only=["object-*"])

    # done.json written before the record existed: taken as it is.
    path = out / "models" / "object-seen-obj-000" / "done.json"
    legacy = json.loads(path.read_text())
    del legacy["recipe"]
    path.write_text(json.dumps(legacy))
    generate_models(domain, halved, out, only=["object-*"])


def test_by_kind_settings_are_checked():
    from dataclasses import replace

    with pytest.raises(ValueError, match=r"by_kind\.scene"):
        CustomizeConfig(by_kind={"scene": {"steps": 3}})
    with pytest.raises(ValueError, match=r"by_kind\.style\.stepz is not a setting"):
        CustomizeConfig(by_kind={"style": {"stepz": 3}})
    cfg = CustomizeConfig(steps=2, by_kind={"style": {"steps": 5, "lr_kv": 1e-3}})
    assert cfg.for_kind("object") == replace(cfg, by_kind={})
    assert cfg.for_kind("style").steps == 5 and cfg.for_kind("style").lr_kv == 1e-3
    assert cfg.to_dict()["by_kind"] == {"style": {"steps": 5, "lr_kv": 1e-3}}
    assert "by_kind" not in CustomizeConfig().to_dict()


def test_user_errors_cross_process_boundaries_intact():
    """A parallel job's error reaches the parent by pickle; it must stay one clear line."""
    import pickle

    from benchmark.errors import AttribBenchError, SubmissionError

    for cls in (AttribBenchError, SubmissionError):
        err = cls("run/done.json", "recipe.customize.steps", "made with 400", "delete it")
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is cls and back.line() == err.line()


def test_a_sampler_change_reuses_the_deltas_of_another_run(setup, tmp_path, monkeypatch):
    """``deltas_from``: models another run finished with the same customization are sampled
    from its deltas without training, and come out as a run made from scratch would; models
    customized otherwise there are customized again."""
    import json
    from dataclasses import replace

    from splits.generate import pipeline

    _, domain, cfg = setup
    first = tmp_path / "first"
    generate_models(domain, cfg, first)
    stronger = replace(cfg, sampler=replace(cfg.sampler, guidance=cfg.sampler.guidance + 4))
    scratch = tmp_path / "scratch"
    generate_models(domain, stronger, scratch)

    def no_training(*args, **kwargs):
        raise AssertionError("customized although a delta could be reused")

    monkeypatch.setattr(pipeline, "customize", no_training)
    reused = tmp_path / "reused"
    generate_models(domain, stronger, reused, deltas_from=first)
    for spec in domain.models:
        a, b, c = (run / "models" / spec.model_id for run in (first, scratch, reused))
        files = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
        assert files == sorted(p.relative_to(c) for p in c.rglob("*") if p.is_file())
        for rel in files:
            if rel.name != "done.json":
                assert (b / rel).read_bytes() == (c / rel).read_bytes(), rel
        queries = sorted((c / "queries").iterdir())
        assert any(q.read_bytes() != (a / "queries" / q.name).read_bytes() for q in queries)
        info = json.loads((c / "done.json").read_text())
        assert info["delta_from"] == a.as_posix()
        assert info["recipe"] == json.loads((b / "done.json").read_text())["recipe"]
        assert info["customize"] == json.loads((a / "done.json").read_text())["customize"]

    # A recipe that changes one kind's customization reuses only the other kind's deltas.
    monkeypatch.undo()
    objects = replace(cfg, customize=replace(cfg.customize, by_kind={"object": {"steps": 3}}))
    mixed = tmp_path / "mixed"
    generate_models(domain, objects, mixed, deltas_from=first)
    obj, style = (json.loads((mixed / "models" / m.model_id / "done.json").read_text())
                  for m in domain.models)  # fmt: skip
    assert "delta_from" not in obj and obj["customize"]["steps"] == 3
    assert style["delta_from"] == (first / "models" / domain.models[1].model_id).as_posix()
