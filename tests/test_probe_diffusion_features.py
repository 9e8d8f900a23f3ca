"""The diffusion-features probe submission (splits/generate/probes/diffusion_features)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("diffusers")

from splits.generate.model import random_pipeline

PROBE = Path(__file__).parent.parent / "splits/generate/probes/diffusion_features/extractor.py"


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    spec = importlib.util.spec_from_file_location("diffusion_features_probe", PROBE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = tmp_path_factory.mktemp("probe") / "base-model"
    random_pipeline(["a", "photo", "of", "bird"]).save_pretrained(model)
    return module.DiffusionFeatures, model


def images(n: int) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray((rng.random((40, 48, 3)) * 255).astype(np.uint8)) for _ in range(n)]


@pytest.mark.parametrize("layer", ["mid", "up0", "up2"])
def test_features_are_pooled_centred_and_deterministic(features, layer):
    DiffusionFeatures, model = features
    ex = DiffusionFeatures(model=str(model), layer=layer, pool=2)
    batch = torch.stack([ex.preprocess(im) for im in images(3)])
    assert batch.shape == (3, 3, ex.size, ex.size) and batch.min() >= -1 and batch.max() <= 1
    f = ex.embed(batch)
    assert f.shape[0] == 3 and f.shape[1] % 4 == 0  # channels x 2 x 2
    assert torch.allclose(f.mean(dim=1), torch.zeros(3), atol=1e-5)
    assert not torch.allclose(f[0], f[1])  # different images, different features
    again = DiffusionFeatures(model=str(model), layer=layer, pool=2).embed(batch)
    assert torch.equal(f, again)  # one fixed noise draw: the same image, the same feature


def test_an_unknown_layer_is_refused(features):
    DiffusionFeatures, model = features
    with pytest.raises(ValueError, match="layer 'up9'"):
        DiffusionFeatures(model=str(model), layer="up9")


def test_pixels_weight_adds_the_pixels_feature(features):
    """With pixels_weight w, cosine similarity is the UNet's and pixels-16's, weighted 1 : w**2."""
    from baselines.noweight import Pixels

    DiffusionFeatures, model = features
    plain = DiffusionFeatures(model=str(model), pool=2)
    both = DiffusionFeatures(model=str(model), pool=2, pixels_weight=0.5)
    assert both.spec["pixels_weight"] == 0.5 and "pixels_weight" not in plain.spec
    ims = [im.resize((plain.size, plain.size)) for im in images(3)]
    batch = torch.stack([plain.preprocess(im) for im in ims])
    h = torch.nn.functional.normalize(plain.embed(batch), dim=1)
    f = both.embed(batch)
    assert torch.allclose(f[:, : h.shape[1]], h, atol=1e-6)
    pixels = Pixels(16)
    p = pixels.embed(torch.stack([pixels.preprocess(im) for im in ims]))
    p = torch.nn.functional.normalize(p, dim=1)
    agree = torch.nn.functional.cosine_similarity(f[:, h.shape[1] :], p, dim=1)
    assert (agree > 0.999).all(), agree  # not 1: Pixels rounds its box averages to 8 bits
    assert torch.allclose(f[:, h.shape[1] :].norm(dim=1), torch.full((3,), 0.5))
    cos = torch.nn.functional.normalize(f, dim=1) @ torch.nn.functional.normalize(f, dim=1).T
    want = (h @ h.T + 0.25 * (p @ p.T)) / 1.25
    assert torch.allclose(cos, want, atol=0.01)
