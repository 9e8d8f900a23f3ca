"""Queries: images sampled from a customized model with AbC's three prompt types.

- ``media`` (object models): "{medium} of <new1> {category}" for ten media;
- ``object`` (style models): "a picture of {thing} in the style of <new1> art" for ten things;
- ``gpt``: free sentences. AbC had a language model write them; ours are a fixed list written
  here, so anyone can regenerate the exact prompts.

``phrase`` adapts a prompt to the caption template a small base model was trained on (the
tiny AbC-mini model only follows prompts close to its captions); on Stable Diffusion it is the
identity. Every query records its prompt, prompt type, seed, scheduler, steps and guidance.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass

from benchmark.types import PromptType

MEDIA = (
    "a charcoal drawing",
    "a color pencil sketch",
    "a photo",
    "a photorealistic painting",
    "a tattoo",
    "a watercolor painting",
    "a woodcut",
    "an ink drawing",
    "an oil on canvas painting",
    "an ultrafine detailed painting",
)
THINGS = ("sun", "moon", "star", "tree", "flower", "river", "sky", "cloud", "grass", "animal")
GPT_OBJECT = (
    "a {token} {category} resting in a quiet garden",
    "a {token} {category} on a wooden table by the window",
    "a close view of a {token} {category} in the morning light",
    "a {token} {category} standing in the snow",
    "a {token} {category} next to a small blue lake",
    "a {token} {category} on a busy city street",
    "a {token} {category} in a field of tall grass",
    "a {token} {category} at the beach under a cloudy sky",
    "a {token} {category} in front of an old stone wall",
    "a {token} {category} lit by a warm evening sun",
)
GPT_STYLE = (
    "a quiet harbor at dawn in the style of {token} art",
    "a crowded market street in the style of {token} art",
    "a mountain village under snow in the style of {token} art",
    "a bowl of fruit on a table in the style of {token} art",
    "a portrait of an old sailor in the style of {token} art",
    "a forest path in autumn in the style of {token} art",
    "a city skyline at night in the style of {token} art",
    "a small boat on a calm sea in the style of {token} art",
    "a garden full of flowers in the style of {token} art",
    "a horse running across a meadow in the style of {token} art",
)


def prompts(
    kind: str, prompt_type: PromptType, count: int, token: str = "<new1>", category: str = ""
) -> list[str]:
    """``count`` prompts of one type for an ``object`` or ``style`` model (cycling the list)."""
    if kind == "object" and prompt_type is PromptType.MEDIA:
        base = [f"{m} of {token} {category}" for m in MEDIA]
    elif kind == "style" and prompt_type is PromptType.OBJECT:
        base = [f"a picture of {t} in the style of {token} art" for t in THINGS]
    elif prompt_type is PromptType.GPT:
        lines = GPT_OBJECT if kind == "object" else GPT_STYLE
        base = [line.format(token=token, category=category) for line in lines]
    else:
        raise ValueError(f"prompt type {prompt_type.value!r} is not used for {kind} models")
    return [base[i % len(base)] for i in range(count)]


def query_seed(model_id: str, prompt_type: PromptType, index: int) -> int:
    """A stable 31-bit seed per query, independent of generation order and sharding."""
    digest = hashlib.sha256(f"{model_id}/{prompt_type.value}/{index}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


@dataclass(frozen=True)
class SamplerConfig:
    steps: int = 50
    guidance: float = 6.0
    scheduler: str = "DDIMScheduler"
    height: int = 64
    width: int = 64

    def to_dict(self) -> dict:
        return asdict(self)


def sample(
    pipe,
    prompt_list: list[str],
    seeds: list[int],
    cfg: SamplerConfig,
    phrase: Callable[[str], str] = lambda p: p,
):
    """One image per (prompt, seed); each image depends only on its own prompt and seed."""
    import torch

    if type(pipe.scheduler).__name__ != cfg.scheduler:
        raise ValueError(
            f"pipeline scheduler is {type(pipe.scheduler).__name__}, config says {cfg.scheduler}"
        )
    images = []
    for prompt, seed in zip(prompt_list, seeds, strict=True):
        g = torch.Generator().manual_seed(seed)
        out = pipe(
            phrase(prompt),
            num_inference_steps=cfg.steps,
            guidance_scale=cfg.guidance,
            height=cfg.height,
            width=cfg.width,
            generator=g,
        )
        images.append(out.images[0])
    return images
