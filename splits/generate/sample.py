"""Queries: images sampled from a customized model with AbC's three prompt types.

- ``media`` (object models): "{medium} of <new1> {category}" for ten media;
- ``object`` (style models): "a picture of {thing} in the style of <new1> art" for ten things;
- ``gpt``: free sentences. AbC had a language model write them; ours are a fixed list written
  here, so anyone can regenerate the exact prompts.

With ``template=True`` every prompt is phrased in the caption template a small base model was
trained on ("a photo of a {noun}" / "a drawing of a {noun}"): the tiny AbC-mini model follows
only prompts that start like its captions, so the template comes first and the prompt type's
own words follow ("a photo of a <new1> dog resting in a quiet garden", "a watercolor painting
of a <new1> dog", "a drawing of a sun in the style of <new1> art"). Stable Diffusion gets
AbC's wording unchanged. Every query records the exact prompt fed to the model, its prompt
type, seed, scheduler, steps and guidance.
"""

from __future__ import annotations

import hashlib
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
    "a {token} {category} seen close up in the morning light",
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
    kind: str,
    prompt_type: PromptType,
    count: int,
    token: str = "<new1>",
    category: str = "",
    template: bool = False,
) -> list[str]:
    """``count`` prompts of one type for an ``object`` or ``style`` model (cycling the list).

    ``template``: phrase them in the small base model's caption template (module docstring).
    """
    art = "a drawing of " if template else ""
    if kind == "object" and prompt_type is PromptType.MEDIA:
        article = "a " if template else ""
        base = [f"{m} of {article}{token} {category}" for m in MEDIA]
    elif kind == "style" and prompt_type is PromptType.OBJECT:
        thing = "a drawing of a" if template else "a picture of"
        base = [f"{thing} {t} in the style of {token} art" for t in THINGS]
    elif prompt_type is PromptType.GPT:
        lines = GPT_OBJECT if kind == "object" else GPT_STYLE
        prefix = ("a photo of " if kind == "object" else art) if template else ""
        base = [prefix + line.format(token=token, category=category) for line in lines]
    else:
        raise ValueError(f"prompt type {prompt_type.value!r} is not used for {kind} models")
    return [base[i % len(base)] for i in range(count)]


def prompt_words() -> list[str]:
    """Every word the prompt lists use (a small model's tokenizer must know them all)."""
    text = " ".join([*MEDIA, *THINGS, *GPT_OBJECT, *GPT_STYLE, "a picture of a drawing of"])
    text = text.replace("{token}", " ").replace("{category}", " ")
    return sorted(set(text.split()))


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
    # Images per pipeline call. Each image has its own seeded generator, so its starting noise
    # does not depend on the batch; CPU kernels may still round differently at another batch
    # size, so exact regeneration samples the same batch (a model's queries of one prompt
    # type, in order, ``batch_size`` at a time).
    batch_size: int = 1

    def to_dict(self) -> dict:
        return asdict(self)


def sample(pipe, prompt_list: list[str], seeds: list[int], cfg: SamplerConfig):
    """One image per (prompt, seed), ``cfg.batch_size`` per pipeline call."""
    import torch

    if type(pipe.scheduler).__name__ != cfg.scheduler:
        raise ValueError(
            f"pipeline scheduler is {type(pipe.scheduler).__name__}, config says {cfg.scheduler}"
        )
    if len(prompt_list) != len(seeds):
        raise ValueError(f"{len(prompt_list)} prompts but {len(seeds)} seeds")
    images = []
    for i in range(0, len(seeds), cfg.batch_size):
        out = pipe(
            prompt_list[i : i + cfg.batch_size],
            num_inference_steps=cfg.steps,
            guidance_scale=cfg.guidance,
            height=cfg.height,
            width=cfg.width,
            generator=[torch.Generator().manual_seed(s) for s in seeds[i : i + cfg.batch_size]],
        )
        images += out.images
    return images
