"""Pretrain the tiny base model from scratch: autoencoder first, then UNet + text encoder.

Seeded and resumable: the data order of every epoch is a permutation drawn from (seed, epoch),
each step's noise comes from a generator seeded by (seed, stage, step), and a checkpoint holds
the weights, the optimizer state and the step, so a run that is stopped and resumed ends with
exactly the weights of an uninterrupted run. The learning rate is a function of the step alone
(constant, or a linear warm-up then a cosine decay towards zero), so resuming needs nothing
more. A run may train on a GPU (``device``): its randomness is still drawn on the CPU and
moved, so it sees the same batches, noise and timesteps as a CPU run, but the device's kernels
round differently, so its weights are not a CPU run's; ``pretrain.json`` records the device.

``untrained_words`` (``"random"`` up to 0.3.0): the tokenizer also knows every word of the
prompt lists, and the rows of those that no caption has never receive a gradient, so they stay
random vectors about half as long as a trained row, and a prompt like "a drawing of a quiet
harbor at dawn in the style of <new1> art" feeds seven of them into every cross-attention
layer. Stable Diffusion's text encoder knows every English word. With ``"mean"`` those rows
are set, once training ends, to the mean of the caption words' rows (where a new token such
as ``<new1>`` starts): a word the model never learned then carries no meaning instead of noise.

Stage 1 trains the f=4 ``AutoencoderKL`` (reconstruction + a small KL term) and then sets its
``scaling_factor`` so that latents have unit variance, as Stable Diffusion's does. Stage 2
trains the UNet and the text encoder jointly on noise prediction, with captions dropped 10% of
the time so classifier-free guidance works at sampling time.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from splits.generate.model import TinyModelConfig, assemble_pipeline, build_models, build_tokenizer


@dataclass(frozen=True)
class PretrainConfig:
    vae_steps: int = 3000
    unet_steps: int = 20000
    batch_size: int = 32
    lr_vae: float = 1e-3
    lr_unet: float = 3e-4
    kl_weight: float = 1e-6
    caption_dropout: float = 0.1
    checkpoint_every: int = 500
    seed: int = 0
    # "constant", or "cosine": linear warm-up over warmup_steps, then a cosine decay towards 0
    # at the stage's end (each stage, autoencoder and UNet, has its own schedule).
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    # Rows of words no caption has (module docstring): "random" (left at their initialization)
    # or "mean" (set to the mean of the caption words' rows when training ends).
    untrained_words: str = "random"

    def __post_init__(self) -> None:
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(
                f"lr_schedule {self.lr_schedule!r} is not one of {', '.join(LR_SCHEDULES)}"
            )
        if self.untrained_words not in UNTRAINED_WORDS:
            raise ValueError(
                f"untrained_words {self.untrained_words!r} is not one of "
                + ", ".join(UNTRAINED_WORDS)
            )
        if self.warmup_steps < 0:
            raise ValueError("warmup_steps must be >= 0")


LR_SCHEDULES = ("constant", "cosine")
UNTRAINED_WORDS = ("random", "mean")


def lr_factor(schedule: str, warmup: int, steps: int, step: int) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based) of a ``steps``-step stage."""
    if schedule == "constant":
        return 1.0
    if step < warmup:
        return (step + 1) / warmup
    span = max(1, steps - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / span)))


def _batches(n: int, batch: int, seed: int, start_step: int):
    """Yield (step, indices) from ``start_step`` on; epoch e uses permutation(seed, e)."""
    per_epoch = max(1, n // batch)
    step = start_step
    while True:
        epoch, k = divmod(step, per_epoch)
        perm = np.random.default_rng([seed, epoch]).permutation(n)
        yield step, perm[k * batch : (k + 1) * batch]
        step += 1


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


class _Checkpoints:
    def __init__(self, root: Path, stage: str):
        self.dir = root / "checkpoints" / stage

    def latest(self) -> Path | None:
        done = sorted(self.dir.glob("step-*/state.json"), key=lambda p: int(p.parent.name[5:]))
        return done[-1].parent if done else None

    def save(self, step: int, modules: dict, opt: torch.optim.Optimizer) -> None:
        from safetensors.torch import save_file

        path = self.dir / f"step-{step:07d}"
        tmp = path.with_name(path.name + ".partial")
        tmp.mkdir(parents=True, exist_ok=True)
        for name, module in modules.items():
            save_file(module.state_dict(), str(tmp / f"{name}.safetensors"))
        torch.save({"optimizer": opt.state_dict()}, tmp / "optimizer.pt")
        (tmp / "state.json").write_text(json.dumps({"step": step}))
        tmp.rename(path)
        for old in sorted(self.dir.glob("step-*"))[:-2]:  # keep the last two
            if old != path and old.suffix != ".partial":
                for f in old.iterdir():
                    f.unlink()
                old.rmdir()

    def load(
        self, path: Path, modules: dict, opt: torch.optim.Optimizer, device: torch.device
    ) -> int:
        from safetensors.torch import load_file

        for name, module in modules.items():
            module.load_state_dict(load_file(str(path / f"{name}.safetensors")))
        state = torch.load(path / "optimizer.pt", weights_only=True, map_location=device)
        opt.load_state_dict(state["optimizer"])
        return json.loads((path / "state.json").read_text())["step"]


def _run_stage(
    out: Path,
    stage: str,
    modules: dict[str, torch.nn.Module],
    lr: float,
    steps: int,
    n_images: int,
    loss_fn: Callable[[np.ndarray, torch.Generator], torch.Tensor],
    cfg: PretrainConfig,
    progress: Callable[[str, int, float], None] | None,
    device: torch.device,
) -> None:
    """Train ``modules`` for ``steps`` steps from the stage's latest checkpoint.

    Each step draws its randomness from a generator seeded by (seed, stage, step), and its
    batch from the epoch permutation, so resuming needs only weights, optimizer and step.
    """
    ck = _Checkpoints(out, stage)
    params = [p for m in modules.values() for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    latest = ck.latest()
    start = ck.load(latest, modules, opt, device) if latest else 0
    for m in modules.values():
        m.train()
    stage_seed = cfg.seed * 1_000_003 + (0 if stage == "vae" else 500_009)
    gen = torch.Generator()
    for step, idx in _batches(n_images, cfg.batch_size, stage_seed, start):
        if step >= steps:
            break
        gen.manual_seed(stage_seed + 7 * step)
        for group in opt.param_groups:
            group["lr"] = lr * lr_factor(cfg.lr_schedule, cfg.warmup_steps, steps, step)
        loss = loss_fn(idx, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if progress:
            progress(stage, step + 1, loss.item())
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == steps:
            ck.save(step + 1, modules, opt)


def pretrain(
    out_dir: str | Path,
    images: np.ndarray,
    captions: Sequence[str],
    model_cfg: TinyModelConfig,
    cfg: PretrainConfig,
    progress: Callable[[str, int, float], None] | None = None,
    extra_words: Sequence[str] = (),
    device: str | torch.device = "cpu",
) -> Path:
    """Train (or resume) and save the base pipeline to ``out_dir/pipeline``.

    Args:
        images: uint8 [N, H, W, 3] at the model's resolution.
        captions: one caption per image.
        extra_words: words the tokenizer must know beyond the captions' (the prompt lists').
        device: where the models train ("cpu", "cuda", ...); randomness stays on the CPU.
    """
    device = torch.device(device)
    out = Path(out_dir)
    torch.manual_seed(cfg.seed)
    words = [w for c in captions for w in c.replace(".", " ").replace(",", " ").split()]
    words += list(extra_words)
    tokenizer = build_tokenizer(words, model_cfg.max_tokens)
    vae, unet, text = build_models(model_cfg, len(tokenizer))
    vae, unet, text = vae.to(device), unet.to(device), text.to(device)
    x_all = _to_tensor(images).to(device)

    # Stage 1: autoencoder.
    def vae_loss(idx: np.ndarray, gen: torch.Generator) -> torch.Tensor:
        x = x_all[idx]
        post = vae.encode(x).latent_dist
        eps = torch.randn(post.mean.shape, generator=gen).to(device)
        recon = vae.decode(post.mean + post.std * eps).sample
        return F.mse_loss(recon, x) + cfg.kl_weight * post.kl().mean()

    _run_stage(
        out,
        "vae",
        {"vae": vae},
        cfg.lr_vae,
        cfg.vae_steps,
        len(x_all),
        vae_loss,
        cfg,
        progress,
        device,
    )
    vae.eval().requires_grad_(False)
    # The autoencoder is frozen from here on: encode every image once (mean and std of its
    # latent distribution) instead of once per UNet step.
    with torch.no_grad():
        dists = [vae.encode(x_all[i : i + 256]).latent_dist for i in range(0, len(x_all), 256)]
    lat_mean = torch.cat([d.mean for d in dists])
    lat_std = torch.cat([d.std for d in dists])
    vae.register_to_config(scaling_factor=1.0 / max(float(lat_mean[:512].std()), 1e-6))

    # Stage 2: UNet + text encoder on noise prediction.
    pipe = assemble_pipeline(vae, unet, text, tokenizer)
    sched = pipe.scheduler
    ids_all = tokenizer(
        list(captions),
        padding="max_length",
        max_length=model_cfg.max_tokens,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    empty = tokenizer(
        [""], padding="max_length", max_length=model_cfg.max_tokens, return_tensors="pt"
    ).input_ids

    def unet_loss(idx: np.ndarray, gen: torch.Generator) -> torch.Tensor:
        eps = torch.randn(lat_mean[idx].shape, generator=gen).to(device)
        latents = (lat_mean[idx] + lat_std[idx] * eps) * vae.config.scaling_factor
        ids = ids_all[idx].clone()
        ids[torch.rand(len(ids), generator=gen) < cfg.caption_dropout] = empty
        noise = torch.randn(latents.shape, generator=gen).to(device)
        t = torch.randint(0, sched.config.num_train_timesteps, (len(latents),), generator=gen)
        t = t.to(device)
        pred = unet(sched.add_noise(latents, noise, t), t, text(ids.to(device))[0]).sample
        return F.mse_loss(pred, noise)

    _run_stage(
        out,
        "unet",
        {"unet": unet, "text_encoder": text},
        cfg.lr_unet,
        cfg.unet_steps,
        len(x_all),
        unet_loss,
        cfg,
        progress,
        device,
    )
    unet.eval()
    text.eval()
    if cfg.untrained_words == "mean":
        caption_words = {w for c in captions for w in c.replace(".", " ").replace(",", " ").split()}
        set_untrained_rows(text, tokenizer, caption_words, extra_words)
    # Shipped in fp16 (half the bytes). Everything downstream loads it upcast to fp32, so
    # customization and sampling run on exactly the shipped values.
    pipe.to("cpu", torch.float16).save_pretrained(out / "pipeline")
    (out / "pipeline" / "pretrain.json").write_text(
        json.dumps(
            {
                "model": asdict(model_cfg),
                "pretrain": asdict(cfg),
                "images": len(x_all),
                "device": _device_name(device),
            },
            indent=1,
        )
    )
    return out / "pipeline"


def set_untrained_rows(text_encoder, tokenizer, caption_words, extra_words) -> list[int]:
    """Set the embedding rows of ``extra_words`` that are not ``caption_words`` to the mean row
    of the caption words (module docstring); returns the ids set."""
    trained = sorted({tokenizer.convert_tokens_to_ids(w) for w in caption_words})
    untrained = sorted(
        {tokenizer.convert_tokens_to_ids(w) for w in extra_words if w not in caption_words}
    )
    table = text_encoder.get_input_embeddings().weight
    with torch.no_grad():
        table[untrained] = table[trained].mean(dim=0)
    return untrained


def _device_name(device: torch.device) -> str:
    """The device as recorded in pretrain.json: cpu, or e.g. cuda (NVIDIA H200)."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type


LOG_NAME = "train_log.tsv"


POOL_FORMAT = "attrib-bench-pretrain-pool/1"


def save_pool(
    path: str | Path, images: np.ndarray, captions: Sequence[str], words: Sequence[str], domain
) -> None:
    """Write a recipe's pretraining images, captions and extra words to one ``.npz`` (no
    pickles: strings are fixed-width unicode arrays), stamped with the recipe's domain
    settings, so a machine without the source packages (a GPU box) can pretrain."""
    stamp = json.dumps({"format": POOL_FORMAT, "domain": asdict(domain)}, sort_keys=True)
    with open(path, "wb") as f:
        np.savez_compressed(
            f,
            images=images,
            captions=np.array(list(captions), dtype=str),
            words=np.array(list(words), dtype=str),
            stamp=np.array(stamp),
        )


def load_pool(path: str | Path, domain, image_size: int) -> tuple[np.ndarray, list, list]:
    """(images, captions, words) of a :func:`save_pool` file made for this recipe.

    Raises:
        AttribBenchError: unreadable, another format, another recipe's domain or image size.
    """
    from benchmark.errors import AttribBenchError

    def bad(field: str | None, problem: str) -> AttribBenchError:
        return AttribBenchError(
            path, field, problem, "export it with this recipe: splits pretrain CONFIG "
            "--out RUN --export-pool FILE"
        )  # fmt: skip

    try:
        with open(path, "rb") as f:
            is_zip = f.read(4) == b"PK\x03\x04"
        if not is_zip:
            raise bad(None, "not a pretraining pool file (not an .npz archive)")
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in ("images", "captions", "words", "stamp")}
    except OSError as exc:
        raise bad(None, f"cannot read it ({exc.strerror or exc})") from None
    except KeyError as exc:
        raise bad(None, f"not a pretraining pool file (missing {exc})") from None
    except ValueError:  # numpy refuses object arrays without unpickling: never done here
        raise bad(None, "not a pretraining pool file (holds pickled objects)") from None
    stamp = json.loads(str(arrays["stamp"]))
    if stamp.get("format") != POOL_FORMAT:
        raise bad("stamp.format", f"{stamp.get('format')!r} is not {POOL_FORMAT}")
    if stamp.get("domain") != json.loads(json.dumps(asdict(domain))):
        raise bad("stamp.domain", "exported from a recipe with other domain settings")
    images = arrays["images"]
    if images.dtype != np.uint8 or images.shape[1:] != (image_size, image_size, 3):
        raise bad("images", f"{images.dtype} {tuple(images.shape)}, not uint8 [N, {image_size}, "
                  f"{image_size}, 3]")  # fmt: skip
    if len(arrays["captions"]) != len(images):
        raise bad("captions", f"{len(arrays['captions'])} captions for {len(images)} images")
    return images, arrays["captions"].tolist(), arrays["words"].tolist()


def pretrain_recipe(
    config: str | Path,
    out: str | Path,
    cache: Path | None = None,
    device: str = "cpu",
    pool: str | Path | None = None,
    export_pool: str | Path | None = None,
) -> tuple[Path, int]:
    """``splits pretrain``: load the recipe ``config`` and its domain's pretraining images,
    train (or resume) its base model into ``out`` with a progress bar, appending every 50th
    step's loss to ``out/train_log.tsv``. Returns the pipeline folder and the image count.

    ``pool``: read the images from a file written by ``export_pool`` (no source packages
    needed) instead of the domain; ``export_pool``: write that file and stop (returns its
    path).

    Raises:
        AttribBenchError: the recipe's base model is a Hub model (nothing to pretrain), its
            domain cannot be loaded, or the pool file does not belong to it.
    """
    from benchmark.errors import AttribBenchError
    from benchmark.progress import progress_bar
    from splits.generate.config import load_recipe
    from splits.generate.pool import load_domain, load_images
    from splits.generate.sample import prompt_words

    recipe = load_recipe(config)
    if not Path(recipe.generate.base_model).is_absolute():
        raise AttribBenchError(
            config,
            "base_model",
            f"{recipe.generate.base_model} is a Hub model; there is nothing to pretrain",
            "pretrain recipes with a local base_model folder (abc-mini)",
        )
    size = recipe.model.image_size
    if pool is not None:
        images, captions, words = load_pool(pool, recipe.domain, size)
    else:
        domain = load_domain(cache, recipe.domain)
        with progress_bar(len(domain.pretrain), "loading images") as bar:
            images = load_images(domain.pretrain, size, bar)
        captions, words = list(domain.captions), prompt_words()
    if export_pool is not None:
        save_pool(export_pool, images, captions, words, recipe.domain)
        return Path(export_pool), len(images)
    cfg = recipe.pretrain
    log = Path(out) / LOG_NAME
    log.parent.mkdir(parents=True, exist_ok=True)
    with progress_bar(cfg.vae_steps + cfg.unet_steps, "pretraining") as bar:
        shown = [0]

        def progress(stage: str, step: int, loss: float) -> None:
            done = step + (cfg.vae_steps if stage == "unet" else 0)  # absolute, across resumes
            bar(done - shown[0])
            shown[0] = done
            if step % 50 == 0:
                with log.open("a") as f:
                    f.write(f"{stage}\t{step}\t{loss:.5f}\n")

        path = pretrain(out, images, captions, recipe.model, cfg, progress, words, device)
    return path, len(images)


def install_base_model(config: str | Path, out: str | Path) -> Path:
    """Copy a finished pretraining run's pipeline and training log to the recipe's
    ``base_model`` folder (where generation reads it); returns that folder."""
    import shutil

    from splits.generate.config import load_recipe

    target = Path(load_recipe(config).generate.base_model)
    shutil.copytree(Path(out) / "pipeline", target, dirs_exist_ok=True)
    shutil.copy2(Path(out) / LOG_NAME, target / LOG_NAME)
    return target
