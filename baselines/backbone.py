"""A catalog entry as a feature extractor: its network (or weightless extractor) plus the
preprocessing, the weights' hash and the spec that keys the feature cache.

The network itself comes from the entry's ``loader`` (:mod:`baselines.nets`); random
weights (``random_weights=True``) build the same architecture, for tests and throughput
benchmarks, and are always recorded in the extractor's ``spec``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from baselines.catalog import HERE, BaselineSpec, get_spec, read_calibrator
from benchmark.fileio import sha256_text

#: The code that turns weights into features: hashed into every baseline's cache key.
CODE_FILES = ("backbone.py", "nets.py", "noweight.py")


def code_sha256() -> str:
    """Hash of the code that turns weights into features (part of every cache key)."""
    return sha256_text("".join((HERE / f).read_text(encoding="utf-8") for f in CODE_FILES))


def build_backbone(spec: BaselineSpec, path: Path | None) -> nn.Module:
    """The entry's network in eval mode, with the weights at ``path`` (random if None)."""
    if not spec.needs_weights:
        raise ValueError(f"{spec.name}: an entry without weights has no network")
    model = spec.loader(spec, path)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


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
        if not self.entry.needs_weights:
            self._inner = self.entry.loader(self.entry, None)
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
