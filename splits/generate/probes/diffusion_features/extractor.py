"""Probe submission: features from a benchmark's own base diffusion model.

The base model of AbC-mini is trained on the pretraining pool only (never on exemplars or
queries), and the queries are its samples, so its UNet's activations are a learned feature
that speaks the queries' language. Each image is encoded by the model's autoencoder (latent
mean), noised to timestep ``t`` with one fixed noise draw for every image, and passed
through the UNet with the empty prompt; the activations of ``layer`` are average-pooled to
``pool`` x ``pool`` and centred. ``model`` is the base model's folder relative to this file
(default: the shipped ``splits/abc-mini/base-model``; another one in submission.yaml's kwargs).
With ``pixels_weight`` w > 0 the feature is the UNet's, unit-normalized, next to w times the
unit-normalized pixels-16 feature of the same 64x64 image (box-downsampled and centred, as
``baselines.noweight.Pixels``): cosine similarity then averages the two, weighted 1 : w**2.

What it measured on AbC-mini 0.3.0, alone and beside pixels: docs/abc-mini-0.3.md ("Next
levers", item 4). Run it from the repository root with::

    attrib-bench evaluate -s splits/generate/probes/diffusion_features -o results/unet-pixels
    attrib-bench compare results/unet-pixels/result.json PIXELS_RESULT.json
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from baselines.noweight import centred_pixels

LAYERS = ("down1", "mid", "up0", "up1", "up2")


class DiffusionFeatures:
    def __init__(
        self,
        model: str = "../../../abc-mini/base-model",
        t: int = 100,
        layer: str = "up0",
        pool: int = 4,
        seed: int = 0,
        pixels_weight: float = 0.0,
    ):
        from diffusers import StableDiffusionPipeline

        if layer not in LAYERS:
            raise ValueError(f"layer {layer!r}: use one of {', '.join(LAYERS)}")
        root = (Path(__file__).parent / model).resolve()
        pipe = StableDiffusionPipeline.from_pretrained(root, dtype=torch.float32)
        self.vae, self.unet, self.scheduler = pipe.vae.eval(), pipe.unet.eval(), pipe.scheduler
        tok = pipe.tokenizer
        ids = tok(
            [""], padding="max_length", max_length=tok.model_max_length, return_tensors="pt"
        ).input_ids
        with torch.no_grad():
            self.context = pipe.text_encoder.eval()(ids)[0]
        self.size = self.unet.config.sample_size * pipe.vae_scale_factor
        side = self.unet.config.sample_size
        shape = (1, self.unet.config.in_channels, side, side)
        self.noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
        self.t, self.pool = t, pool
        self.spec = {"name": "diffusion_features", "t": t, "layer": layer, "pool": pool}
        self.spec["seed"] = seed
        self.pixels_weight = pixels_weight
        if pixels_weight:
            if self.size % 16:
                raise ValueError(
                    f"pixels_weight needs a model size divisible by 16, not {self.size}"
                )
            self.spec["pixels_weight"] = pixels_weight
        blocks = {
            "down1": self.unet.down_blocks[1],
            "mid": self.unet.mid_block,
            "up0": self.unet.up_blocks[0],
            "up1": self.unet.up_blocks[1],
            "up2": self.unet.up_blocks[2],
        }
        self._activations: torch.Tensor | None = None
        blocks[layer].register_forward_hook(self._keep)

    def _keep(self, _module, _inputs, output) -> None:
        self._activations = output[0] if isinstance(output, tuple) else output

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        rgb = image.convert("RGB").resize((self.size, self.size), Image.Resampling.BICUBIC)
        x = np.asarray(rgb, dtype=np.float32) / 127.5 - 1.0
        return torch.from_numpy(x).permute(2, 0, 1).contiguous()

    @torch.no_grad()
    def embed(self, batch: torch.Tensor) -> torch.Tensor:
        latents = self.vae.encode(batch).latent_dist.mean * self.vae.config.scaling_factor
        t = torch.full((len(latents),), self.t, dtype=torch.long)
        noisy = self.scheduler.add_noise(latents, self.noise.expand_as(latents), t)
        self.unet(noisy, t, self.context.expand(len(latents), -1, -1))
        h = F.adaptive_avg_pool2d(self._activations, self.pool).flatten(1)
        h = h - h.mean(dim=1, keepdim=True)
        if not self.pixels_weight:
            return h
        # The preprocessed batch is the image itself at the model's size, in [-1, 1]: box
        # pixels 16x16, as Pixels(16) gives for a 64x64 image before rounding to 8 bits.
        small = F.avg_pool2d((batch + 1) / 2, self.size // 16).permute(0, 2, 3, 1).flatten(1)
        pixels = F.normalize(centred_pixels(small), dim=1)
        return torch.cat([F.normalize(h, dim=1), self.pixels_weight * pixels], dim=1)
