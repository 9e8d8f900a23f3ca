"""``abc-tiny``: a small synthetic benchmark built on the fly, for tests and ``selfcheck``.

It has the exact structure of an AbC benchmark (four test cases with their prompt types,
``train`` and ``val``, shared distractors) with procedurally drawn 32x32 images: an object
model's queries are jittered copies of its single exemplar; a style model's exemplars and
queries share a palette and a shape vocabulary. Everything is seeded, so the frozen folder
(and its manifest sha256) is identical on every machine with the same library versions.
"""

from __future__ import annotations

import io
import random
from pathlib import Path

from PIL import Image, ImageDraw

from benchmark.paths import cache_root
from benchmark.splits import Benchmark, load_benchmark, write_benchmark
from benchmark.types import CustomModel, Part, PromptType, Query

NAME = "abc-tiny"
VERSION = "1.0.0"
SIZE = 32
MEDIA = ("a charcoal drawing", "a watercolor painting", "a photo", "an ink drawing")
OBJECTS = ("sun", "moon", "tree", "flower")
CATEGORIES = ("turtle", "teapot", "lamp", "chair", "kite", "boot")


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def _palette(rng: random.Random, n: int = 3) -> list[tuple[int, int, int]]:
    return [tuple(rng.randrange(256) for _ in range(3)) for _ in range(n)]  # type: ignore[misc]


def _draw(rng: random.Random, palette, shapes: str, count: int) -> Image.Image:
    im = Image.new("RGB", (SIZE, SIZE), palette[0])
    d = ImageDraw.Draw(im)
    for _ in range(count):
        x0, y0 = rng.randrange(SIZE - 8), rng.randrange(SIZE - 8)
        x1, y1 = x0 + rng.randrange(6, 20), y0 + rng.randrange(6, 20)
        color = palette[1 + rng.randrange(len(palette) - 1)]
        kind = shapes[rng.randrange(len(shapes))]
        if kind == "e":
            d.ellipse((x0, y0, x1, y1), fill=color)
        elif kind == "r":
            d.rectangle((x0, y0, x1, y1), fill=color)
        else:
            d.line((x0, y0, x1, y1), fill=color, width=3)
    return im


def _jitter(rng: random.Random, image: Image.Image) -> Image.Image:
    """A 'sample from the customized model': shifted, maybe flipped, slightly recoloured."""
    dx, dy = rng.randrange(-3, 4), rng.randrange(-3, 4)
    out = Image.new("RGB", (SIZE, SIZE), image.getpixel((0, 0)))
    out.paste(image, (dx, dy))
    if rng.random() < 0.5:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    gain = [rng.uniform(0.85, 1.15) for _ in range(3)]
    bands = [
        b.point(lambda v, g=g: min(255, int(v * g))) for b, g in zip(out.split(), gain, strict=True)
    ]
    return Image.merge("RGB", bands)


def build_tiny(
    root: str | Path,
    *,
    models_per_case: int = 6,
    queries_per_type: int = 4,
    n_distractors: int = 300,
    seed: int = 0,
) -> Benchmark:
    """Write the tiny benchmark into ``root`` and return it loaded."""
    rng = random.Random(seed)
    models: list[CustomModel] = []
    queries: list[tuple[Query, bytes]] = []
    exemplars: list[tuple[str, bytes]] = []
    parts = [
        (p, models_per_case)
        for p in (Part.OBJECT_SEEN, Part.OBJECT_UNSEEN, Part.STYLE_SEEN, Part.STYLE_UNSEEN)
    ]
    parts += [(Part.TRAIN, 4), (Part.VAL, 4)]
    for part, count in parts:
        for m in range(count):
            is_style = part.value.startswith("style") or (not part.is_test and m % 2 == 1)
            model_id = f"{part.value}-{m:03d}"
            palette = _palette(rng)
            shapes = rng.choice(["e", "r", "l", "er", "rl"])
            if is_style:
                n_ex = 2 + m % 3
                ex_images = [_draw(rng, palette, shapes, 5) for _ in range(n_ex)]
                category, types = "style", (PromptType.GPT, PromptType.OBJECT)
            else:
                ex_images = [_draw(rng, palette, shapes, 3)]
                category = CATEGORIES[m % len(CATEGORIES)]
                types = (PromptType.GPT, PromptType.MEDIA)
            ex_ids = tuple(f"{model_id}-ex{i}" for i in range(len(ex_images)))
            exemplars += [(i, _png(im)) for i, im in zip(ex_ids, ex_images, strict=True)]
            models.append(CustomModel(model_id, part, category, ex_ids))
            for ptype in types:
                for k in range(queries_per_type):
                    qseed = rng.randrange(2**31)
                    qrng = random.Random(qseed)
                    if is_style:
                        image = _draw(qrng, palette, shapes, 5)
                        thing = OBJECTS[k % len(OBJECTS)]
                        prompt = (
                            f"A picture of {thing} in the style of <new1> art"
                            if ptype is PromptType.OBJECT
                            else f"A quiet {thing} at dawn in the style of <new1> art"
                        )
                    else:
                        image = _jitter(qrng, ex_images[0])
                        prompt = (
                            f"{MEDIA[k % len(MEDIA)]} of <new1> {category}"
                            if ptype is PromptType.MEDIA
                            else f"A <new1> {category} resting on a table"
                        )
                    q = Query(
                        f"{model_id}-{ptype.value}-{k:02d}",
                        model_id,
                        part,
                        prompt,
                        ptype,
                        qseed,
                        "procedural",
                    )
                    queries.append((q, _png(image)))
    distractors = []
    for i in range(n_distractors):
        image = _draw(rng, _palette(rng), rng.choice(["e", "r", "l", "er", "rl"]), 4)
        distractors.append((f"distractor-{i:05d}", f"random shapes {i}", _png(image)))
    return write_benchmark(
        root,
        name=NAME,
        version=VERSION,
        description="Tiny procedurally drawn benchmark with AbC's structure, for tests and "
        "selfcheck. Not a measure of attribution quality.",
        license="CC0-1.0",
        models=models,
        queries=queries,
        exemplars=exemplars,
        distractors=distractors,
        generator={
            "builder": "benchmark.testing:build_tiny",
            "seed": seed,
            "models_per_case": models_per_case,
            "queries_per_type": queries_per_type,
            "n_distractors": n_distractors,
        },
        sources=[{"name": "procedural shapes (benchmark/testing.py)", "license": "CC0-1.0"}],
        rows_per_shard=200,
    )


def tiny_benchmark() -> Benchmark:
    """The default ``abc-tiny`` benchmark, built once into the cache and verified on load."""
    root = cache_root() / "benchmarks" / f"{NAME}-{VERSION}"
    if (root / "manifest.json").is_file():
        return load_benchmark(root)
    tmp = root.with_name(root.name + ".partial")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    build_tiny(tmp)
    tmp.rename(root)
    return load_benchmark(root)
