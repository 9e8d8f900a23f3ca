"""Feature extraction owned by the harness: batching, no_grad, device, progress, cache.

Features are cached per block of images under
``<cache>/features-v2/<extractor key>/<role>/<block key>.safetensors``. A block key hashes the
verified shard's sha256, the row offset and the ids, so a cached block is reused only for
the same image bytes; a second run reads every block from disk, and an interrupted run
resumes at the first missing block. A block cached whole (every row wanted) also serves any
subset of its rows, so ``train-tuned`` (all queries) and ``evaluate`` (test and val queries)
share one extraction.

Every cached block carries the sha256 of its tensor bytes, its row count and dim in the
safetensors metadata; a block whose checksum, shape or values do not check out is never used
(it is recomputed, with one warning line on stderr). Writes go through a uniquely named temp
file and an atomic rename, so concurrent runs filling one cache never see half a block.

Submitted extractors run in a child process (:mod:`benchmark.sandbox`); only this process
(the parent) writes the cache, under a key it computes from the submission's file hashes.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from PIL import Image

from benchmark.errors import AttribBenchError
from benchmark.extractors import FeatureExtractor
from benchmark.fileio import sha256_text
from benchmark.paths import cache_root
from benchmark.splits import Benchmark

DEFAULT_BATCH = 64
CACHE_DIR = "features-v2"  # v1 blocks carried no checksum: they are never read
_WARNED: set[str] = set()


def pick_device(requested: str | None = None) -> torch.device:
    """The requested torch device, or CUDA when available, else the CPU.

    Only devices that hold real data are accepted (``meta`` has no values to score)."""
    if not requested:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except (RuntimeError, TypeError):
        raise AttribBenchError(
            None, "--device", f"unknown device {requested!r}", "use cpu, cuda or cuda:N"
        ) from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise AttribBenchError(
            None,
            "--device",
            f"{requested!r} cannot compute features (no data lives on a {device.type} device)",
            "use cpu, cuda or cuda:N",
        )
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AttribBenchError(
            None,
            "--device",
            f"{requested!r} requested but CUDA is not available",
            "use --device cpu or omit --device",
        )
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise AttribBenchError(
            None,
            "--device",
            f"{requested!r} but only {torch.cuda.device_count()} CUDA device(s) exist",
            "use cuda:0 .. cuda:N-1",
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise AttribBenchError(
            None, "--device", "'mps' requested but it is not available", "use --device cpu"
        )
    return device


def check_batch_size(batch_size: int | None, field: str = "--batch-size") -> None:
    """A batch size, when given, is a positive integer."""
    if batch_size is not None and (isinstance(batch_size, bool) or batch_size < 1):
        raise AttribBenchError(
            None, field, f"must be at least 1, got {batch_size}", "omit it or pass e.g. 64"
        )


def cache_key(extractor: FeatureExtractor, submission_sha256: str) -> str:
    """The feature-cache folder of a BUILT-IN baseline (harness code): its ``feature_key``
    (code, weights and settings), shared with ``train-tuned``; else the submission's files.

    Submitted extractors never reach this: their key is :func:`submission_cache_key`, computed
    by the harness from file hashes, so no object a submitter controls can name a cache folder.
    """
    own = getattr(extractor, "feature_key", None)
    if own:
        return own
    return submission_cache_key(submission_sha256)


def submission_cache_key(submission_sha256: str) -> str:
    """Cache folder of a submitted extractor: a hash of every file it ships (submission.yaml,
    with its entry and kwargs, included). The ``sub-`` prefix keeps it apart from baselines."""
    return "sub-" + sha256_text(f"submission:{submission_sha256}")[:24]


def decode(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as im:
        return im.convert("RGB")


def tensor_sha256(feats: torch.Tensor) -> str:
    """sha256 of a tensor's raw bytes (dtype and shape are checked separately)."""
    return hashlib.sha256(feats.contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()


def check_features(feats: object, rows: int, where: str) -> str | None:
    """Why ``feats`` is not a finite float [rows, D>0] tensor; None when it is."""
    if not isinstance(feats, torch.Tensor):
        return f"not a tensor ({type(feats).__name__})"
    if not feats.is_floating_point():
        return f"dtype {feats.dtype} is not floating point"
    if feats.ndim != 2 or feats.shape[0] != rows or feats.shape[1] == 0:
        return f"shape {tuple(feats.shape)}, expected [{rows}, dim] ({where})"
    if not torch.isfinite(feats).all():
        return f"NaN or inf values ({where})"
    return None


def disk_full(path: Path, what: str, exc: OSError) -> AttribBenchError:
    """One line for a failed write (a full disk, a read-only folder, a quota)."""
    reason = "the disk is full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
    return AttribBenchError(
        path,
        what,
        f"cannot write ({reason})",
        "free disk space or point ATTRIB_BENCH_CACHE at a folder with room (or pass --no-cache)",
    )


def write_tensor_file(path: Path, feats: torch.Tensor, metadata: dict[str, str]) -> None:
    """Write a safetensors file through a uniquely named temp file and an atomic rename."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        save_file({"features": feats.contiguous()}, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class FeatureCache:
    """Block-level, checksummed feature store for one extractor key."""

    def __init__(self, key: str, root: Path | None = None):
        self.root = (root or cache_root() / CACHE_DIR) / key

    def path(self, role: str, block_key: str) -> Path:
        return self.root / role / f"{block_key}.safetensors"

    def load(self, role: str, block_key: str) -> torch.Tensor | None:
        """A block's features, or None when missing or failing its checks (then recomputed)."""
        from safetensors import safe_open

        p = self.path(role, block_key)
        if not p.is_file():
            return None
        try:
            with safe_open(str(p), framework="pt") as f:
                meta = f.metadata() or {}
                feats = f.get_tensor("features")
        except Exception:  # a torn or garbled file
            return self._corrupt(p, "not a readable safetensors file")
        rows, dim = meta.get("rows"), meta.get("dim")
        problem = check_features(feats, int(rows) if str(rows).isdigit() else -1, "cached")
        if problem is None and str(feats.shape[1]) != dim:
            problem = f"dim {feats.shape[1]} but {dim} recorded"
        if problem is None and feats.dtype != torch.float32:
            problem = f"dtype {feats.dtype}, expected float32"
        if problem is None and tensor_sha256(feats) != meta.get("sha256"):
            problem = "checksum mismatch"
        return feats if problem is None else self._corrupt(p, problem)

    def _corrupt(self, path: Path, problem: str) -> None:
        if str(path) not in _WARNED:  # once per block and process
            _WARNED.add(str(path))
            print(
                f"warning: {path}: cached features unusable ({problem}); recomputing",
                file=sys.stderr,
            )
        return None

    def save(self, role: str, block_key: str, feats: torch.Tensor) -> None:
        feats = feats.detach().to("cpu", torch.float32).contiguous()
        meta = {
            "sha256": tensor_sha256(feats),
            "rows": str(feats.shape[0]),
            "dim": str(feats.shape[1]),
        }
        p = self.path(role, block_key)
        try:
            write_tensor_file(p, feats, meta)
        except OSError as exc:
            raise disk_full(p, "feature cache", exc) from None


def cached_block(cache: FeatureCache | None, role: str, block) -> torch.Tensor | None:
    """A block's cached features: its own entry, or rows of a cached whole block."""
    if cache is None:
        return None
    feats = cache.load(role, block.key)
    if feats is None and block.full_key != block.key:
        whole = cache.load(role, block.full_key)  # cached by a run that wanted every row
        if whole is not None and whole.shape[0] > max(block.positions):
            feats = whole[list(block.positions)]
    return feats if feats is not None and feats.shape[0] == len(block.ids) else None


_cached = cached_block  # the old private name


def extract_blocks(
    extractor: FeatureExtractor,
    bench: Benchmark,
    table: str,
    wanted: set[str] | None,
    *,
    role: str,
    device: torch.device,
    batch_size: int | None = None,
    source: str | None = None,
    skip: Callable[[object], bool] | None = None,
    workers: int = 4,
    runner: _Runner | None = None,
) -> Iterator[tuple[object, torch.Tensor | None]]:
    """(block, features) for every block of ``table`` (rows in ``wanted``); features are None
    for blocks ``skip`` says to leave out. Block n+1 is decoded and preprocessed in a thread
    pool while block n is embedded, so a fast accelerator does not wait for preprocessing."""
    check_batch_size(batch_size)
    embed = getattr(extractor, "embed_query", None) if role == "query" else None
    run = runner or _Runner(extractor, None, device, 0, source)
    run.embed = embed or extractor.embed
    run.batch_size = batch_size or int(getattr(extractor, "batch_size", DEFAULT_BATCH) or 0)
    check_batch_size(run.batch_size, "batch_size")
    pending = None
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for block in bench.iter_image_blocks(table, wanted):
            if skip is not None and skip(block):
                yield block, None
                continue
            started = (block, run.start(block.images, pool))
            if pending:
                yield pending[0], run.finish(pending[1], f"{table} {pending[0].ids[0]}")
            pending = started
        if pending:
            yield pending[0], run.finish(pending[1], f"{table} {pending[0].ids[0]}")


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
    runner: _Runner | None = None,
) -> dict[str, torch.Tensor]:
    """Features of ``table``'s images (those in ``wanted``), as id -> float32 [D] rows, in
    THIS process: for built-in baselines (harness code) and inside the sandbox's child.

    ``role`` is ``"query"`` (uses ``embed_query`` when the extractor has one) or
    ``"gallery"``. ``source`` names the extractor's file in error messages.
    """
    out: dict[str, torch.Tensor] = {}
    hits: dict[str, torch.Tensor] = {}

    def skip(block) -> bool:
        feats = cached_block(cache, role, block)
        if feats is not None:
            hits[block.key] = feats
        return feats is not None

    for block, feats in extract_blocks(
        extractor,
        bench,
        table,
        wanted,
        role=role,
        device=device,
        batch_size=batch_size,
        source=source,
        skip=skip,
        workers=workers,
        runner=runner,
    ):
        if feats is None:
            feats = hits.pop(block.key)
        elif cache:
            cache.save(role, block.key, feats)
        for i, image_id in enumerate(block.ids):
            out[image_id] = feats[i]
        if progress:
            progress(len(block.ids))
    return out


class _Runner:
    """Decode + preprocess (threads), then embed in batches; user-code failures become one
    clear line (set ATTRIB_BENCH_DEBUG=1 to see the traceback instead). One runner spans a
    whole run, so a feature dim that changes between batches, blocks or roles is caught."""

    def __init__(self, extractor, embed, device, batch_size: int, source: str | None):
        self.extractor, self.embed, self.device = extractor, embed, device
        self.batch_size, self.source = batch_size, source
        self.dim: int | None = None

    def _fail(self, member: str, problem: str, fix: str) -> AttribBenchError:
        return AttribBenchError(self.source, member, problem, fix)

    def _user(self, member: str, fn, *args):
        try:
            return fn(*args)
        except AttribBenchError:
            raise
        except Exception as exc:
            if os.environ.get("ATTRIB_BENCH_DEBUG"):
                raise
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise self._fail(
                member,
                f"raised {type(exc).__name__}: {first}",
                "fix the extractor (ATTRIB_BENCH_DEBUG=1 shows the traceback)",
            ) from None

    def start(self, images, pool) -> list:
        """Submit decode + preprocess of every image to ``pool``."""
        pre = self.extractor.preprocess
        return [pool.submit(lambda b: pre(decode(b)), data) for data in images]

    def _stack(self, tensors: list, where: str) -> torch.Tensor:
        for t in tensors:
            if not isinstance(t, torch.Tensor):
                raise self._fail(
                    "preprocess",
                    f"returned a {type(t).__module__}.{type(t).__name__}, not a torch.Tensor "
                    f"({where})",
                    "return torch.Tensor (e.g. torch.from_numpy(array))",
                )
        shapes = {tuple(t.shape) for t in tensors}
        if len(shapes) > 1:
            raise self._fail(
                "preprocess",
                f"returned tensors of different shapes {sorted(shapes)[:2]} ({where})",
                "resize or crop every image to one size",
            )
        return torch.stack(tensors)

    def finish(self, futures: list, where: str) -> torch.Tensor:
        """Wait for the preprocessed images and embed them in batches."""
        tensors = self._user("preprocess", lambda: [f.result() for f in futures])
        parts = []
        with torch.inference_mode():
            for start in range(0, len(tensors), self.batch_size):
                batch = self._stack(tensors[start : start + self.batch_size], where)
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
                    raise self._fail(
                        "embed",
                        f"returned {shape} for a batch of {len(batch)} ({where})",
                        "return a [batch, dim] tensor",
                    )
                if self.dim is None:
                    self.dim = int(feats.shape[1])
                elif feats.shape[1] != self.dim:
                    raise self._fail(
                        "embed",
                        f"feature dim changed from {self.dim} to {feats.shape[1]} ({where})",
                        "return one dim for every batch (embed and embed_query alike)",
                    )
                parts.append(feats.detach().to("cpu", torch.float32))
        feats = torch.cat(parts)
        if not torch.isfinite(feats).all():
            raise self._fail(
                "embed",
                f"returned NaN or inf features ({where})",
                "check the extractor's weights and preprocessing",
            )
        return feats


def stack(rows: dict[str, torch.Tensor], ids: list[str] | tuple[str, ...]) -> torch.Tensor:
    return torch.stack([rows[i] for i in ids]) if ids else torch.zeros(0, 0)
