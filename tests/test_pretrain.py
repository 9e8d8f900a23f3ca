"""Pretraining: runs end to end on a few images, and resuming equals not stopping."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("diffusers")

import torch
from safetensors.torch import load_file

from splits.generate.model import SMOKE as SMALL
from splits.generate.pretrain import PretrainConfig, pretrain

CFG = PretrainConfig(vae_steps=3, unet_steps=4, batch_size=4, checkpoint_every=2)


def data():
    rng = np.random.default_rng(0)
    images = (rng.random((8, 64, 64, 3)) * 255).astype(np.uint8)
    captions = [f"a photo of a {w}" for w in ("cat", "dog", "kite", "lamp") * 2]
    return images, captions


def weights(path):
    return {
        k: v
        for part in ("unet", "text_encoder", "vae")
        for k, v in load_file(str(next((path / part).glob("*.safetensors")))).items()
    }


class Killed(Exception):
    pass


def kill_at(stage, step):
    def progress(s, k, loss):
        assert np.isfinite(loss)
        if (s, k) == (stage, step):
            raise Killed

    return progress


def test_pretrain_killed_and_resumed_matches_uninterrupted(tmp_path):
    images, captions = data()
    whole = pretrain(tmp_path / "whole", images, captions, SMALL, CFG)
    assert (whole / "model_index.json").is_file()
    # Killed mid-stage twice (after a step, before its checkpoint), then rerun to the end.
    for stage, step in (("vae", 3), ("unet", 3)):
        with pytest.raises(Killed):
            pretrain(
                tmp_path / "resumed", images, captions, SMALL, CFG, progress=kill_at(stage, step)
            )
    resumed = pretrain(tmp_path / "resumed", images, captions, SMALL, CFG)
    a, b = weights(whole), weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k] == b[k]).all(), k
    # Shipped in fp16; loads upcast to fp32 for customization and sampling.
    assert all(v.dtype == torch.float16 for v in a.values() if v.is_floating_point())
