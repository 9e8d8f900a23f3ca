"""Custom Diffusion as AbC used it: a new token plus the UNet's cross-attention key/value.

For one customized model: a new token (``<new1>``) gets a learned embedding, and every
cross-attention layer (``attn2``) of the UNet gets trainable key/value projections initialized
from the base weights, through diffusers' ``CustomDiffusionAttnProcessor``. Training images
are the exemplars (randomly flipped) captioned with ``prompt``; optional prior-preservation
images keep the rest of the model's knowledge. Everything else stays frozen.

A customized model is stored as a small delta: diffusers' own attention-processor file
(``save_attn_procs``, safetensors) plus the token's embedding, so any query can be regenerated
from the base model and the delta. With ``delta_rank`` set, the key/value updates are stored
compressed instead, as Custom Diffusion's paper proposes: the best rank-r approximation
(truncated SVD) of each update W_custom - W_base, in fp16. Queries are always sampled from the
loaded delta, so a compressed delta regenerates them exactly as well.

``unseen_noun`` (unset up to 0.3.0): an object-unseen prompt names a noun that no pretraining
caption has, so in a base model trained here that noun's text-encoder rows are still their
random initialization, and the prompt "a photo of a <new1> ornament" feeds noise into every
cross-attention layer (samples of a red ornament came out as blue blobs). Stable Diffusion's
text encoder knows every English noun. Two stand-ins: ``"train"``, the noun's rows learn on
the exemplars together with ``<new1>``; ``"mean"``, they are set to the mean row (where a new
token starts) and stay there. Either way they are stored in the delta with the token.

``by_kind`` (unset up to 0.3.0): settings that differ for one kind of model, e.g.
``{"style": {"steps": 1200}}``. A style model learns from 4-12 exemplars and an object model
from one, so at the same steps each style exemplar is seen 4-12 times less often.

The same code runs on ``CompVis/stable-diffusion-v1-4`` with a different config (resolution,
steps, learning rates).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

ATTN_WEIGHTS = "pytorch_custom_diffusion_weights.safetensors"
LOWRANK_WEIGHTS = "custom_diffusion_lowrank.safetensors"
KV = ("to_k", "to_v")
TOKEN_WEIGHTS = "token_embedding.safetensors"
UNSEEN_NOUN = (None, "train", "mean")
KINDS = ("object", "style")


@dataclass(frozen=True)
class CustomizeConfig:
    token: str = "<new1>"
    steps: int = 400
    batch_size: int = 4
    lr_kv: float = 3e-3
    lr_token: float = 2e-2
    prior_weight: float = 1.0
    hflip: bool = True
    seed: int = 0
    init_word: str | None = None  # the new token starts from this word's embedding
    delta_rank: int | None = None  # store k/v updates as rank-r factors (None: full weights)
    # Object-unseen models' noun rows (module docstring): None (as up to 0.3.0), "train"
    # (they learn with the token) or "mean" (set to the mean row, as a new token starts).
    unseen_noun: str | None = None
    # Settings for one kind of model only (module docstring), e.g. {"style": {"steps": 1200}}.
    by_kind: dict[str, dict] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.unseen_noun not in UNSEEN_NOUN:
            raise ValueError(
                f"customize.unseen_noun is {self.unseen_noun!r}; use "
                + ", ".join(repr(v) if v else "null" for v in UNSEEN_NOUN)
            )
        names = {f.name for f in fields(self)} - {"by_kind", "token"}
        for kind, settings in self.by_kind.items():
            if kind not in KINDS:
                raise ValueError(f"customize.by_kind.{kind}: use one of {', '.join(KINDS)}")
            for key in settings:
                if key not in names:
                    raise ValueError(
                        f"customize.by_kind.{kind}.{key} is not a setting; "
                        f"use one of {', '.join(sorted(names))}"
                    )

    def for_kind(self, kind: str) -> CustomizeConfig:
        """The settings a model of ``kind`` is customized with (no ``by_kind`` left)."""
        return replace(self, **self.by_kind.get(kind, {}), by_kind={})

    def to_dict(self) -> dict:
        """The recipe as recorded in a frozen benchmark. ``unseen_noun`` and ``by_kind`` came
        after 0.3.0 and are written only when set, so earlier versions' records stay as
        frozen."""
        out = asdict(self)
        for key in ("unseen_noun", "by_kind"):
            if not out[key]:
                del out[key]
        return out


def _to_tensor(image: Image.Image, size: int) -> torch.Tensor:
    image = image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
    arr = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(2, 0, 1)


def add_token(pipe, token: str, init_word: str | None = None) -> int:
    """Add ``token`` to the tokenizer and text encoder; return its id."""
    tok, text = pipe.tokenizer, pipe.text_encoder
    if token not in tok.get_vocab():
        tok.add_tokens([token])
        text.resize_token_embeddings(len(tok), mean_resizing=False)
    token_id = tok.convert_tokens_to_ids(token)
    emb = text.get_input_embeddings().weight
    with torch.no_grad():
        if init_word is not None and init_word in tok.get_vocab():
            emb[token_id] = emb[tok.convert_tokens_to_ids(init_word)]
        else:
            emb[token_id] = emb[:token_id].mean(dim=0)
    return token_id


def word_ids(pipe, words: Sequence[str]) -> list[int]:
    """The tokenizer ids of ``words`` (a word may be several tokens), in order, no repeats."""
    ids = pipe.tokenizer(list(words), add_special_tokens=False).input_ids if words else []
    return list(dict.fromkeys(i for row in ids for i in row))


def install_processors(unet) -> list[torch.nn.Parameter]:
    """Custom Diffusion processors on every attention layer; returns the trainable k/v."""
    from diffusers.models.attention_processor import CustomDiffusionAttnProcessor

    processors = {}
    for name in unet.attn_processors:
        attn = unet.get_submodule(name.removesuffix(".processor"))
        if name.endswith("attn2.processor"):
            hidden, cross = attn.to_k.weight.shape
            proc = CustomDiffusionAttnProcessor(
                train_kv=True, train_q_out=False, hidden_size=hidden, cross_attention_dim=cross
            )
            proc.load_state_dict(
                {
                    "to_k_custom_diffusion.weight": attn.to_k.weight.detach().clone(),
                    "to_v_custom_diffusion.weight": attn.to_v.weight.detach().clone(),
                }
            )
        else:
            proc = CustomDiffusionAttnProcessor(train_kv=False, train_q_out=False)
        processors[name] = proc.to(attn.to_k.weight.device)
    trainable = [p for proc in processors.values() for p in proc.parameters()]
    unet.set_attn_processor(dict(processors))  # diffusers pops entries from the dict it gets
    return trainable


def customize(
    pipe,
    exemplars: Sequence[Image.Image],
    prompt: str,
    cfg: CustomizeConfig,
    prior: Sequence[tuple[Image.Image, str]] = (),
    progress: Callable[[int, float], None] | None = None,
    words: Sequence[str] = (),
) -> dict[str, float]:
    """Customize ``pipe`` in place on ``exemplars``; return training statistics.

    ``words`` (an unseen noun, module docstring): their embedding rows learn too, at the
    token's learning rate, or with ``cfg.unseen_noun == "mean"`` are set to the mean row and
    stay; save them with ``save_delta(..., words=words)``.
    """
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    device = pipe.unet.device
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    for module in (pipe.vae, pipe.unet, pipe.text_encoder):
        module.requires_grad_(False)
    token_id = add_token(pipe, cfg.token, cfg.init_word)
    noun_ids = word_ids(pipe, words)
    if noun_ids and cfg.unseen_noun == "mean":
        table = pipe.text_encoder.get_input_embeddings().weight
        with torch.no_grad():
            table[noun_ids] = table[:token_id].mean(dim=0)
        noun_ids = []  # set, not learned
    learned = [token_id, *noun_ids]
    kv = install_processors(pipe.unet)
    emb = pipe.text_encoder.get_input_embeddings().weight
    emb.requires_grad_(True)
    opt = torch.optim.AdamW(
        [{"params": kv, "lr": cfg.lr_kv}, {"params": [emb], "lr": cfg.lr_token}],
        weight_decay=0.0,
    )
    frozen_rows = emb.detach().clone()
    # The autoencoder is frozen: encode every image (and its mirror image) once.
    inst = _latent_dists(pipe, [_to_tensor(im, size) for im in exemplars])
    prior_d = _latent_dists(pipe, [_to_tensor(im, size) for im, _ in prior]) if prior else None
    ids = _encode_ids(pipe, [prompt])
    prior_ids = _encode_ids(pipe, [c for _, c in prior]) if prior else None
    sched = pipe.scheduler
    scale = pipe.vae.config.scaling_factor
    pipe.unet.train()
    losses = []
    for step in range(cfg.steps):
        # Exemplars and prior images share one UNet pass; the loss weighs the two halves.
        batches = [_batch(inst, ids, cfg.batch_size, gen, cfg.hflip)]
        if prior_d is not None:
            batches.append(_batch(prior_d, prior_ids, cfg.batch_size, gen, cfg.hflip))
        mean = torch.cat([b[0] for b in batches])
        std = torch.cat([b[1] for b in batches])
        caps = torch.cat([b[2] for b in batches]).to(device)
        latents = (mean + std * torch.randn(mean.shape, generator=gen)).to(device) * scale
        noise = torch.randn(latents.shape, generator=gen).to(device)
        t = torch.randint(0, sched.config.num_train_timesteps, (len(latents),), generator=gen)
        noisy = sched.add_noise(latents, noise, t.to(device))
        pred = pipe.unet(noisy, t.to(device), pipe.text_encoder(caps)[0]).sample
        per_image = F.mse_loss(pred, noise, reduction="none").mean(dim=(1, 2, 3))
        n = cfg.batch_size
        loss = per_image[:n].mean()
        if prior_d is not None:
            loss = loss + cfg.prior_weight * per_image[n:].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        # Only the new token's row (and the words' rows) of the embedding table learn.
        keep = torch.ones(len(emb), dtype=torch.bool)
        keep[learned] = False
        emb.grad[keep] = 0
        opt.step()
        with torch.no_grad():
            emb[keep] = frozen_rows[keep]
        losses.append(loss.item())
        if progress:
            progress(step + 1, losses[-1])
    pipe.unet.eval()
    emb.requires_grad_(False)
    return {
        "final_loss": float(np.mean(losses[-10:])) if losses else float("nan"),
        "steps": cfg.steps,
    }


def _encode_ids(pipe, captions: list[str]) -> torch.Tensor:
    tok = pipe.tokenizer
    return tok(
        captions,
        padding="max_length",
        max_length=tok.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids


def _latent_dists(pipe, images: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of the latent distribution of each image and of its mirror image.

    Returns tensors [2, N, C, h, w]: index 0 the images as given, 1 flipped left-right.
    """
    x = torch.stack(images).to(pipe.vae.device)
    with torch.no_grad():
        dists = [pipe.vae.encode(v).latent_dist for v in (x, x.flip(-1))]
    return torch.stack([d.mean for d in dists]).cpu(), torch.stack([d.std for d in dists]).cpu()


def _batch(dists, ids, n, gen, hflip):
    """``n`` random images (randomly mirrored): latent mean, std and caption ids."""
    mean, std = dists
    pick = torch.randint(0, mean.shape[1], (n,), generator=gen)
    flip = (
        (torch.rand(n, generator=gen) < 0.5).long() if hflip else torch.zeros(n, dtype=torch.long)
    )
    cap = ids[pick] if len(ids) == mean.shape[1] else ids.expand(n, -1)
    return mean[flip, pick], std[flip, pick], cap


def save_delta(
    pipe, out_dir: str | Path, token: str, rank: int | None = None, words: Sequence[str] = ()
) -> Path:
    """Write the customized model's delta: attention processors + the token's embedding.

    ``rank``: store each key/value update as fp16 rank-r factors (module docstring) instead
    of diffusers' full attention-processor file. ``words``: also store their embedding rows
    (``word_rows`` with their ``word_ids``), as trained with ``customize(..., words=...)``.
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if rank is None:
        pipe.unet.save_attn_procs(out, weight_name=ATTN_WEIGHTS, safe_serialization=True)
    else:
        save_file(_lowrank_factors(pipe.unet, rank), str(out / LOWRANK_WEIGHTS))
    token_id = pipe.tokenizer.convert_tokens_to_ids(token)
    table = pipe.text_encoder.get_input_embeddings().weight.detach().cpu()
    tensors = {"embedding": table[token_id].clone()}
    metadata = {"token": token}
    if words:
        ids = word_ids(pipe, words)
        tensors["word_ids"] = torch.tensor(ids, dtype=torch.int64)
        tensors["word_rows"] = table[ids].clone()
        metadata["words"] = " ".join(words)
    save_file(tensors, str(out / TOKEN_WEIGHTS), metadata=metadata)
    return out


def _lowrank_factors(unet, rank: int) -> dict[str, torch.Tensor]:
    """``{layer}.{to_k|to_v}.up`` [out, r] and ``.down`` [r, in] with up @ down ~ the update."""
    factors = {}
    for name, proc in unet.attn_processors.items():
        if not name.endswith("attn2.processor"):
            continue
        attn = unet.get_submodule(name.removesuffix(".processor"))
        for kv in KV:
            base = getattr(attn, kv).weight.detach().float()
            custom = getattr(proc, f"{kv}_custom_diffusion").weight.detach().float()
            u, s, vh = torch.linalg.svd(custom - base, full_matrices=False)
            layer = name.removesuffix(".processor")
            factors[f"{layer}.{kv}.up"] = (u[:, :rank] * s[:rank]).half().contiguous()
            factors[f"{layer}.{kv}.down"] = vh[:rank].half().contiguous()
    return factors


def load_delta(pipe, delta_dir: str | Path) -> None:
    """Apply a saved delta to a base pipeline (in place).

    The attention file is the one diffusers' ``save_attn_procs`` writes; it is read here
    rather than with ``load_attn_procs``, which in diffusers 0.42 installs nothing unless
    handed a pipeline, and then refuses the file because it has no entries for the
    self-attention layers (which ``save_attn_procs`` leaves out of safetensors files).
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    delta = Path(delta_dir)
    install_processors(pipe.unet)  # initialized from the base weights
    processors = pipe.unet.attn_processors
    if (delta / LOWRANK_WEIGHTS).is_file():
        factors = load_file(delta / LOWRANK_WEIGHTS)
        layers = {key.rsplit(".", 2)[0] for key in factors}
        for layer in sorted(layers):
            proc = processors.get(f"{layer}.processor")
            if proc is None:
                raise ValueError(f"{delta / LOWRANK_WEIGHTS}: no attention layer {layer}")
            for kv in KV:
                up, down = factors[f"{layer}.{kv}.up"], factors[f"{layer}.{kv}.down"]
                with torch.no_grad():
                    getattr(proc, f"{kv}_custom_diffusion").weight += up.float() @ down.float()
    else:
        grouped: dict[str, dict[str, torch.Tensor]] = {}
        for key, value in load_file(delta / ATTN_WEIGHTS).items():
            layer, _, param = key.partition(".processor.")
            grouped.setdefault(f"{layer}.processor", {})[param] = value
        for name, weights in grouped.items():
            if name not in processors:
                raise ValueError(f"{delta / ATTN_WEIGHTS}: no attention layer {name} in this UNet")
            processors[name].load_state_dict(weights)
    with safe_open(str(delta / TOKEN_WEIGHTS), framework="pt") as f:
        token = f.metadata()["token"]
        vec = f.get_tensor("embedding")
        rows = None
        if "word_ids" in set(f.keys()):  # a safe_open handle has no __contains__
            rows = (f.get_tensor("word_ids"), f.get_tensor("word_rows"))
    token_id = add_token(pipe, token)
    table = pipe.text_encoder.get_input_embeddings().weight
    with torch.no_grad():
        table[token_id] = vec
        if rows is not None:
            ids, values = rows
            if len(ids) and int(ids.max()) >= token_id:
                raise ValueError(f"{delta / TOKEN_WEIGHTS}: word ids beyond this tokenizer")
            table[ids] = values.to(table.dtype)
