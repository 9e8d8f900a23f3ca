"""Seconds per training step of the tiny base model's parts, for sizing a pretraining run.

    python benchmarks/bench_pretrain_step.py [--steps 4]

Times one optimizer step (forward, backward, AdamW) of the autoencoder at several widths and
batch sizes, and of UNet + text encoder, on random inputs at AbC-mini's resolution (64x64
images, 16x16x4 latents). The first step (allocation, warm-up) is not counted.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from splits.generate.model import TinyModelConfig, build_models


def seconds_per_step(step, repeats: int) -> float:
    step()
    t0 = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - t0) / repeats


def vae_step(channels: tuple[int, ...], batch: int):
    vae, _, _ = build_models(TinyModelConfig(vae_channels=channels), 16)
    opt = torch.optim.AdamW(vae.parameters(), 1e-3)
    x = torch.randn(batch, 3, 64, 64)

    def step():
        post = vae.encode(x).latent_dist
        loss = F.mse_loss(vae.decode(post.sample()).sample, x) + 1e-6 * post.kl().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step, sum(p.numel() for p in vae.parameters())


def unet_step(batch: int, vocab: int = 3000):
    cfg = TinyModelConfig()
    _, unet, text = build_models(cfg, vocab)
    opt = torch.optim.AdamW(list(unet.parameters()) + list(text.parameters()), 3e-4)
    lat = torch.randn(batch, cfg.latent_channels, cfg.latent_size, cfg.latent_size)
    ids = torch.randint(0, vocab, (batch, cfg.max_tokens))
    t = torch.randint(0, 1000, (batch,))

    def step():
        loss = F.mse_loss(unet(lat, t, text(ids)[0]).sample, lat)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step, sum(p.numel() for m in (unet, text) for p in m.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    print(
        f"{'part':<38}{'batch':>6}{'params':>10}{'s/step':>9}   ({torch.get_num_threads()} threads)"
    )
    for channels, batch in (
        ((32, 64, 64), 32),
        ((32, 64, 64), 16),
        ((16, 32, 64), 32),
        ((16, 32, 32), 32),
    ):
        step, n = vae_step(channels, batch)
        sec = seconds_per_step(step, args.steps)
        print(f"{'autoencoder ' + str(channels):<38}{batch:>6}{n / 1e6:>9.2f}M{sec:>9.3f}")
    for batch in (32, 64):
        step, n = unet_step(batch)
        sec = seconds_per_step(step, args.steps)
        print(f"{'UNet + text encoder (default sizes)':<38}{batch:>6}{n / 1e6:>9.2f}M{sec:>9.3f}")


if __name__ == "__main__":
    main()
