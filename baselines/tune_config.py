"""Settings of tuned-head training (torch-free, so the CLI can show the defaults)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from benchmark.errors import AttribBenchError


@dataclass(frozen=True)
class TuneConfig:
    """Every setting of head training; stored in the head file."""

    epochs: int = 100
    batch_size: int = 32
    lr: float = 1e-3
    temperature: float = 0.05
    identity_weight: float = 0.1
    patience: int = 20
    seed: int = 0

    @classmethod
    def from_options(cls, **options: Any) -> TuneConfig:
        """The config with every option that is not None (a command line's unset options
        keep the defaults above, declared once here)."""
        return cls(**{k: v for k, v in options.items() if v is not None})

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1:
            raise AttribBenchError(
                None, "train-tuned", "epochs, batch size and patience must be >= 1", "fix them"
            )
        if not (self.lr > 0 and self.temperature > 0 and self.identity_weight >= 0):
            raise AttribBenchError(
                None, "train-tuned", "lr and temperature must be > 0", "fix them"
            )
