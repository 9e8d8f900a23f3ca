"""The catalog's loaders: building each entry's network in the format upstream publishes.

Each loader is ``loader(spec, path) -> nn.Module`` (random weights when ``path`` is None) and
is named by the catalog (``Loader("baselines.nets:timm")``), so nothing here is imported
until a baseline is built:

- :func:`timm`: a safetensors state dict (the Hub's ``model.safetensors``), passed through
  timm's own checkpoint filter (which, e.g., resamples DINOv2's position embeddings to 224);
- :func:`moco_v3`: the MoCo v3 training checkpoint (``state_dict`` with
  ``module.base_encoder.*`` keys), read with ``torch.load(weights_only=True)``; projection
  head and momentum encoder are dropped;
- :func:`open_clip`: OpenAI's TorchScript archive or an open_clip safetensors state dict;
- :func:`torchscript`: SSCD's TorchScript model, used as is;
- :func:`noweight`: an entry without weights; returns the extractor class its ``arch``
  names, built with its ``kwargs``.

Random weights build the same architecture; they exist for tests and throughput benchmarks.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.errors import AttribBenchError
from benchmark.registry import load_target

if TYPE_CHECKING:
    from baselines.catalog import BaselineSpec

#: Keys of OpenAI's CLIP checkpoints that are settings, not parameters.
OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")


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


# --------------------------------------------------------------------------------------------
# reading checkpoints


def _wrong_file(spec: BaselineSpec, path: Path, problem: str) -> AttribBenchError:
    return AttribBenchError(
        path,
        spec.name,
        problem,
        f"use the catalog's file ({spec.weights.source if spec.weights else 'none'})",
    )


def _first_line(exc: Exception) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def _read_state(spec: BaselineSpec, path: Path) -> dict[str, torch.Tensor]:
    fmt = spec.weights.fmt if spec.weights else ""
    try:
        if fmt == "safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        if fmt == "torchscript":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated
                return dict(torch.jit.load(str(path), map_location="cpu").state_dict())
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise _wrong_file(spec, path, f"cannot read it as {fmt} ({_first_line(exc)})") from None
    if not isinstance(checkpoint, dict):
        raise _wrong_file(spec, path, "is not a state dict")
    return checkpoint


def _load_strict(spec: BaselineSpec, path: Path, model: nn.Module, state: dict) -> None:
    result = model.load_state_dict(state, strict=False)
    problems = [f"missing {k}" for k in result.missing_keys[:2]]
    problems += [f"unexpected {k}" for k in result.unexpected_keys[:2]]
    if problems:
        raise _wrong_file(spec, path, f"does not fit {spec.arch}: {', '.join(problems)}")


def _timm_model(
    spec: BaselineSpec, path: Path | None, state_fn: Callable[[dict], dict]
) -> nn.Module:
    import timm as timm_lib
    from timm.models.vision_transformer import checkpoint_filter_fn

    model = timm_lib.create_model(spec.arch, pretrained=False, num_classes=0, **spec.kwargs)
    if path is not None:
        state = state_fn(_read_state(spec, path))
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
        _load_strict(spec, path, model, checkpoint_filter_fn(state, model))
    return model


def _moco_state(checkpoint: dict) -> dict[str, torch.Tensor]:
    state = checkpoint.get("state_dict", checkpoint)
    prefix = "module.base_encoder."
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


# --------------------------------------------------------------------------------------------
# loaders (named by the catalog's entries)


def timm(spec: BaselineSpec, path: Path | None) -> nn.Module:
    """A timm model without classifier, from a timm safetensors state dict."""
    return _timm_model(spec, path, lambda state: state)


def moco_v3(spec: BaselineSpec, path: Path | None) -> nn.Module:
    """MoCo v3's base encoder (a timm ViT), from its training checkpoint."""
    return _timm_model(spec, path, _moco_state)


def open_clip(spec: BaselineSpec, path: Path | None) -> nn.Module:
    """The image tower of an open_clip model, from a TorchScript archive or safetensors."""
    import open_clip as oc

    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # open_clip warns "initialized randomly": we load next
    try:
        model = oc.create_model(spec.arch, pretrained=None)
    finally:
        logging.disable(previous)
    if path is not None:
        state = {
            k: v.float() for k, v in _read_state(spec, path).items() if k not in OPENAI_EXTRA_KEYS
        }
        _load_strict(spec, path, model, state)
    return ClipImage(model.visual)


def torchscript(spec: BaselineSpec, path: Path | None) -> nn.Module:
    """A TorchScript archive used as is (SSCD); random weights build :class:`SSCDNet`."""
    if path is None:
        return SSCDNet(spec.dim)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise _wrong_file(
            spec, path, f"cannot load it as TorchScript ({_first_line(exc)})"
        ) from None


def noweight(spec: BaselineSpec, path: Path | None) -> Any:
    """An entry without weights: its extractor (``arch`` is ``module:Class``)."""
    if path is not None:
        raise ValueError(f"{spec.name} has no weights to load")
    return load_target(spec.arch)(**spec.kwargs)
