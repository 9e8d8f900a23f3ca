"""Baselines without weights: they run anywhere, so every benchmark has real numbers offline.

- :class:`Pixels`: the image downscaled to ``size`` x ``size`` (area averaging), each image
  centred on its own mean so cosine similarity compares layout and colour contrast rather
  than brightness. A "did the picture come out looking like this one" feature.
- :class:`ColorHistogram`: a joint RGB histogram with ``bins`` levels per channel, square-
  rooted (the Hellinger embedding, so cosine similarity is the Bhattacharyya coefficient).
  Blind to layout; sees palette only.
- :class:`RandomFeatures`: chance level, for reference.

Both follow :class:`benchmark.extractors.FeatureExtractor`; the harness batches, normalizes,
caches and scores their features.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

#: The constant component of :func:`centred_pixels`: far below a real image's centred norm
#: (16x16 pixels with a grey-level spread of 0.01 already give 0.28).
FLAT_COMPONENT = 1e-3


def centred_pixels(batch: torch.Tensor) -> torch.Tensor:
    """Mean-centred pixels plus one small constant component.

    Centring makes cosine similarity compare layouts, not brightness; but a flat image centres
    to the zero vector, which has no direction to rank by (the harness refuses it). The
    constant component gives every image a direction: flat images match each other, and for
    any other image it moves cosine similarities by about 1e-7.
    """
    centred = batch - batch.mean(dim=1, keepdim=True)
    flat = torch.full((len(batch), 1), FLAT_COMPONENT, dtype=batch.dtype, device=batch.device)
    return torch.cat([centred, flat], dim=1)


class Pixels:
    def __init__(self, size: int = 16):
        self.size = size
        self.spec = {"name": "pixels", "size": size}

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        small = image.convert("RGB").resize((self.size, self.size), Image.Resampling.BOX)
        return torch.from_numpy(np.asarray(small, dtype=np.float32).reshape(-1) / 255.0)

    def embed(self, batch: torch.Tensor) -> torch.Tensor:
        return centred_pixels(batch)


class ColorHistogram:
    def __init__(self, bins: int = 8):
        self.bins = bins
        self.spec = {"name": "color_histogram", "bins": bins}

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        rgb = np.asarray(image.convert("RGB"), dtype=np.int64).reshape(-1, 3)
        levels = rgb * self.bins // 256
        cell = (levels[:, 0] * self.bins + levels[:, 1]) * self.bins + levels[:, 2]
        hist = np.bincount(cell, minlength=self.bins**3).astype(np.float32)
        return torch.from_numpy(hist / max(len(cell), 1))

    def embed(self, batch: torch.Tensor) -> torch.Tensor:
        return batch.sqrt()


class RandomFeatures:
    """Chance level: a fixed random Gaussian vector per image, seeded by the image's pixels.

    Deterministic (the same image always gets the same vector) and unrelated to content, so
    any benchmark scores it at chance.
    """

    def __init__(self, dim: int = 64, seed: int = 0):
        self.dim, self.seed = dim, seed
        self.spec = {"name": "random", "dim": dim, "seed": seed}

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        import hashlib

        digest = hashlib.sha256(image.convert("RGB").tobytes()).digest()
        rng = np.random.default_rng([self.seed, int.from_bytes(digest[:8], "little")])
        return torch.from_numpy(rng.standard_normal(self.dim).astype(np.float32))

    def embed(self, batch: torch.Tensor) -> torch.Tensor:
        return batch
