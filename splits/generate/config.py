"""Generation configs (``splits/generate/configs/*.json``): one file per benchmark recipe.

The same pipeline builds AbC-mini and an SD v1.4 benchmark; only the config differs (base
model, resolution, steps, learning rates, query counts). The SD v1.4 learning rates follow
Custom Diffusion's published recipe (1e-5 scaled by a total batch of 4).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from benchmark.errors import AttribBenchError
from benchmark.types import Part
from splits.generate.customize import CustomizeConfig
from splits.generate.domain import DomainConfig
from splits.generate.model import TinyModelConfig
from splits.generate.pipeline import GenerateConfig
from splits.generate.pretrain import PretrainConfig
from splits.generate.sample import SamplerConfig

CONFIGS = Path(__file__).parent / "configs"


@dataclass(frozen=True)
class Recipe:
    name: str
    version: str
    description: str
    generate: GenerateConfig
    domain: DomainConfig
    model: TinyModelConfig
    pretrain: PretrainConfig


def _build(cls, data: dict[str, Any], source: Path, field: str):
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise AttribBenchError(
            source,
            f"{field}.{unknown[0]}",
            "unknown setting",
            f"use one of {', '.join(sorted(known))}",
        )
    try:
        return cls(**data)
    except ValueError as exc:  # a setting's own check (__post_init__)
        raise AttribBenchError(source, field, str(exc), f"change {field} in the recipe") from None


def resolve_base_model(value: str) -> str:
    """``OWNER/NAME`` is a Hub id; anything else is a folder, relative to the repo root."""
    root = Path(__file__).resolve().parents[2]
    if value.count("/") == 1 and not (root / value).exists():
        return value
    return value if Path(value).is_absolute() else str(root / value)


def load_recipe(path: str | Path) -> Recipe:
    """Read a generation config; a relative ``base_model`` folder is taken from the repo root."""
    path = Path(path)
    if not path.is_file() and (CONFIGS / f"{path}.json").is_file():
        path = CONFIGS / f"{path}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise AttribBenchError(
            path, None, f"cannot read config ({exc})", "pass a file from splits/generate/configs/"
        ) from None
    data = dict(data)
    head = {k: data.pop(k) for k in ("name", "version", "description") if k in data}
    domain = _build(DomainConfig, data.pop("domain", {}), path, "domain")
    parts = {p.value for p in Part}
    for key in sorted(set(domain.max_models) - parts):
        raise AttribBenchError(
            path, f"domain.max_models.{key}", "not a part", f"use one of {', '.join(sorted(parts))}"
        )
    model = _build(TinyModelConfig, _tuples(data.pop("model", {})), path, "model")
    pretrain = _build(PretrainConfig, data.pop("pretrain", {}), path, "pretrain")
    nested = {
        "customize": _build(CustomizeConfig, data.pop("customize", {}), path, "customize"),
        "sampler": _build(SamplerConfig, data.pop("sampler", {}), path, "sampler"),
    }
    data["base_model"] = resolve_base_model(data.get("base_model", ""))
    gen = _build(GenerateConfig, {**data, **nested}, path, "(top level)")
    return Recipe(
        head.get("name", path.stem),
        head.get("version", "0.0.0"),
        head.get("description", ""),
        gen,
        domain,
        model,
        pretrain,
    )


def _tuples(data: dict[str, Any]) -> dict[str, Any]:
    """JSON lists become tuples (the model config's channel widths are tuples)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
