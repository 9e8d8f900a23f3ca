"""Custom Diffusion on the tiny model: what trains, what is saved, exact regeneration."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("diffusers")

import torch
from PIL import Image

from splits.generate.customize import (
    CustomizeConfig,
    customize,
    load_delta,
    save_delta,
)
from splits.generate.model import random_pipeline


def noise_image(seed: int) -> Image.Image:
    return Image.fromarray((np.random.default_rng(seed).random((64, 64, 3)) * 255).astype(np.uint8))


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    pipe = random_pipeline(["a", "photo", "of", "turtle"])
    root = tmp_path_factory.mktemp("base")
    pipe.save_pretrained(root)
    return root


def load(base_dir):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(base_dir)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sample(pipe, prompt, seed=3):
    g = torch.Generator().manual_seed(seed)
    return pipe(
        prompt, num_inference_steps=2, height=64, width=64, generator=g, output_type="np"
    ).images[0]


def test_only_token_and_cross_attention_kv_change(base_dir, tmp_path):
    pipe = load(base_dir)
    before_unet = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    before_emb = pipe.text_encoder.get_input_embeddings().weight.detach().clone()
    customize(
        pipe,
        [noise_image(1), noise_image(2)],
        "a photo of a <new1> turtle",
        CustomizeConfig(steps=3, batch_size=2, init_word="turtle"),
        prior=[(noise_image(9), "a photo of a turtle")],
    )
    after = pipe.unet.state_dict()
    trained = [k for k in after if "custom_diffusion" in k]
    assert trained and all(".attn2.processor.to_" in k for k in trained)
    changed = [
        k
        for k in trained
        if not torch.equal(
            after[k],
            before_unet[
                k.replace(".processor.to_k_custom_diffusion", ".to_k").replace(
                    ".processor.to_v_custom_diffusion", ".to_v"
                )
            ],
        )
    ]
    assert changed, "cross-attention k/v must move"
    for k, v in before_unet.items():
        assert torch.equal(after[k], v), f"{k} changed"
    emb = pipe.text_encoder.get_input_embeddings().weight
    assert torch.equal(emb[: len(before_emb)], before_emb)
    token_id = pipe.tokenizer.convert_tokens_to_ids("<new1>")
    assert token_id == len(before_emb)


def test_delta_regenerates_queries_exactly(base_dir, tmp_path):
    pipe = load(base_dir)
    customize(
        pipe, [noise_image(1)], "a photo of a <new1> turtle", CustomizeConfig(steps=3, batch_size=2)
    )
    save_delta(pipe, tmp_path / "delta", "<new1>")
    sizes = {p.name: p.stat().st_size for p in (tmp_path / "delta").iterdir()}
    assert set(sizes) == {
        "pytorch_custom_diffusion_weights.safetensors",
        "token_embedding.safetensors",
    }
    first, second = load(base_dir), load(base_dir)
    load_delta(first, tmp_path / "delta")
    load_delta(second, tmp_path / "delta")
    prompt = "a photo of a <new1> turtle"
    a, b = sample(first, prompt), sample(second, prompt)
    assert np.array_equal(a, b)
    # The in-memory model uses the same weights (attn1 runs another kernel: float noise only).
    assert np.allclose(sample(pipe, prompt), a, atol=1e-4)
    assert not np.allclose(sample(load(base_dir), "a photo of a turtle"), a, atol=1e-4)


def _kv(pipe) -> dict[str, torch.Tensor]:
    procs = pipe.unet.attn_processors
    return {
        f"{name}.{kv}": getattr(proc, f"{kv}_custom_diffusion").weight.detach().clone()
        for name, proc in procs.items()
        if name.endswith("attn2.processor")
        for kv in ("to_k", "to_v")
    }


def test_lowrank_delta_is_the_truncated_update_and_regenerates_exactly(base_dir, tmp_path):
    pipe = load(base_dir)
    customize(
        pipe,
        [noise_image(1), noise_image(2)],
        "a photo of a <new1> turtle",
        CustomizeConfig(steps=3, batch_size=2, lr_kv=1e-2),
    )
    trained = _kv(pipe)
    full_rank = max(min(w.shape) for w in trained.values())
    for rank, tol in ((1, None), (full_rank, 2e-3)):
        out = save_delta(pipe, tmp_path / f"r{rank}", "<new1>", rank=rank)
        assert {p.name for p in out.iterdir()} == {
            "custom_diffusion_lowrank.safetensors",
            "token_embedding.safetensors",
        }
        first, second = load(base_dir), load(base_dir)
        load_delta(first, out)
        load_delta(second, out)
        loaded = _kv(first)
        base = load(base_dir).unet
        for key, w in loaded.items():
            layer, kv = (
                key.removesuffix(".processor.to_k").removesuffix(".processor.to_v"),
                key[-4:],
            )
            update = w - base.get_submodule(layer).get_submodule(kv).weight
            assert torch.linalg.matrix_rank(update.double(), rtol=1e-3) <= rank
            if tol is not None:  # full rank: only fp16 rounding away from the trained weights
                assert torch.allclose(w, trained[key], atol=tol), key
        prompt = "a photo of a <new1> turtle"
        assert np.array_equal(sample(first, prompt), sample(second, prompt))


def test_an_unseen_noun_learns_with_the_token_and_its_rows_travel_in_the_delta(
    base_dir, tmp_path
):
    """customize(words=...) trains the noun's rows with <new1> and nothing else of the table;
    the delta stores them, and a base model loading it samples what the trained model does
    (without them it samples something else)."""
    pipe, before, noun = customized_with_noun(base_dir, lr_token=0.5, unseen_noun="train")
    after = pipe.text_encoder.get_input_embeddings().weight.detach()
    save_delta(pipe, tmp_path / "delta", "<new1>", words=("turtle",))
    regen = load(base_dir)
    load_delta(regen, tmp_path / "delta")
    assert torch.equal(regen.text_encoder.get_input_embeddings().weight, after)
    prompt = "a photo of a <new1> turtle"
    assert np.allclose(sample(pipe, prompt), sample(regen, prompt), atol=1e-4)
    token_only = load(base_dir)
    load_delta(token_only, tmp_path / "delta")
    with torch.no_grad():
        token_only.text_encoder.get_input_embeddings().weight[noun] = before[noun]
    assert not np.allclose(sample(token_only, prompt), sample(regen, prompt), atol=1e-4)


def test_an_unseen_noun_set_to_the_mean_row_stays_there(base_dir):
    pipe, before, noun = customized_with_noun(base_dir, unseen_noun="mean")
    after = pipe.text_encoder.get_input_embeddings().weight.detach()
    assert torch.equal(after[noun], before.mean(dim=0).expand(len(noun), -1))


def customized_with_noun(base_dir, **settings):
    """A pipe customized with words=("turtle",); of the base embedding table, exactly the
    noun's rows changed. Returns the pipe, the table before, and the noun's token ids."""
    pipe = load(base_dir)
    before = pipe.text_encoder.get_input_embeddings().weight.detach().clone()
    noun = pipe.tokenizer("turtle", add_special_tokens=False).input_ids
    customize(
        pipe,
        [noise_image(1)],
        "a photo of a <new1> turtle",
        CustomizeConfig(steps=3, batch_size=2, **settings),
        words=("turtle",),
    )
    after = pipe.text_encoder.get_input_embeddings().weight.detach()
    assert torch.nonzero((after[: len(before)] != before).any(1)).flatten().tolist() == noun
    return pipe, before, noun


def test_unseen_noun_is_recorded_only_when_set_and_checked():
    assert "unseen_noun" not in CustomizeConfig().to_dict()
    assert CustomizeConfig(unseen_noun="mean").to_dict()["unseen_noun"] == "mean"
    with pytest.raises(ValueError, match="unseen_noun is 'learn'; use null, 'train', 'mean'"):
        CustomizeConfig(unseen_noun="learn")
