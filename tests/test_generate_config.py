"""Generation configs: both shipped recipes load; typos are clear errors."""

from __future__ import annotations

import json

import pytest

from benchmark.errors import AttribBenchError
from splits.generate.config import load_recipe, resolve_base_model


def test_shipped_recipes_load():
    mini = load_recipe("abc-mini")
    assert mini.name == "abc-mini" and mini.generate.image_size == 64
    assert mini.generate.base_model.endswith("splits/abc-mini/base-model")
    assert mini.generate.template_prompts and not load_recipe("sd-v1-4").generate.template_prompts
    # The base model's architecture and pretraining are part of the recipe (lists -> tuples).
    assert mini.model.vae_channels == (16, 32, 64) and mini.model.latent_size == 16
    assert mini.pretrain.unet_steps > mini.pretrain.vae_steps > 0
    sd = load_recipe("sd-v1-4")
    assert sd.generate.base_model == "CompVis/stable-diffusion-v1-4"
    assert sd.generate.sampler.height == 512 and sd.generate.customize.steps == 250
    # Same code, different settings only.
    assert type(sd.generate) is type(mini.generate)
    # 0.4.0: the settings that distinguish it from 0.3.0 (whose recipe is in the history).
    assert mini.domain.content_checks and mini.pretrain.lr_schedule == "cosine"
    assert mini.pretrain.untrained_words == "mean" and mini.generate.sampler.guidance == 3.0
    # 0.5.0: objects are customized without prior preservation, styles as in 0.4.0.
    assert mini.version == "0.5.0"
    customize = mini.generate.customize
    assert customize.for_kind("object").prior_weight == 0.0
    assert customize.for_kind("style").prior_weight == customize.prior_weight == 1.0
    # Probe recipes run on the shipped base model.
    probe = load_recipe("abc-mini-next-guidance-3-probe")
    assert probe.generate.base_model == mini.generate.base_model


def test_every_shipped_config_loads_and_names_an_existing_base_model():
    """Probe and candidate recipes too: a renamed base model folder must not strand them."""
    from pathlib import Path

    from splits.generate.config import CONFIGS

    for path in sorted(CONFIGS.glob("*.json")):
        recipe = load_recipe(path.stem)
        base = recipe.generate.base_model
        assert base.startswith("CompVis/") or Path(base).is_dir(), (path.name, base)


def test_unknown_setting_is_named(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"base_model": "a/b", "customize": {"stpes": 3}}))
    with pytest.raises(AttribBenchError, match=r"customize\.stpes"):
        load_recipe(path)
    path.write_text(json.dumps({"base_model": "a/b", "model": {"unet_chanels": [8]}}))
    with pytest.raises(AttribBenchError, match=r"model\.unet_chanels"):
        load_recipe(path)
    path.write_text(json.dumps({"base_model": "a/b", "domain": {"max_models": {"tset": 3}}}))
    with pytest.raises(AttribBenchError, match=r"domain\.max_models\.tset"):
        load_recipe(path)
    path.write_text(json.dumps({"base_model": "a/b", "pretrain": {"lr_schedule": "cosin"}}))
    with pytest.raises(AttribBenchError, match=r"pretrain.*'cosin' is not one of constant, cosine"):
        load_recipe(path)
    path.write_text("{")
    with pytest.raises(AttribBenchError, match="cannot read config"):
        load_recipe(path)


def test_base_model_resolution():
    assert resolve_base_model("CompVis/stable-diffusion-v1-4") == "CompVis/stable-diffusion-v1-4"
    assert resolve_base_model("splits/abc-mini/base-model").startswith("/")
