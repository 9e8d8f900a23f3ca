"""Building catalog backbones and wrapping them as feature extractors.

Each family reads its weights in the format upstream publishes them:

- ``timm``: a safetensors state dict (the Hub's ``model.safetensors``), passed through timm's
  own checkpoint filter (which, e.g., resamples DINOv2's position embeddings to 224);
- ``moco_v3``: the MoCo v3 training checkpoint (``state_dict`` with ``module.base_encoder.*``
  keys), read with ``torch.load(weights_only=True)``; projection head and momentum encoder
  are dropped;
- ``open_clip``: OpenAI's TorchScript archive or an open_clip safetensors state dict;
- ``torchscript``: SSCD's TorchScript model, used as is.

Random weights (``path=None``) build the same architecture; they exist for tests and
throughput benchmarks and are always recorded in the extractor's ``spec``.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from baselines.catalog import HERE, BaselineSpec, get_spec, read_calibrator, split_name
from benchmark.errors import AttribBenchError
from benchmark.fileio import sha256_text
from benchmark.registry import load_target

#: Keys of OpenAI's CLIP checkpoints that are settings, not parameters.
OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")


def code_sha256() -> str:
    """Hash of the code that turns weights into features (part of every cache key)."""
    files = ("models.py", "noweight.py")
    return sha256_text("".join((HERE / f).read_text(encoding="utf-8") for f in files))


# --------------------------------------------------------------------------------------------
# architectures


class SSCDNet(nn.Module):
    """SSCD's descriptor network: ResNet-50 trunk, GeM pooling (p=3), linear 2048->512, L2.

    The released model is a TorchScript archive and is loaded as such; this class builds
    the same architecture for random-weight tests and for scripting test checkpoints.
    """

    def __init__(self, dim: int = 512, p: float = 3.0):
        super().__init__()
        from torchvision.models import resnet50

        trunk = resnet50()
        self.trunk = nn.Sequential(*list(trunk.children())[:-2])
        self.p = p
        self.proj = nn.Linear(2048, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.trunk(x).clamp(min=1e-6).pow(self.p).mean(dim=(2, 3)).pow(1.0 / self.p)
        return F.normalize(self.proj(f), dim=1)


class ClipImage(nn.Module):
    """The image tower of an open_clip model: images -> projected embeddings."""

    def __init__(self, visual: nn.Module):
        super().__init__()
        self.visual = visual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.visual(x)


def _wrong_file(spec: BaselineSpec, path: Path, problem: str) -> AttribBenchError:
    return AttribBenchError(
        path,
        spec.name,
        problem,
        f"use the catalog's file ({spec.weights.source if spec.weights else 'none'})",
    )


def _read_torchscript_state(path: Path) -> dict[str, torch.Tensor]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, still works
        return dict(torch.jit.load(str(path), map_location="cpu").state_dict())


def _read_state(spec: BaselineSpec, path: Path) -> dict[str, torch.Tensor]:
    fmt = spec.weights.fmt if spec.weights else ""
    try:
        if fmt == "safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        if fmt == "torchscript":
            return _read_torchscript_state(path)
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise _wrong_file(spec, path, f"cannot read it as {fmt} ({first})") from None
    if not isinstance(checkpoint, dict):
        raise _wrong_file(spec, path, "is not a state dict")
    return checkpoint


def _load_strict(spec: BaselineSpec, path: Path, model: nn.Module, state: dict) -> None:
    result = model.load_state_dict(state, strict=False)
    problems = [f"missing {k}" for k in result.missing_keys[:2]]
    problems += [f"unexpected {k}" for k in result.unexpected_keys[:2]]
    if problems:
        raise _wrong_file(spec, path, f"does not fit {spec.arch}: {', '.join(problems)}")


def _timm_model(spec: BaselineSpec, path: Path | None, state_fn) -> nn.Module:
    import timm

    model = timm.create_model(spec.arch, pretrained=False, num_classes=0, **spec.kwargs)
    if path is not None:
        from timm.models.vision_transformer import checkpoint_filter_fn

        state = state_fn(_read_state(spec, path))
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
        _load_strict(spec, path, model, checkpoint_filter_fn(state, model))
    return model


def _moco_state(checkpoint: dict) -> dict[str, torch.Tensor]:
    state = checkpoint.get("state_dict", checkpoint)
    prefix = "module.base_encoder."
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _open_clip_model(spec: BaselineSpec, path: Path | None) -> nn.Module:
    import open_clip

    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # open_clip warns "initialized randomly": we load next
    try:
        model = open_clip.create_model(spec.arch, pretrained=None)
    finally:
        logging.disable(previous)
    if path is not None:
        state = {
            k: v.float() for k, v in _read_state(spec, path).items() if k not in OPENAI_EXTRA_KEYS
        }
        _load_strict(spec, path, model, state)
    return ClipImage(model.visual)


def _torchscript_model(spec: BaselineSpec, path: Path | None) -> nn.Module:
    if path is None:
        return SSCDNet(spec.dim)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise _wrong_file(spec, path, f"cannot load it as TorchScript ({first})") from None


def build_backbone(spec: BaselineSpec, path: Path | None) -> nn.Module:
    """The entry's network in eval mode, with the weights at ``path`` (random if None)."""
    if spec.family == "timm":
        model = _timm_model(spec, path, lambda s: s)
    elif spec.family == "moco_v3":
        model = _timm_model(spec, path, _moco_state)
    elif spec.family == "open_clip":
        model = _open_clip_model(spec, path)
    elif spec.family == "torchscript":
        model = _torchscript_model(spec, path)
    else:
        raise ValueError(f"{spec.name}: family {spec.family!r} has no network")
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


# --------------------------------------------------------------------------------------------
# extractors


class Baseline:
    """A catalog entry as a :class:`benchmark.extractors.FeatureExtractor`.

    Args:
        name: catalog name (``attrib-bench list baselines``).
        weights: a weights file or folder (see :mod:`baselines.weights`).
        random_weights: build the architecture with random weights instead of loading any
            (tests and throughput benchmarks only; recorded in ``spec``).
    """

    def __init__(self, name: str, weights: str | Path | None = None, random_weights: bool = False):
        self.entry = get_spec(name)
        self.name = self.entry.name
        self.model: nn.Module | None = None
        self.weights_sha256: str | None = None
        self.random_weights = random_weights
        if self.entry.family == "noweight":
            self._inner = load_target(self.entry.arch)(**self.entry.kwargs)
            self.preprocess = self._inner.preprocess
            self.batch_size = 256
            return
        path = None
        if not random_weights:
            from baselines.weights import file_sha256, resolve_weights

            path = resolve_weights(self.entry, weights)
            self.weights_sha256 = file_sha256(path)
        self.model = build_backbone(self.entry, path)
        self.preprocess = self.entry.preprocess.transform()  # type: ignore[union-attr]
        self.batch_size = 64

    @property
    def spec(self) -> dict[str, Any]:
        e = self.entry
        recipe = f"{e.family}:{e.arch}:{e.preprocess}:{sorted(e.kwargs.items())}"
        out: dict[str, Any] = {
            "baseline": self.name,
            "code": code_sha256()[:16],
            "recipe": sha256_text(recipe)[:16],  # the catalog fields that shape features
        }
        if self.model is None:
            out.update(self._inner.spec)
        else:
            out.update(
                weights_sha256=self.weights_sha256,
                random_weights=self.random_weights,
                half=self._half,
            )
        return out

    @property
    def feature_key(self) -> str:
        """Cache folder of this backbone's features: shared by evaluate and train-tuned."""
        return "baseline-" + sha256_text(repr(sorted(self.spec.items())))[:24]

    def stored_calibrator(self, benchmark: str, version: str) -> dict[str, Any] | None:
        """The calibrator fitted on ``benchmark@version``'s val and stored beside the catalog."""
        return read_calibrator(self.name, benchmark, version, self.feature_key)

    @property
    def _half(self) -> bool:
        """fp16 on CUDA (the usual way to run these backbones on a GPU), fp32 elsewhere."""
        return self.model is not None and next(self.model.parameters()).is_cuda

    def to(self, device: torch.device | str) -> Baseline:
        if self.model is not None:
            self.model.to(device)
        return self

    def embed(self, batch: torch.Tensor) -> torch.Tensor:
        if self.model is None:
            return self._inner.embed(batch)
        with torch.autocast("cuda", dtype=torch.float16, enabled=self._half):
            return self.model(batch).float()


def load_baseline(name: str, weights: str | Path | None = None, random_weights: bool = False):
    """A catalog baseline, or ``BACKBONE.tuned_BENCHMARK`` with its trained heads."""
    base, bench = split_name(name)
    backbone = Baseline(base, weights, random_weights)
    if bench is None:
        return backbone
    from baselines.tuned import Tuned, find_heads

    return Tuned(backbone, find_heads(name, weights))


def baseline_submission(name: str, weights: str | Path | None = None):
    """A catalog baseline as an extractor :class:`~benchmark.submission.Submission`.

    It is identified by what makes its features: the catalog code, the weights' sha256 and
    the heads' sha256 (tuned), which the result records under ``submission.files``.
    """
    from benchmark.submission import Submission

    spec = get_spec(name)
    bench = split_name(name)[1]
    hashes = {"code:baselines": code_sha256()}
    if spec.weights is not None:
        from baselines.weights import file_sha256, resolve_weights

        hashes[f"weights:{spec.weights.filename}"] = file_sha256(resolve_weights(spec, weights))
    description = spec.description
    if bench is not None:
        from baselines.tuned import find_heads

        heads = find_heads(name, weights)
        hashes[f"heads:{heads.path.name}"] = heads.sha256
        description += f"; tuned heads trained on {bench} (AbC's two linear heads)"
    config = {
        "schema_version": 1,
        "name": name,
        "kind": "extractor",
        "description": description,
        "license": spec.license,
        "authors": ["attrib-bench maintainers (catalog entry)"],
        "extractor": {
            "entry": "baselines.models:load_baseline",
            "kwargs": {"name": name, "weights": None if weights is None else str(weights)},
        },
    }
    return Submission(HERE, config, hashes)
