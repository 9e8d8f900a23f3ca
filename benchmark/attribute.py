"""Single-image attribution, the AbC paper's demo: which training images influenced this one?

Given generated images and an extractor (a built-in baseline or a submission), rank a gallery
(a benchmark's distractors, or a folder of images) by cosine similarity and turn the scores
into "percent influence" per gallery image with AbC's calibrator (:mod:`benchmark.calibration`)
applied to EVERY gallery score: the top K shares plus the remaining influence (the rest of the
gallery) sum to 1.

The calibrator, in order of preference: the one stored with a built-in baseline for that
benchmark (``baselines/calibrators/``); one fitted here on the benchmark's ``val`` part (the
same candidate sets as ``evaluate``: the top 100 distractors plus the query's exemplars),
cached; none for a folder gallery or a benchmark without ``val`` (then only scores are shown,
with a note saying why).

Features go through the same paths as ``evaluate``: submitted code runs only in the sandbox
(:func:`benchmark.sandbox.extract_isolated`), built-in baselines in-process, and both use the
block feature cache, so a second call reads the gallery from disk. Input images (and a folder
gallery) are first staged as a small packed benchmark under the cache root, keyed by the
files' bytes: the sandbox child reads it like any benchmark, and cached gallery features
follow the files' content.

Ranking is deterministic: scores are sorted descending with a stable sort, so equal scores
keep gallery order (a benchmark's distractor order; a folder's sorted relative paths). The
terminal table, the HTML page and the PNG contact sheet are in :mod:`benchmark.attribute_output`.
"""

from __future__ import annotations

import hashlib
import io
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmark import calibration as calib
from benchmark import features as feat
from benchmark import scoring
from benchmark.errors import AttribBenchError, SubmissionError
from benchmark.fileio import read_json, sha256_text, write_json
from benchmark.paths import cache_root
from benchmark.report import FLAT_THRESHOLD
from benchmark.sandbox import SandboxOptions, extract_isolated
from benchmark.splits import Benchmark, load_benchmark
from benchmark.submission import Submission, is_builtin, load_extractor, load_submission
from benchmark.types import Part

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
STAGE_DIR = "attribute"
THUMB = 160  # thumbnail edge in pixels (page and contact sheet)


@dataclass(frozen=True)
class Ranked:
    """One query image's top K: gallery ids, cosine scores and influence shares (or None)."""

    name: str
    ids: tuple[str, ...]
    scores: tuple[float, ...]
    influence: tuple[float, ...] | None
    remaining: float | None  # influence of every gallery image outside the top K


@dataclass(frozen=True)
class Attribution:
    """What :func:`attribute` found for every query image, and how."""

    extractor: str
    gallery: str
    gallery_size: int
    top_k: int
    queries: tuple[Ranked, ...]
    calibrator: dict[str, float] | None
    calibration: str  # where the calibrator came from, or why there is none
    isolation: str
    #: PNG thumbnails for the page and sheet: ``query:<n>`` and ``gallery:<id>``.
    thumbnails: dict[str, bytes] = field(default_factory=dict, repr=False, compare=False)


# --------------------------------------------------------------------------------------------
# inputs


def _check_image(path: Path, data: bytes, field_name: str) -> None:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
    except Exception:
        raise AttribBenchError(
            path, field_name, "not a readable image", "pass a PNG, JPEG or WebP file"
        ) from None


def read_images(paths: list[str | Path]) -> list[tuple[str, bytes]]:
    """(file name, bytes) of each query image; a missing file or a non-image is one error."""
    if not paths:
        raise AttribBenchError(None, "IMAGE", "no image given", "pass one or more image files")
    out = []
    for p in map(Path, paths):
        if not p.is_file():
            raise AttribBenchError(p, "IMAGE", "no such file", "check the path")
        data = p.read_bytes()
        _check_image(p, data, "IMAGE")
        out.append((p.name, data))
    return out


def read_folder(folder: Path) -> list[tuple[str, bytes]]:
    """(relative posix path, bytes) of every image under ``folder``, sorted by path."""
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    if not files:
        raise AttribBenchError(
            folder,
            "--gallery",
            "the folder holds no images",
            f"add images ({', '.join(IMAGE_SUFFIXES)}) or pass a benchmark name",
        )
    out = []
    for p in files:
        data = p.read_bytes()
        _check_image(p, data, "--gallery")
        out.append((p.relative_to(folder).as_posix(), data))
    return out


def stage(queries: list[tuple[str, bytes]], gallery: list[tuple[str, bytes]]) -> Benchmark:
    """A packed benchmark under the cache root with ``queries`` in its queries table and
    ``gallery`` as its distractors, named by a hash of their ids and bytes, written once.

    Each table is its own Parquet shard, so the gallery's feature-cache keys depend on the
    gallery's ids and bytes alone, whatever queries come with it."""

    def listing(items: list[tuple[str, bytes]]) -> str:
        return "\n".join(f"{i}\t{hashlib.sha256(d).hexdigest()}" for i, d in items)

    digest = sha256_text(f"queries\n{listing(queries)}\ngallery\n{listing(gallery)}")[:32]
    root = cache_root() / STAGE_DIR / "staged" / digest
    if (root / "manifest.json").is_file():
        return load_benchmark(root)
    import datasets  # only to write (a second of imports)

    from benchmark.splits import write_benchmark
    from benchmark.types import CustomModel, PromptType, Query

    tmp = root.with_name(f".{digest}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    first = (queries or gallery)[0][1]  # a placeholder: the format needs one exemplar
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # staging is an implementation detail: no bars
    try:
        write_benchmark(
            tmp,
            name="attribute-staged",
            version="0.0.0",
            description="Images staged by attrib-bench attribute.",
            license="other",
            models=[CustomModel("staged", Part.TRAIN, "staged", ("staged-exemplar",))],
            queries=[
                (Query(i, "staged", Part.TRAIN, "", PromptType.GPT, 0, "none"), d)
                for i, d in queries
            ],
            exemplars=[("staged-exemplar", first)],
            distractors=[(i, "", d) for i, d in gallery],
            rows_per_shard=256,
        )
    finally:
        if bars:
            datasets.enable_progress_bars()
    try:
        tmp.rename(root)
    except OSError:  # staged meanwhile by another run: theirs is identical
        shutil.rmtree(tmp, ignore_errors=True)
    return load_benchmark(root)


# --------------------------------------------------------------------------------------------
# features


class _Features:
    """Extracts tables of any benchmark with one extractor, the way ``evaluate`` does."""

    def __init__(self, sub: Submission, device: str | None, sandbox: SandboxOptions):
        self.sub, self.sandbox = sub, sandbox
        self.device = feat.pick_device(device)
        self.batch = sub.config["extractor"].get("batch_size")
        module = sub.config["extractor"]["entry"].partition(":")[0]
        self.source = str(sub.root / module) if module.endswith(".py") else module
        self.builtin = is_builtin(sub)
        self.isolation = "in-process (built-in baseline)"
        self.extractor: Any = None
        if self.builtin:
            ext = load_extractor(sub)
            self.extractor = (ext.to(self.device) or ext) if hasattr(ext, "to") else ext
            self.project = getattr(self.extractor, "project", None)
            backbone = getattr(self.extractor, "backbone", None) if self.project else None
            self.runner = backbone or self.extractor
            self.cache = feat.FeatureCache(feat.cache_key(self.runner, sub.sha256))
        else:
            self.cache = feat.FeatureCache(feat.submission_cache_key(sub.sha256))

    @property
    def key(self) -> str:
        return self.cache.root.name

    def stored_calibrator(self, bench: Benchmark) -> dict[str, Any] | None:
        """A built-in baseline's calibrator for ``bench`` (submissions never supply one)."""
        fn = getattr(self.extractor, "stored_calibrator", None)
        return fn(bench.name, bench.version) if callable(fn) else None

    def __call__(
        self, bench: Benchmark, tables: list[tuple[str, set[str] | None, str]]
    ) -> dict[str, dict[str, torch.Tensor]]:
        """id -> feature row for each (table, wanted ids, role) of ``bench``."""
        if not self.builtin:
            rows, backend = extract_isolated(
                self.sub, bench, tables, cache=self.cache, device=self.device,
                batch_size=self.batch, options=self.sandbox, source=self.source,
            )  # fmt: skip
            self.isolation = backend if backend != "none" else "none (--trust-code)"
            return rows
        runner = feat._Runner(self.runner, None, self.device, 0, self.source)
        out = {}
        for table, wanted, role in tables:
            rows = feat.extract_table(
                self.runner, bench, table, wanted, role=role, cache=self.cache,
                device=self.device, batch_size=self.batch, source=self.source, runner=runner,
            )  # fmt: skip
            if self.project is not None and rows:
                ids = list(rows)
                with torch.inference_mode():
                    projected = self.project(
                        feat.stack(rows, ids), "synth" if role == "query" else "real"
                    )
                rows = dict(zip(ids, projected.cpu(), strict=True))
            out[table] = rows
        return out


def _matrix(rows: dict[str, torch.Tensor], ids: list[str] | tuple[str, ...], what: str, source):
    x = feat.stack(rows, ids)
    return scoring.normalize(x, what, lambda r: ids[r], source)


# --------------------------------------------------------------------------------------------
# calibration


@dataclass
class _Calibration:
    """Where influence comes from: a calibrator, or the val tables to fit one on."""

    calibrator: calib.Calibrator | None
    note: str
    fit_tables: list[tuple[str, set[str] | None, str]] = field(default_factory=list)
    path: Path | None = None  # where a fitted calibrator is cached


def _plan_calibration(features: _Features, bench: Benchmark | None) -> _Calibration:
    """The stored calibrator, a cached fit, the val tables to fit one on, or none (and why)."""
    if bench is None:
        return _Calibration(
            None,
            "none: a folder gallery has no val part to fit a calibrator on, so influence is "
            "not computed (pass --gallery BENCHMARK for calibrated influence)",
        )
    label = f"{bench.name}@{bench.version}"
    stored = features.stored_calibrator(bench)
    if stored is not None:
        cal = calib.Calibrator(float(stored["temperature"]), float(stored["threshold"]))
        return _Calibration(cal, f"the baseline's stored calibrator for {label} (fit on val)")
    val = [q for q in bench.evaluated_queries if q.part is Part.VAL]
    if not val:
        return _Calibration(None, f"none: {label} has no val part to fit a calibrator on")
    note = f"fitted on {label}'s val part ({len(val)} queries, top {scoring.DEFAULT_TOP_N})"
    name = f"{features.key}.{bench.manifest_sha256[:24]}.json"
    path = cache_root() / STAGE_DIR / "calibrators" / name
    if path.is_file():
        record = read_json(path, "cached calibrator")
        try:
            return _Calibration(
                calib.Calibrator(float(record["temperature"]), float(record["threshold"])), note
            )
        except (TypeError, KeyError, ValueError):
            pass  # unusable: fitted again
    exemplars = {e for q in val for e in bench.model(q.model_id).exemplar_ids}
    tables = [("queries", {q.query_id for q in val}, "query"), ("exemplars", exemplars, "gallery")]
    return _Calibration(None, note, tables, path)


def _fit(
    plan: _Calibration,
    rows: dict[str, dict[str, torch.Tensor]],
    bench: Benchmark,
    gallery: torch.Tensor,
    source: str,
) -> calib.Calibrator:
    """Fit on val like ``evaluate``: each query's exemplars vs its top 100 distractors."""
    val = [q for q in bench.evaluated_queries if q.part is Part.VAL]
    exemplar_ids = sorted(rows["exemplars"])
    queries = _matrix(rows["queries"], [q.query_id for q in val], "queries", source)
    exemplars = _matrix(rows["exemplars"], exemplar_ids, "exemplars", source)
    column = {e: i for i, e in enumerate(exemplar_ids)}
    top_n = min(scoring.DEFAULT_TOP_N, gallery.shape[0])
    top = torch.topk(queries @ gallery.T, top_n, dim=1).values.numpy()
    ex_scores = (queries @ exemplars.T).numpy()
    scores, labels = [], []
    for i, q in enumerate(val):
        ex = ex_scores[i, [column[e] for e in bench.model(q.model_id).exemplar_ids]]
        scores.append(np.concatenate([ex, top[i]]).astype(np.float64))
        labels.append(np.concatenate([np.ones(len(ex)), np.zeros(top_n)]))
    cal = calib.fit_calibrator(scores, labels)
    if plan.path is not None:
        write_json(plan.path, {"schema_version": 1, **cal.to_dict(), "num_fit_queries": len(val)})
    return cal


# --------------------------------------------------------------------------------------------
# the library call


def rank(
    name: str, scores: np.ndarray, ids: list[str], k: int, cal: calib.Calibrator | None
) -> Ranked:
    """The top ``k`` of one query's gallery ``scores``: descending, equal scores in gallery
    order (a stable sort); influence over the WHOLE gallery, so top K plus rest sum to 1.

    >>> r = rank("q.png", np.array([0.1, 0.9, 0.9]), ["a", "b", "c"], 2, None)
    >>> r.ids, r.scores, r.influence
    (('b', 'c'), (0.9, 0.9), None)
    >>> r = rank("q.png", np.array([0.0, 1.0]), ["a", "b"], 1, calib.Calibrator(1.0, 0.0))
    >>> r.ids, round(r.influence[0] + r.remaining, 12)
    (('b',), 1.0)
    """
    order = np.argsort(-scores, kind="stable")
    top = order[:k]
    influence = remaining = None
    if cal is not None:
        shares = cal.influence(scores)
        influence = tuple(float(x) for x in shares[top])
        remaining = float(shares[order[k:]].sum())
    return Ranked(
        name, tuple(ids[j] for j in top), tuple(float(scores[j]) for j in top), influence, remaining
    )


def _thumbnail(data: bytes) -> bytes:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im = im.convert("RGB")
        im.thumbnail((THUMB, THUMB))
        buf = io.BytesIO()
        im.save(buf, format="PNG")
    return buf.getvalue()


def _gallery_bytes(bench: Benchmark, table: str, ids: set[str]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for block in bench.iter_image_blocks(table, ids):
        out.update(zip(block.ids, block.images, strict=True))
    return out


def attribute(
    images: list[str | Path],
    extractor_source: str | Path | Submission,
    gallery: str | Path | Benchmark | None = None,
    top_k: int = 10,
    *,
    device: str | None = None,
    sandbox: SandboxOptions | None = None,
) -> Attribution:
    """Rank ``gallery`` for each of ``images`` with an extractor; calibrated influence.

    Args:
        images: generated image files.
        extractor_source: a submission folder (``kind: extractor``; run in the sandbox) or a
            :class:`Submission` (``baselines.models.baseline_submission(name)`` runs in-process).
        gallery: a benchmark (name, folder or object; its distractors are the gallery) or a
            folder of images; default the default benchmark.
        top_k: how many gallery images to report per query (the whole gallery is scored).

    Raises:
        AttribBenchError: bad input (missing or unreadable image, empty folder, K < 1, ...).
    """
    from benchmark.benchmarks import resolve_benchmark

    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise AttribBenchError(None, "--top", f"must be at least 1, got {top_k!r}", "e.g. --top 10")
    queries = read_images(list(images))
    if isinstance(extractor_source, Submission):
        sub = extractor_source
    else:
        sub = load_submission(extractor_source)
    if sub.kind != "extractor":
        raise SubmissionError(
            sub.yaml_path,
            "kind",
            f"is {sub.kind!r}; attribution needs an extractor to embed new images",
            "pass an extractor submission or --baseline NAME",
        )
    features = _Features(sub, device, sandbox or SandboxOptions())
    named = [(f"query-{i:05d}", d) for i, (_, d) in enumerate(queries)]
    is_folder = isinstance(gallery, (str, Path)) and Path(gallery).is_dir()
    if is_folder and not (Path(gallery) / "manifest.json").is_file():
        # Queries and gallery staged together: one sandboxed child embeds both.
        bench, label = None, str(gallery)
        gallery_bench = stage(named, read_folder(Path(gallery)))
        plan = _plan_calibration(features, None)
        rows = features(
            gallery_bench, [("queries", None, "query"), ("distractors", None, "gallery")]
        )
    else:
        bench = gallery if isinstance(gallery, Benchmark) else resolve_benchmark(gallery)
        gallery_bench, label = bench, f"{bench.name}@{bench.version}"
        plan = _plan_calibration(features, bench)
        rows = features(bench, [("distractors", None, "gallery"), *plan.fit_tables])
        fit_rows = rows  # val queries and exemplars, when a calibrator is to be fitted
        rows = {**rows, **features(stage(named, []), [("queries", None, "query")])}
    gallery_ids = list(gallery_bench.distractor_ids)
    g = _matrix(rows["distractors"], gallery_ids, "gallery", features.source)
    q = _matrix(rows["queries"], [i for i, _ in named], "IMAGE", None)
    cal = plan.calibrator
    if bench is not None and plan.fit_tables:
        cal = _fit(plan, fit_rows, bench, g, features.source)
    note = plan.note
    if cal is not None and cal.threshold > FLAT_THRESHOLD:
        note += (
            "; it is flat (every gallery image gets about the same share), so the influence "
            "column says nothing about this extractor"
        )
    if q.shape[1] != g.shape[1]:
        raise SubmissionError(
            features.source, "embed", f"query dim {q.shape[1]} but gallery dim {g.shape[1]}",
            "embed_query and embed must return the same dim",
        )  # fmt: skip
    k = min(top_k, len(gallery_ids))
    scores = (q @ g.T).numpy()
    ranked = [rank(name, scores[i], gallery_ids, k, cal) for i, (name, _) in enumerate(queries)]
    wanted = {i for r in ranked for i in r.ids}
    thumbs = {f"query:{n}": _thumbnail(d) for n, (_, d) in enumerate(queries)}
    for image_id, data in _gallery_bytes(gallery_bench, "distractors", wanted).items():
        thumbs[f"gallery:{image_id}"] = _thumbnail(data)
    return Attribution(
        extractor=sub.name,
        gallery=label,
        gallery_size=len(gallery_ids),
        top_k=k,
        queries=tuple(ranked),
        calibrator=None if cal is None else cal.to_dict(),
        calibration=note,
        isolation=features.isolation,
        thumbnails=thumbs,
    )
