"""Feature extraction owned by the harness: batching, no_grad, device, progress, cache.

Features are cached per block of images under
``<cache>/features/<extractor key>/<role>/<block key>.safetensors``. A block key hashes the
verified shard's sha256, the row offset and the ids, so a cached block is reused only for
the same image bytes; a second run reads every block from disk, and an interrupted run
resumes at the first missing block.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmark.errors import AttribBenchError
from benchmark.extractors import FeatureExtractor
from benchmark.splits import Benchmark, cache_root

DEFAULT_BATCH = 64


def pick_device(requested: str | None = None) -> torch.device:
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def decode(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as im:
        return im.convert("RGB")


class FeatureCache:
    """Block-level feature store for one extractor key."""

    def __init__(self, key: str, root: Path | None = None):
        self.root = (root or cache_root() / "features") / key

    def path(self, role: str, block_key: str) -> Path:
        return self.root / role / f"{block_key}.safetensors"

    def load(self, role: str, block_key: str) -> torch.Tensor | None:
        from safetensors.torch import load_file

        p = self.path(role, block_key)
        if not p.is_file():
            return None
        try:
            return load_file(p)["features"]
        except Exception:  # a torn write from a killed run: recompute the block
            return None

    def save(self, role: str, block_key: str, feats: torch.Tensor) -> None:
        from safetensors.torch import save_file

        p = self.path(role, block_key)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
        save_file({"features": feats.contiguous()}, str(tmp))
        os.replace(tmp, p)


def extract_table(
    extractor: FeatureExtractor,
    bench: Benchmark,
    table: str,
    wanted: set[str] | None,
    *,
    role: str,
    cache: FeatureCache | None,
    device: torch.device,
    batch_size: int | None = None,
    progress: Callable[[int], None] | None = None,
    workers: int = 4,
) -> dict[str, torch.Tensor]:
    """Features of ``table``'s images (those in ``wanted``), as id -> float32 [D] rows.

    ``role`` is ``"query"`` (uses ``embed_query`` when the extractor has one) or
    ``"gallery"``.
    """
    embed = getattr(extractor, "embed_query", None) if role == "query" else None
    embed = embed or extractor.embed
    batch_size = batch_size or int(getattr(extractor, "batch_size", DEFAULT_BATCH))
    out: dict[str, torch.Tensor] = {}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for block in bench.iter_image_blocks(table, wanted):
            feats = cache.load(role, block.key) if cache else None
            if feats is None or feats.shape[0] != len(block.ids):
                feats = _embed_block(
                    extractor,
                    embed,
                    block.images,
                    pool,
                    device,
                    batch_size,
                    f"{table} {block.ids[0]}",
                )
                if cache:
                    cache.save(role, block.key, feats)
            for i, image_id in enumerate(block.ids):
                out[image_id] = feats[i]
            if progress:
                progress(len(block.ids))
    return out


def _embed_block(extractor, embed, images, pool, device, batch_size, where) -> torch.Tensor:
    tensors = list(pool.map(lambda b: extractor.preprocess(decode(b)), images))
    parts = []
    with torch.inference_mode():
        for start in range(0, len(tensors), batch_size):
            batch = torch.stack(tensors[start : start + batch_size]).to(device)
            feats = embed(batch)
            if not isinstance(feats, torch.Tensor) or feats.ndim != 2 or len(feats) != len(batch):
                shape = tuple(feats.shape) if isinstance(feats, torch.Tensor) else type(feats)
                raise AttribBenchError(
                    None,
                    "embed",
                    f"returned {shape} for a batch of {len(batch)} ({where})",
                    "return a [batch, dim] tensor",
                )
            parts.append(feats.detach().to("cpu", torch.float32))
    feats = torch.cat(parts)
    if not torch.isfinite(feats).all():
        raise AttribBenchError(
            None,
            "embed",
            f"returned NaN or inf features ({where})",
            "check the extractor's weights and preprocessing",
        )
    return feats


def stack(rows: dict[str, torch.Tensor], ids: list[str] | tuple[str, ...]) -> torch.Tensor:
    return torch.stack([rows[i] for i in ids]) if ids else torch.zeros(0, 0)


def as_numpy(x: torch.Tensor) -> np.ndarray:
    return x.numpy()
