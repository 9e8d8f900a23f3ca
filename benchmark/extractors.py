"""The plug-in interface of extractor submissions and baselines."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from PIL import Image


@runtime_checkable
class FeatureExtractor(Protocol):
    """What the harness needs from a feature extractor.

    ``preprocess`` turns one RGB PIL image into a tensor (the harness stacks them into
    batches, in worker threads). ``embed`` maps a batch [B, ...] to features [B, D]; features
    are L2-normalized by the harness and compared by cosine similarity.

    Optional members, used when present:

    - ``embed_query(batch)``: features of synthesized queries, when they need a different
      head than training images (AbC's tuned features use one head per domain); ``embed`` is
      then used for exemplars and distractors.
    - ``to(device)``: move weights (any ``torch.nn.Module`` has it).
    - ``batch_size``: preferred batch size (default 64).
    - ``spec``: a JSON-able dict naming weights and settings; part of the feature-cache key.
    """

    def preprocess(self, image: Image.Image) -> torch.Tensor: ...

    def embed(self, batch: torch.Tensor) -> torch.Tensor: ...


def check_extractor(obj: object) -> list[str]:
    """Names of required members that ``obj`` lacks (empty when it is usable)."""
    return [m for m in ("preprocess", "embed") if not callable(getattr(obj, m, None))]
