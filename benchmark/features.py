"""Feature extraction owned by the harness: batching, no_grad, device, progress, cache.

Features are cached per block of images under
``<cache>/features/<extractor key>/<role>/<block key>.safetensors``. A block key hashes the
verified shard's sha256, the row offset and the ids, so a cached block is reused only for
the same image bytes; a second run reads every block from disk, and an interrupted run
resumes at the first missing block. A block cached whole (every row wanted) also serves any
subset of its rows, so ``train-tuned`` (all queries) and ``evaluate`` (test and val queries)
share one extraction.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from PIL import Image

from benchmark.errors import AttribBenchError
from benchmark.extractors import FeatureExtractor
from benchmark.fileio import sha256_text
from benchmark.splits import Benchmark, cache_root

DEFAULT_BATCH = 64


def pick_device(requested: str | None = None) -> torch.device:
    """The requested torch device, or CUDA when available, else the CPU."""
    if not requested:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise AttribBenchError(
            None, "--device", f"unknown device {requested!r}", "use cpu, cuda or cuda:N"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AttribBenchError(
            None,
            "--device",
            f"{requested!r} requested but CUDA is not available",
            "use --device cpu or omit --device",
        )
    return device


def cache_key(extractor: FeatureExtractor, submission_sha256: str) -> str:
    """The feature-cache folder of an extractor: its own ``feature_key`` when it has one (the
    built-in baselines: code, weights and settings), else the submission's files + ``spec``."""
    own = getattr(extractor, "feature_key", None)
    if own:
        return own
    return sha256_text(f"{submission_sha256}:{getattr(extractor, 'spec', None)!r}")[:24]


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
    source: str | None = None,
    workers: int = 4,
) -> dict[str, torch.Tensor]:
    """Features of ``table``'s images (those in ``wanted``), as id -> float32 [D] rows.

    ``role`` is ``"query"`` (uses ``embed_query`` when the extractor has one) or
    ``"gallery"``. ``source`` names the extractor's file in error messages.
    """
    embed = getattr(extractor, "embed_query", None) if role == "query" else None
    run = _Runner(
        extractor,
        embed or extractor.embed,
        device,
        batch_size or int(getattr(extractor, "batch_size", DEFAULT_BATCH)),
        source,
    )
    out: dict[str, torch.Tensor] = {}

    def finish(block, futures) -> None:
        feats = run.finish(futures, f"{table} {block.ids[0]}")
        if cache:
            cache.save(role, block.key, feats)
        emit(block, feats)

    def emit(block, feats: torch.Tensor) -> None:
        for i, image_id in enumerate(block.ids):
            out[image_id] = feats[i]
        if progress:
            progress(len(block.ids))

    # One block of look-ahead: the pool decodes and preprocesses block n+1 while block n is
    # embedded, so a fast accelerator does not wait for image preprocessing.
    pending = None
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for block in bench.iter_image_blocks(table, wanted):
            feats = _cached(cache, role, block)
            if feats is not None:
                emit(block, feats)
                continue
            started = (block, run.start(block.images, pool))
            if pending:
                finish(*pending)
            pending = started
        if pending:
            finish(*pending)
    return out


def _cached(cache: FeatureCache | None, role: str, block) -> torch.Tensor | None:
    """A block's cached features: its own entry, or rows of a cached whole block."""
    if cache is None:
        return None
    feats = cache.load(role, block.key)
    if feats is None and block.full_key != block.key:
        whole = cache.load(role, block.full_key)  # cached by a run that wanted every row
        if whole is not None and whole.shape[0] > max(block.positions):
            feats = whole[list(block.positions)]
    return feats if feats is not None and feats.shape[0] == len(block.ids) else None


class _Runner:
    """Decode + preprocess (threads), then embed in batches; user-code failures become one
    clear line (set ATTRIB_BENCH_DEBUG=1 to see the traceback instead)."""

    def __init__(self, extractor, embed, device, batch_size: int, source: str | None):
        self.extractor, self.embed, self.device = extractor, embed, device
        self.batch_size, self.source = batch_size, source

    def _user(self, member: str, fn, *args):
        try:
            return fn(*args)
        except AttribBenchError:
            raise
        except Exception as exc:
            if os.environ.get("ATTRIB_BENCH_DEBUG"):
                raise
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise AttribBenchError(
                self.source,
                member,
                f"raised {type(exc).__name__}: {first}",
                "fix the extractor (ATTRIB_BENCH_DEBUG=1 shows the traceback)",
            ) from None

    def start(self, images, pool) -> list:
        """Submit decode + preprocess of every image to ``pool``."""
        pre = self.extractor.preprocess
        return [pool.submit(lambda b: pre(decode(b)), data) for data in images]

    def finish(self, futures: list, where: str) -> torch.Tensor:
        """Wait for the preprocessed images and embed them in batches."""
        tensors = self._user("preprocess", lambda: [f.result() for f in futures])
        parts = []
        with torch.inference_mode():
            for start in range(0, len(tensors), self.batch_size):
                batch = torch.stack(tensors[start : start + self.batch_size])
                if self.device.type == "cuda":  # page-locked, so the copy overlaps compute
                    batch = batch.pin_memory().to(self.device, non_blocking=True)
                else:
                    batch = batch.to(self.device)
                feats = self._user("embed", self.embed, batch)
                if (
                    not isinstance(feats, torch.Tensor)
                    or feats.ndim != 2
                    or len(feats) != len(batch)
                ):
                    shape = tuple(feats.shape) if isinstance(feats, torch.Tensor) else type(feats)
                    raise AttribBenchError(
                        self.source,
                        "embed",
                        f"returned {shape} for a batch of {len(batch)} ({where})",
                        "return a [batch, dim] tensor",
                    )
                parts.append(feats.detach().to("cpu", torch.float32))
        feats = torch.cat(parts)
        if not torch.isfinite(feats).all():
            raise AttribBenchError(
                self.source,
                "embed",
                f"returned NaN or inf features ({where})",
                "check the extractor's weights and preprocessing",
            )
        return feats


def stack(rows: dict[str, torch.Tensor], ids: list[str] | tuple[str, ...]) -> torch.Tensor:
    return torch.stack([rows[i] for i in ids]) if ids else torch.zeros(0, 0)
