"""Prompt types and seeds for queries; sampling is reproducible per (prompt, seed)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmark.types import PromptType
from splits.generate.sample import SamplerConfig, prompt_words, prompts, query_seed, sample


def test_prompt_types_follow_abc():
    media = prompts("object", PromptType.MEDIA, 10, category="turtle")
    assert media[0] == "a charcoal drawing of <new1> turtle" and len(set(media)) == 10
    objects = prompts("style", PromptType.OBJECT, 12)
    assert objects[0] == "a picture of sun in the style of <new1> art"
    assert objects[10] == objects[0]  # cycles after the ten things
    assert all("<new1>" in p for p in prompts("style", PromptType.GPT, 10))
    assert all(
        "<new1> turtle" in p for p in prompts("object", PromptType.GPT, 10, category="turtle")
    )
    with pytest.raises(ValueError):
        prompts("object", PromptType.OBJECT, 1)


CASES = [
    ("object", PromptType.MEDIA),
    ("object", PromptType.GPT),
    ("style", PromptType.OBJECT),
    ("style", PromptType.GPT),
]


def test_template_prompts_start_like_the_small_models_captions():
    media = prompts("object", PromptType.MEDIA, 10, category="turtle", template=True)
    assert media[0] == "a charcoal drawing of a <new1> turtle" and len(set(media)) == 10
    gpt = prompts("object", PromptType.GPT, 10, category="turtle", template=True)
    assert all(p.startswith("a photo of a <new1> turtle ") for p in gpt) and len(set(gpt)) == 10
    for ptype in (PromptType.OBJECT, PromptType.GPT):
        style = prompts("style", ptype, 10, template=True)
        assert all(p.startswith("a drawing of ") and p.endswith(" <new1> art") for p in style)
    # Same prompts otherwise: the template adds words, it never drops the prompt's own.
    for kind, ptype in CASES:
        for plain, phrased in zip(
            prompts(kind, ptype, 10, category="turtle"),
            prompts(kind, ptype, 10, category="turtle", template=True),
            strict=True,
        ):
            rest = phrased.split()
            assert all(w in rest for w in plain.split() if w != "picture")


def test_prompt_words_cover_every_prompt():
    known = set(prompt_words()) | {"<new1>", "turtle"}
    for kind, ptype in CASES:
        for template in (False, True):
            for p in prompts(kind, ptype, 10, category="turtle", template=template):
                assert set(p.split()) <= known, p


def test_seeds_are_stable_and_distinct():
    a = [query_seed("m1", PromptType.GPT, i) for i in range(50)]
    assert a == [query_seed("m1", PromptType.GPT, i) for i in range(50)]
    assert len(set(a)) == 50 and all(0 <= s < 2**31 for s in a)
    assert query_seed("m1", PromptType.GPT, 0) != query_seed("m2", PromptType.GPT, 0)


def test_sampling_is_reproducible_per_prompt_and_seed():
    pytest.importorskip("diffusers")

    from splits.generate.model import random_pipeline

    pipe = random_pipeline(["a", "photo", "of", "turtle"])
    cfg = SamplerConfig(steps=2)
    one = sample(pipe, ["a photo of a turtle", "a photo"], [5, 6], cfg)
    two = sample(pipe, ["a photo"], [6], cfg)  # order and batch do not matter
    assert np.array_equal(np.asarray(one[1]), np.asarray(two[0]))
    assert one[0].size == (64, 64)
    with pytest.raises(ValueError, match="scheduler"):
        sample(pipe, ["a"], [1], SamplerConfig(scheduler="PNDMScheduler"))
    # Batched: the same batch again gives the same images; each image has its own noise, so a
    # batch of two equals single samples up to kernel rounding.
    batched = SamplerConfig(steps=2, batch_size=2)
    a = sample(pipe, ["a photo of a turtle", "a photo"], [5, 6], batched)
    b = sample(pipe, ["a photo of a turtle", "a photo"], [5, 6], batched)
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b, strict=True))
    for x, y in zip(a, one, strict=True):
        assert np.abs(np.asarray(x, dtype=int) - np.asarray(y, dtype=int)).max() <= 2
