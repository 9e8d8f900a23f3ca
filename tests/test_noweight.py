"""No-weight baselines: what each feature sees, and loading them as extractor submissions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from baselines.models import baseline_submission
from baselines.noweight import FLAT_COMPONENT, ColorHistogram, Pixels, RandomFeatures
from benchmark.errors import SubmissionError
from benchmark.submission import load_extractor, load_submission


def solid(rgb, size=32) -> Image.Image:
    return Image.new("RGB", (size, size), rgb)


def test_pixels_are_centred_and_see_layout():
    f = Pixels(4)
    left = np.zeros((32, 32, 3), np.uint8)
    left[:, :16] = 255
    a = f.embed(torch.stack([f.preprocess(Image.fromarray(left)), f.preprocess(solid((9, 9, 9)))]))
    assert a.shape == (2, 49)  # 4 x 4 x 3 centred pixels + the constant component
    pixels, constant = a[:, :48], a[:, 48]
    assert torch.allclose(pixels.mean(dim=1), torch.zeros(2), atol=1e-6)
    assert torch.all(constant == FLAT_COMPONENT)
    # A flat image has no layout: only the constant component is left, so it still has a
    # direction (the harness refuses zero vectors) and matches other flat images exactly.
    assert torch.all(pixels[1] == 0) and a[1].norm() > 0
    b = f.embed(f.preprocess(solid((120, 120, 120)))[None])
    assert torch.nn.functional.cosine_similarity(a[1:], b).item() == pytest.approx(1.0)
    # Left half white: the first two columns of each row are above the mean, the rest below.
    assert pixels[0].view(4, 4, 3)[:, :2].min() > 0 > pixels[0].view(4, 4, 3)[:, 2:].max()


def test_color_histogram_is_the_hellinger_embedding():
    f = ColorHistogram(bins=2)
    half = np.zeros((10, 10, 3), np.uint8)
    half[:, :5] = (255, 0, 0)
    h = f.preprocess(Image.fromarray(half))
    assert h.shape == (8,) and torch.isclose(h.sum(), torch.tensor(1.0))
    # bins: (r, g, b) levels -> index (r*2 + g)*2 + b; black is 0, pure red is 4.
    assert h[0] == 0.5 and h[4] == 0.5
    e = f.embed(h[None])
    assert torch.isclose((e * e).sum(), torch.tensor(1.0))  # unit norm: cosine = Bhattacharyya


def test_random_features_are_deterministic_per_image():
    f = RandomFeatures(dim=16)
    a, b = f.preprocess(solid((1, 2, 3))), f.preprocess(solid((1, 2, 3)))
    assert torch.equal(a, b) and not torch.equal(a, f.preprocess(solid((1, 2, 4))))
    assert not torch.equal(a, RandomFeatures(dim=16, seed=1).preprocess(solid((1, 2, 3))))


PIXELS_YAML = """\
schema_version: 1
name: pixels-16
kind: extractor
description: the built-in pixels feature, named by module
license: MIT
extractor:
  entry: baselines.noweight:Pixels
  kwargs: {size: 16}
"""


@pytest.mark.parametrize("name", ["pixels", "color_histogram", "random"])
def test_builtin_baselines_load_as_submissions(name):
    sub = baseline_submission(name)
    assert set(sub.file_hashes) == {"code:baselines"}  # the code is part of the identity
    extractor = load_extractor(sub)
    x = torch.stack([extractor.preprocess(solid((200, 10, 10)))] * 2)
    assert extractor.embed(x).shape[0] == 2


def test_module_entry_submissions_hash_the_module(tmp_path):
    (tmp_path / "submission.yaml").write_text(PIXELS_YAML)
    sub = load_submission(tmp_path)
    assert "module:baselines.noweight" in sub.file_hashes  # a changed module is a new key
    assert load_extractor(sub).size == 16


def test_unknown_module_entry_is_one_clear_error(tmp_path):
    (tmp_path / "submission.yaml").write_text(
        PIXELS_YAML.replace("baselines.noweight:Pixels", "baselines.nosuch:Pixels")
    )
    with pytest.raises(SubmissionError, match=r"extractor\.entry.*cannot import baselines\.nosuch"):
        load_extractor(load_submission(tmp_path))
    (tmp_path / "submission.yaml").write_text(PIXELS_YAML.replace(":Pixels", ":Pixel"))
    with pytest.raises(SubmissionError, match=r"no class .Pixel. in baselines\.noweight"):
        load_extractor(load_submission(tmp_path))
