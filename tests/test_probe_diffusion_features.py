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
