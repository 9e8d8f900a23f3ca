"""AbC-mini's domain: which real images pretrain the base model, which become exemplars.

AbC's ground truth needs four things from the data, and this module makes each one true by
construction (and ``tests/test_domain.py`` checks it):

- exemplars are never in the base model's training set;
- "seen" test cases use categories (objects) or artists (styles) that the base model was
  trained on; "unseen" ones use categories whose noun never occurs in a training caption and
  artists with no training image at all;
- the distractors are a subset of the training images (AbC's distractors are a LAION subset,
  i.e. training data of Stable Diffusion);
- ``train`` and ``val`` models come from seen categories and artists only.

Captions follow one template, ``a {medium} of a {noun}``: ``photo`` for Tux Paint stamps,
``drawing`` for Open Clip Art; the noun comes from the image's category.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import zip_longest

from benchmark.types import Part
from splits.generate.sources import SourceImage

TEMPLATE = "a {medium} of a {noun}"
MEDIUM = {"tuxpaint-stamps-default": "photo", "openclipart-png": "drawing"}


def _default_seen_objects() -> dict[str, str]:
    return {
        "birds": "bird",
        "fruit": "fruit",
        "flowers": "flower",
        "insects": "insect",
        "houses": "house",
        "vegetables": "vegetable",
        "bovines": "cow",
        "fish": "fish",
        "tools": "tool",
        "clothes": "garment",
        "halloween": "pumpkin",
        "easter": "egg",
        "music": "instrument",
        "sports": "ball",
    }


def _default_unseen_objects() -> dict[str, str]:
    return {
        "planets": "planet",
        "rodents": "rodent",
        "trees": "tree",
        "vehicles": "vehicle",
        "mammals": "mammal",
        "christmas": "ornament",
    }


def _default_drawing_nouns() -> dict[str, str]:
    return {
        "computer": "computer",
        "shapes": "shape",
        "signs_and_symbols": "sign",
        "recreation": "toy",
        "people": "person",
        "transportation": "transport",
        "animals": "creature",
        "food": "food",
        "special": "emblem",
        "unsorted": "thing",
        "tools": "tool",
        "office": "document",
        "geography": "map",
        "plants": "plant",
        "buildings": "building",
        "education": "book",
        "electronics": "device",
        "decorations": "decoration",
        "science": "flask",
        "containers": "box",
    }


@dataclass(frozen=True)
class DomainConfig:
    seen_objects: dict[str, str] = field(default_factory=_default_seen_objects)
    unseen_objects: dict[str, str] = field(default_factory=_default_unseen_objects)
    drawing_nouns: dict[str, str] = field(default_factory=_default_drawing_nouns)
    held_out_fraction: float = 0.35  # of each seen category's stamps, kept out as exemplars
    seen_artist_min: int = 12  # artists with at least this many drawings can be "seen"
    style_exemplars: tuple[int, int] = (4, 12)  # exemplars per style model
    unseen_artists: int = 40
    seen_artists: int = 54
    split: tuple[float, float, float] = (0.6, 0.2, 0.2)  # test / train / val of seen models
    max_per_caption: int = 300  # balance: no caption dominates the training set
    distractors: int = 2000
    # Models kept per part, e.g. {"object-seen": 30}: the first ones in the seeded order, with
    # objects and styles alternating in train/val. Capping changes no other role (images of
    # dropped models stay out of pretraining), so a cap never invalidates a pretrained model.
    max_models: dict[str, int] = field(default_factory=dict)
    seed: int = 0
    # Checks on what the images look like, not only on their names (off in 0.3.0, whose
    # pretraining pool they would change): drop every image whose id names more than one
    # source file, every image that renders as one flat colour, and every pretraining image
    # whose rendering is byte-identical to an exemplar's (the sources file one drawing under
    # several categories). Renderings are compared at content_check_size pixels.
    content_checks: bool = False
    content_check_size: int = 64


@dataclass(frozen=True)
class ModelSpec:
    model_id: str
    part: Part
    kind: str  # "object" | "style"
    noun: str  # category noun (objects) or the artist (styles)
    exemplars: tuple[SourceImage, ...]


@dataclass(frozen=True)
class Domain:
    pretrain: tuple[SourceImage, ...]
    captions: tuple[str, ...]
    distractors: tuple[SourceImage, ...]
    models: tuple[ModelSpec, ...]


def caption(image: SourceImage, cfg: DomainConfig) -> str | None:
    """The training caption of an image, or None if it has no noun in the domain."""
    medium = MEDIUM.get(image.package)
    if medium == "photo":
        noun = cfg.seen_objects.get(image.category)
    elif medium == "drawing":
        noun = cfg.drawing_nouns.get(image.category)
    else:
        noun = None
    return TEMPLATE.format(medium=medium, noun=noun) if noun else None


def _split_parts(specs: list, cfg: DomainConfig) -> list[Part]:
    n = len(specs)
    n_test = round(n * cfg.split[0])
    n_train = round(n * cfg.split[1])
    return [
        Part.TRAIN
        if i >= n_test and i < n_test + n_train
        else Part.VAL
        if i >= n_test + n_train
        else None
        for i in range(n)
    ]


BLANK = "blank"  # what a fingerprint returns for an image of one flat colour


def build_domain(
    stamps: Sequence[SourceImage],
    drawings: Sequence[SourceImage],
    cfg: DomainConfig,
    fingerprint: Callable[[SourceImage], str] | None = None,
) -> Domain:
    """Assign every source image a role; deterministic for a given catalog and seed.

    ``fingerprint`` (needed when ``cfg.content_checks``): an image's rendering as a string,
    equal for byte-identical renderings, :data:`BLANK` for a flat one.
    """
    if cfg.content_checks:
        if fingerprint is None:
            raise ValueError("content_checks needs a fingerprint of each image's rendering")
        ids = Counter(s.image_id for s in [*stamps, *drawings])
        stamps, drawings = (
            [s for s in group if ids[s.image_id] == 1 and fingerprint(s) != BLANK]
            for group in (stamps, drawings)
        )
    rng = random.Random(cfg.seed)
    pretrain: list[SourceImage] = []
    models: list[ModelSpec] = []

    # Objects: seen categories lend a held-out share of stamps; unseen ones lend all.
    by_cat: dict[str, list[SourceImage]] = defaultdict(list)
    for s in sorted(stamps, key=lambda s: s.image_id):
        by_cat[s.category].append(s)
    seen_exemplars, unseen_exemplars = [], []
    for cat in sorted(by_cat):
        items = by_cat[cat][:]
        rng.shuffle(items)
        if cat in cfg.seen_objects:
            k = max(1, round(len(items) * cfg.held_out_fraction))
            seen_exemplars += [(cfg.seen_objects[cat], s) for s in items[:k]]
            pretrain += items[k:]
        elif cat in cfg.unseen_objects:
            unseen_exemplars += [(cfg.unseen_objects[cat], s) for s in items]
    rng.shuffle(seen_exemplars)
    rng.shuffle(unseen_exemplars)
    for i, ((noun, s), part) in enumerate(
        zip(seen_exemplars, _split_parts(seen_exemplars, cfg), strict=True)
    ):
        part = part or Part.OBJECT_SEEN
        models.append(ModelSpec(f"{part.value}-obj-{i:03d}", part, "object", noun, (s,)))
    for i, (noun, s) in enumerate(unseen_exemplars):
        models.append(ModelSpec(f"object-unseen-{i:03d}", Part.OBJECT_UNSEEN, "object", noun, (s,)))

    # Styles: an artist's drawings; seen artists also train the base model.
    by_artist: dict[str, list[SourceImage]] = defaultdict(list)
    for d in sorted(drawings, key=lambda d: d.image_id):
        if caption(d, cfg):
            by_artist[d.group].append(d)
    lo, hi = cfg.style_exemplars
    big = sorted(a for a, items in by_artist.items() if len(items) >= cfg.seen_artist_min)
    small = sorted(a for a, items in by_artist.items() if lo <= len(items) < cfg.seen_artist_min)
    rng.shuffle(big)
    rng.shuffle(small)
    seen_artists = big[: cfg.seen_artists]
    unseen_artists = small[: cfg.unseen_artists]
    parts = _split_parts(seen_artists, cfg)
    for i, (artist, part) in enumerate(zip(seen_artists, parts, strict=True)):
        items = by_artist[artist][:]
        rng.shuffle(items)
        k = rng.randint(lo, hi)
        part = part or Part.STYLE_SEEN
        models.append(
            ModelSpec(f"{part.value}-style-{i:03d}", part, "style", artist, tuple(items[:k]))
        )
        pretrain += items[k:]
    for i, artist in enumerate(unseen_artists):
        items = by_artist[artist][:hi]
        models.append(
            ModelSpec(f"style-unseen-{i:03d}", Part.STYLE_UNSEEN, "style", artist, tuple(items))
        )
    excluded = set(unseen_artists) | set(seen_artists)
    for artist in sorted(by_artist):
        if artist not in excluded:
            pretrain += by_artist[artist]

    if cfg.content_checks:
        shown = {fingerprint(e) for m in models for e in m.exemplars}
        pretrain = [p for p in pretrain if fingerprint(p) not in shown]
    by_caption: dict[str, list[SourceImage]] = defaultdict(list)
    for p in sorted({p.image_id: p for p in pretrain}.values(), key=lambda p: p.image_id):
        if caption(p, cfg):
            by_caption[caption(p, cfg)].append(p)
    pretrain = []
    for cap in sorted(by_caption):
        items = by_caption[cap]
        if len(items) > cfg.max_per_caption:
            items = sorted(rng.sample(items, cfg.max_per_caption), key=lambda p: p.image_id)
        pretrain += items
    pretrain.sort(key=lambda p: p.image_id)
    captions = tuple(caption(p, cfg) for p in pretrain)
    distractors = sorted(
        rng.sample(pretrain, min(cfg.distractors, len(pretrain))), key=lambda p: p.image_id
    )
    return Domain(tuple(pretrain), captions, tuple(distractors), _cap(models, cfg.max_models))


def _cap(models: list[ModelSpec], limits: dict[str, int]) -> tuple[ModelSpec, ...]:
    unknown = sorted(set(limits) - {p.value for p in Part})
    if unknown:
        raise ValueError(f"max_models: {unknown[0]!r} is not a part")
    kept = []
    for part in dict.fromkeys(m.part for m in models):
        by_kind = [
            [m for m in models if m.part is part and m.kind == k] for k in ("object", "style")
        ]
        mixed = [m for pair in zip_longest(*by_kind) for m in pair if m is not None]
        kept += mixed[: limits.get(part.value, len(mixed))]
    return tuple(kept)
