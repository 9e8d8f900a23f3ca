"""Tuned heads as values and files: two identity-initialised linear heads (real, synth) and
their safetensors file (``real.weight``, ``real.bias``, ``synth.weight``, ``synth.bias``, with
the training record as JSON metadata).

Shared by :mod:`baselines.tuned` (our heads) and :mod:`baselines.abc_official` (AbC's), which
is why it is a module of its own.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.errors import AttribBenchError
from benchmark.fileio import sha256_file

METADATA_KEY = "attrib_bench"


class Heads(nn.Module):
    """Two linear heads (real, synth), identity-initialised, L2-normalized outputs."""

    def __init__(self, dim: int):
        super().__init__()
        self.real = nn.Linear(dim, dim)
        self.synth = nn.Linear(dim, dim)
        for head in (self.real, self.synth):
            with torch.no_grad():
                head.weight.copy_(torch.eye(dim))
                head.bias.zero_()

    def forward(self, features: torch.Tensor, role: str) -> torch.Tensor:
        head = self.synth if role == "synth" else self.real
        return F.normalize(head(F.normalize(features.float(), dim=1)), dim=1)

    def identity_penalty(self) -> torch.Tensor:
        eye = torch.eye(self.real.weight.shape[0])
        return sum(
            (h.weight - eye).pow(2).sum() + h.bias.pow(2).sum() for h in (self.real, self.synth)
        )


@dataclass(frozen=True)
class HeadsFile:
    path: Path
    heads: Heads
    record: dict[str, Any]
    sha256: str


def save_heads(path: Path, heads: Heads, record: dict[str, Any]) -> Path:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous() for k, v in heads.state_dict().items()}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(record, sort_keys=True)})
    os.replace(tmp, path)
    return path


def read_heads(path: Path) -> HeadsFile:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            record = json.loads((f.metadata() or {})[METADATA_KEY])
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        heads = Heads(tensors["real.weight"].shape[0])
        heads.load_state_dict(tensors)
    except Exception as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise AttribBenchError(
            path, "heads", f"not a head file ({first})", "train it again with train-tuned"
        ) from None
    return HeadsFile(path, heads.eval().requires_grad_(False), record, sha256_file(path))
