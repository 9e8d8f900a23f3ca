"""The tiny base model: word-level tokenizer, diffusers layout, save/load, seeded sampling."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("diffusers")

from splits.generate.model import (
    TinyModelConfig,
    build_tokenizer,
    random_pipeline,
)


def test_tokenizer_is_word_level_and_takes_new_tokens():
    tok = build_tokenizer(["A", "photo", "of", "turtle"], max_tokens=8)
    ids = tok("A photo of a turtle.", padding="max_length", max_length=8).input_ids
    words = tok.convert_ids_to_tokens(ids)
    assert words == ["<|startoftext|>", "a", "photo", "of", "a", "turtle", ".", "<|endoftext|>"]
    tok.add_tokens(["<new1>"])
    words = tok.convert_ids_to_tokens(tok("a <new1> turtle").input_ids)
    assert words == ["<|startoftext|>", "a", "<new1>", "turtle", "<|endoftext|>"]
    assert tok.convert_ids_to_tokens(tok("a zebra").input_ids)[2] == "<|unk|>"


def test_latents_are_f4():
    assert TinyModelConfig().latent_size == 16


def test_pipeline_saves_loads_and_samples_deterministically(tmp_path):
    import torch
    from diffusers import StableDiffusionPipeline

    pipe = random_pipeline(["a", "photo", "of", "turtle", "drawing", "lamp"])
    pipe.save_pretrained(tmp_path)
    assert (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    loaded = StableDiffusionPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)

    def sample(prompt, seed):
        g = torch.Generator().manual_seed(seed)
        return loaded(
            prompt, num_inference_steps=2, height=64, width=64, generator=g, output_type="np"
        ).images[0]

    a = sample("a photo of a turtle", 1)
    assert a.shape == (64, 64, 3)
    assert np.array_equal(a, sample("a photo of a turtle", 1))
    assert not np.array_equal(a, sample("a photo of a turtle", 2))
