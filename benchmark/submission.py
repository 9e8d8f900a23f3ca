"""Submissions: ``submissions/<name>/submission.yaml`` plus code, features or scores.

Three kinds enter the pipeline at different points:

- ``extractor``: a Python class (see :class:`benchmark.extractors.FeatureExtractor`); the
  harness extracts and caches features. Submitted code never runs in the harness's process:
  :mod:`benchmark.sandbox` runs it in a child with no network, a read-only view of the files
  (only its scratch folder is writable), and time and memory limits; the harness checks
  what comes back and alone writes the cache and results. Only built-in catalog baselines
  (:func:`is_builtin`) are loaded in-process. A maintainer still reviews what the sandbox
  cannot judge: whether the features are honestly computed (see submissions/README.md).
- ``features``: query and candidate feature arrays (``.npy`` or ``.safetensors``), rows in
  the order of an ``ids`` file or, by default, of ``attrib-bench export``.
- ``similarity``: ``dense`` (a [queries x candidates] matrix in export order, float16/32/64,
  memory-mapped; float64 is scored in float64) or ``topk`` (a safetensors file with
  ``indices`` int64 [Q, K] into ``candidates.txt``, ``scores`` [Q, K], and
  ``positive_scores`` [P] aligned with the rows of ``positives.tsv``), K >= 100.

Nothing is ever unpickled; every array's header is checked before data is read.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.errors import SubmissionError
from benchmark.extractors import FeatureExtractor, check_extractor
from benchmark.fileio import open_array, read_id_list, sha256_file
from benchmark.metrics import RECALL_KS
from benchmark.schemas import validate
from benchmark.splits import Benchmark
from benchmark.strict_yaml import YamlRefused, load_strict_yaml

CONFIG = "submission.yaml"
MIN_TOPK = max(RECALL_KS)
#: submission.yaml is a short config: anything larger is refused before it is parsed.
MAX_CONFIG_BYTES = 64 << 10
_SCAN_ELEMENTS = 1 << 22  # values per NaN/inf/zero-row scan step, to bound memory on huge files
#: Array dtypes scored: float16/32 in float32 (exact), float64 in float64 (dense) or
#: float32 (features); anything wider would be rounded silently, so it is refused.
FLOAT_DTYPES = ("float16", "float32", "float64")


@dataclass(frozen=True)
class Submission:
    root: Path
    config: dict[str, Any]
    #: Set for built-in baselines: what identifies them (code, weights, heads) instead of
    #: the files under ``root``.
    hashes: dict[str, str] | None = None

    @property
    def name(self) -> str:
        return self.config["name"]

    @property
    def kind(self) -> str:
        return self.config["kind"]

    @property
    def yaml_path(self) -> Path:
        return self.root / CONFIG

    @cached_property
    def file_hashes(self) -> dict[str, str]:
        """sha256 of every file of the submission (relative path -> hex), sorted."""
        if self.hashes is not None:
            return dict(sorted(self.hashes.items()))
        files = sorted(
            p
            for p in self.root.rglob("*")
            if p.is_file()
            and "__pycache__" not in p.parts
            and not any(part.startswith(".") for part in p.relative_to(self.root).parts)
        )
        hashes = {p.relative_to(self.root).as_posix(): sha256_file(p) for p in files}
        # A module entry (``pkg.module:Class``) is code outside the folder: hash its source too,
        # so a changed baseline never reuses stale cached features.
        entry = (self.config.get("extractor") or {}).get("entry", "")
        module = entry.partition(":")[0]
        if entry and not module.endswith(".py") and "/" not in module:
            found = importlib.util.find_spec(module)
            if found is not None and found.origin and Path(found.origin).is_file():
                hashes[f"module:{module}"] = sha256_file(Path(found.origin))
        return hashes

    @cached_property
    def sha256(self) -> str:
        text = "".join(f"{h}  {p}\n" for p, h in self.file_hashes.items())
        return hashlib.sha256(text.encode()).hexdigest()

    def path(self, rel: str, field: str) -> Path:
        p = (self.root / rel).resolve()
        if not p.is_relative_to(self.root.resolve()):
            raise SubmissionError(
                self.yaml_path,
                field,
                f"{rel!r} points outside the submission",
                "keep every file inside the submission folder",
            )
        return p


def load_submission(path: str | Path) -> Submission:
    """Read and schema-check a submission folder (or its submission.yaml)."""
    import yaml

    path = Path(path)
    root = path.parent if path.name == CONFIG else path
    cfg_path = root / CONFIG
    if not cfg_path.is_file():
        raise SubmissionError(
            cfg_path,
            None,
            "submission.yaml not found",
            "pass a folder holding submission.yaml (see submissions/README.md)",
        )
    try:
        with open(cfg_path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)  # the cap holds before anything is parsed
    except OSError as exc:
        raise SubmissionError(
            cfg_path, None, f"cannot read it ({exc.strerror})", "check the permissions"
        ) from None
    if len(data) > MAX_CONFIG_BYTES:
        raise SubmissionError(
            cfg_path,
            None,
            f"larger than {MAX_CONFIG_BYTES >> 10} KiB",
            "keep submission.yaml a short config; put data in files next to it",
        )
    try:
        config = load_strict_yaml(data.decode("utf-8"))
    except YamlRefused as exc:
        raise SubmissionError(cfg_path, exc.field, exc.problem, exc.fix) from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        problem = str(exc).splitlines()[0]
        raise SubmissionError(
            cfg_path, None, f"not valid YAML ({problem})", "fix the YAML syntax"
        ) from None
    if not isinstance(config, dict):
        raise SubmissionError(
            cfg_path,
            None,
            "must be a YAML mapping",
            "see submissions/example_features/submission.yaml",
        )
    if type(config.get("date")).__name__ == "date":  # YAML reads 2026-11-29 as a date
        config["date"] = config["date"].isoformat()
    validate(config, "submission", cfg_path)
    return Submission(root.resolve(), config)


def check_benchmark(sub: Submission, bench: Benchmark) -> None:
    """Files made for one benchmark version must not be scored against another."""
    want = sub.config.get("benchmark")
    if want is None:
        return
    name, _, version = want.partition("@")
    if name != bench.name or (version and version != bench.version):
        raise SubmissionError(
            sub.yaml_path,
            "benchmark",
            f"files were made for {want!r}, not {bench.name}@{bench.version}",
            "evaluate with --benchmark matching the files, or regenerate them",
        )


# --------------------------------------------------------------------------------------------
# extractor


def is_builtin(sub: Submission) -> bool:
    """A catalog baseline built by ``baselines.models.baseline_submission`` (harness code and
    pinned weights, identified by their hashes), never a folder read from submission.yaml:
    those always run sandboxed, module entries included."""
    entry = (sub.config.get("extractor") or {}).get("entry")
    return sub.hashes is not None and entry == "baselines.models:load_baseline"


def _import_module(sub: Submission, name: str):
    """An installed module (the built-in baselines: ``baselines.noweight:Pixels``)."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise SubmissionError(
            sub.yaml_path,
            "extractor.entry",
            f"cannot import {name} ({exc})",
            "name FILE.py:Class inside the submission folder, or an installed module",
        ) from None


def _import_file(sub: Submission, file_part: str):
    file = sub.path(file_part, "extractor.entry")
    if not file.is_file():
        raise SubmissionError(
            sub.yaml_path,
            "extractor.entry",
            f"{file_part} not found",
            "name a .py file inside the submission folder",
        )
    module_name = f"attrib_bench_submission_{sub.name.replace('-', '_').replace('.', '_')}"
    module_spec = importlib.util.spec_from_file_location(module_name, file)
    module = importlib.util.module_from_spec(module_spec)  # type: ignore[arg-type]
    sys.modules[module_name] = module
    try:
        module_spec.loader.exec_module(module)  # type: ignore[union-attr]
    except Exception as exc:
        if os.environ.get("ATTRIB_BENCH_DEBUG"):
            raise
        raise SubmissionError(
            file,
            "extractor.entry",
            f"importing it raised {type(exc).__name__}: {exc}".splitlines()[0],
            "fix the file (ATTRIB_BENCH_DEBUG=1 shows the traceback)",
        ) from None
    return module


def load_extractor(sub: Submission) -> FeatureExtractor:
    """Instantiate ``extractor.entry``: ``FILE.py:Class`` in the folder, or ``pkg.module:Class``."""
    spec = sub.config["extractor"]
    file_part, _, cls_name = spec["entry"].partition(":")
    if not file_part.endswith(".py") and "/" not in file_part:
        module = _import_module(sub, file_part)
    else:
        module = _import_file(sub, file_part)
    cls = getattr(module, cls_name, None)
    if cls is None:
        raise SubmissionError(
            sub.yaml_path,
            "extractor.entry",
            f"no class {cls_name!r} in {file_part}",
            "name a class defined there",
        )
    try:
        obj = cls(**spec.get("kwargs", {}))
    except Exception as exc:
        if os.environ.get("ATTRIB_BENCH_DEBUG"):
            raise
        problem = f"{cls_name}(**kwargs) raised {type(exc).__name__}: {exc}".splitlines()[0]
        raise SubmissionError(
            sub.yaml_path, "extractor.kwargs", problem, "pass the arguments the class accepts"
        ) from None
    missing = check_extractor(obj)
    if missing:
        raise SubmissionError(
            Path(module.__file__ or file_part),
            cls_name,
            f"missing {', '.join(missing)}",
            "implement preprocess(image) and embed(batch)",
        )
    return obj


# --------------------------------------------------------------------------------------------
# features


def _row_order(
    sub: Submission,
    field: str,
    ids_rel: str | None,
    n_rows: int,
    expected: tuple[str, ...],
    array_path: Path,
) -> np.ndarray:
    """Row of the array for each expected id (export order when no ids file)."""
    if ids_rel is None:
        if n_rows != len(expected):
            raise SubmissionError(
                array_path,
                field,
                f"{n_rows} rows but the benchmark has {len(expected)}",
                "write one row per id in `attrib-bench export` order, or give an ids file",
            )
        return np.arange(n_rows)
    ids_path = sub.path(ids_rel, f"{field}.ids")
    ids = read_id_list(ids_path, f"{field}.ids")
    if len(ids) != n_rows:
        raise SubmissionError(
            ids_path,
            f"{field}.ids",
            f"{len(ids)} ids for {n_rows} rows",
            "write exactly one id per array row",
        )
    position: dict[str, int] = {}
    for row, i in enumerate(ids):
        if i in position:
            raise SubmissionError(
                ids_path, f"{field}.ids", f"duplicate id {i!r}", "give each row a distinct id"
            )
        position[i] = row
    wanted = set(expected)
    unknown = [i for i in ids if i not in wanted]
    if unknown:
        raise SubmissionError(
            ids_path,
            f"{field}.ids",
            f"{len(unknown)} unknown ids, e.g. {unknown[0]!r}",
            "use ids from `attrib-bench export`",
        )
    missing = [i for i in expected if i not in position]
    if missing:
        raise SubmissionError(
            ids_path,
            f"{field}.ids",
            f"{len(missing)} ids missing, e.g. {missing[0]!r}",
            "provide a row for every exported id",
        )
    return np.array([position[i] for i in expected], dtype=np.int64)


def row_peaks(array: np.ndarray, path: Path, field: str) -> np.ndarray:
    """Largest absolute value of each row (float64), refusing NaN and inf.

    Reads the (possibly memory-mapped) array a bounded number of values at a time, with
    max/min reductions only (no temporary copy of a block), so a huge dense file costs no
    memory beyond its page cache.
    """
    n = array.shape[0]
    width = int(np.prod(array.shape[1:], dtype=np.int64))
    peaks = np.zeros(n, np.float64)
    if n == 0 or width == 0:
        return peaks
    step = max(1, _SCAN_ELEMENTS // width)
    for start in range(0, n, step):
        block = np.asarray(array[start : start + step]).reshape(-1, width)
        peak = np.maximum(block.max(axis=1), -block.min(axis=1)).astype(np.float64)
        bad = ~np.isfinite(peak)
        if bad.any():
            raise SubmissionError(
                path,
                field,
                f"NaN or inf values (first in row {start + int(np.argmax(bad))})",
                "replace non-finite values before submitting",
            )
        peaks[start : start + len(block)] = peak
    return peaks


def check_finite(array: np.ndarray, path: Path, field: str) -> None:
    """Refuse NaN/inf, reading the (possibly memory-mapped) array one chunk at a time."""
    row_peaks(array, path, field)


def _float_matrix(sub: Submission, field: str, rel: str) -> tuple[np.ndarray, Path, np.ndarray]:
    """A 2-D float array with its rows' largest absolute values (finite, checked)."""
    path = sub.path(rel, f"{field}.file")
    array = open_array(path, f"{field}.file")
    if array.ndim != 2 or array.shape[1] == 0:
        raise SubmissionError(
            path,
            f"{field}.file",
            f"expected a 2-D [rows, dim] array, got shape {array.shape}",
            "save a [num_ids, dim] matrix",
        )
    if array.dtype.name not in FLOAT_DTYPES:
        raise SubmissionError(
            path,
            f"{field}.file",
            f"dtype {array.dtype} is not float16, float32 or float64",
            "save float16, float32 or float64",
        )
    return array, path, row_peaks(array, path, f"{field}.file")


def _check_feature_rows(
    array: np.ndarray,
    peaks: np.ndarray,
    rows: np.ndarray,
    ids: tuple[str, ...],
    path: Path,
    field: str,
) -> None:
    """Every scored row must have a direction and fit the float32 scorer.

    A zero row has no cosine with anything, so its ranks would be arbitrary. Feature scores
    are computed in float32 after each row is divided by its largest value, so a nonzero
    float16/32 row is fine at any scale; a float64 row whose largest value lies outside
    float32's normal range would become inf or lose its digits in the cast, and is refused.
    """
    used = peaks[rows]
    bad = used == 0
    if array.dtype == np.float64:
        f32 = np.finfo(np.float32)
        bad |= (used > float(f32.max)) | (used < float(f32.smallest_normal))
    if not bad.any():
        return
    i = int(np.argmax(bad))
    if used[i] == 0:
        problem = f"the row of {ids[i]!r} is all zeros (a zero vector has no direction to rank by)"
        fix = "give every id a nonzero feature vector"
    else:
        problem = (
            f"the row of {ids[i]!r} has largest value {used[i]:.3g}, outside float32's range, "
            "which scoring uses"
        )
        fix = "rescale that row (cosine similarity does not change) or save float32"
    raise SubmissionError(path, f"{field}.file", problem, fix)


@dataclass(frozen=True)
class FeatureArrays:
    """Feature matrices with the row of each benchmark id (no copy of the big one)."""

    queries: np.ndarray
    query_rows: np.ndarray  # row for each evaluated query, in benchmark order
    candidates: np.ndarray
    candidate_rows: np.ndarray  # row for each candidate id, in benchmark order


def load_features(sub: Submission, bench: Benchmark) -> FeatureArrays:
    spec = sub.config["features"]
    q, q_path, q_peaks = _float_matrix(sub, "features.queries", spec["queries"]["file"])
    c, c_path, c_peaks = _float_matrix(sub, "features.candidates", spec["candidates"]["file"])
    if q.shape[1] != c.shape[1]:
        raise SubmissionError(
            c_path,
            "features.candidates.file",
            f"dim {c.shape[1]} differs from the queries' dim {q.shape[1]}",
            "use one feature space",
        )
    query_ids = tuple(x.query_id for x in bench.evaluated_queries)
    q_rows = _row_order(
        sub, "features.queries", spec["queries"].get("ids"), q.shape[0], query_ids, q_path
    )
    c_rows = _row_order(
        sub,
        "features.candidates",
        spec["candidates"].get("ids"),
        c.shape[0],
        bench.candidate_ids,
        c_path,
    )
    _check_feature_rows(q, q_peaks, q_rows, query_ids, q_path, "features.queries")
    _check_feature_rows(c, c_peaks, c_rows, bench.candidate_ids, c_path, "features.candidates")
    return FeatureArrays(q, q_rows, c, c_rows)


# --------------------------------------------------------------------------------------------
# similarity


def load_dense(sub: Submission, bench: Benchmark) -> np.ndarray:
    rel = sub.config["similarity"]["file"]
    matrix, path, _ = _float_matrix(sub, "similarity", rel)
    expected = (len(bench.evaluated_queries), len(bench.candidate_ids))
    if matrix.shape != expected:
        raise SubmissionError(
            path,
            "similarity.file",
            f"shape {matrix.shape}, expected {expected} (queries.tsv rows x candidates.txt rows)",
            "write the matrix in `attrib-bench export` order",
        )
    return matrix


@dataclass(frozen=True)
class TopK:
    indices: np.ndarray  # [Q, K] int64 columns of candidates.txt
    scores: np.ndarray  # [Q, K]
    positive_scores: list[np.ndarray]  # per query, its exemplars' scores


def load_topk(sub: Submission, bench: Benchmark) -> TopK:
    rel = sub.config["similarity"]["file"]
    path = sub.path(rel, "similarity.file")
    if path.suffix != ".safetensors":
        raise SubmissionError(
            path,
            "similarity.file",
            "a top-K submission is one .safetensors file",
            "store tensors indices, scores and positive_scores",
        )
    idx = open_array(path, "similarity", "indices")
    scores = open_array(path, "similarity", "scores")
    pos = open_array(path, "similarity", "positive_scores")
    n_q, n_c = len(bench.evaluated_queries), len(bench.candidate_ids)
    if idx.ndim != 2 or idx.dtype.kind != "i" or idx.shape[0] != n_q:
        raise SubmissionError(
            path,
            "similarity.indices",
            f"shape {idx.shape} {idx.dtype}, expected int [{n_q}, K]",
            "one row per query in queries.tsv",
        )
    if scores.shape != idx.shape or scores.dtype.name not in FLOAT_DTYPES:
        raise SubmissionError(
            path,
            "similarity.scores",
            f"shape {scores.shape} {scores.dtype}, expected float {idx.shape}",
            "one score per listed index",
        )
    k = idx.shape[1]
    if k < min(MIN_TOPK, n_c):
        raise SubmissionError(
            path,
            "similarity.indices",
            f"K = {k} is too small",
            f"list at least the top {MIN_TOPK} candidates per query (Recall@100)",
        )
    idx = np.asarray(idx)
    if idx.min(initial=0) < 0 or idx.max(initial=0) >= n_c:
        raise SubmissionError(
            path,
            "similarity.indices",
            f"index out of range [0, {n_c})",
            "use row numbers of candidates.txt",
        )
    srt = np.sort(idx, axis=1)
    if (srt[:, 1:] == srt[:, :-1]).any():
        row = int(np.argmax((srt[:, 1:] == srt[:, :-1]).any(axis=1)))
        raise SubmissionError(
            path,
            "similarity.indices",
            f"row {row} lists a candidate twice",
            "list each candidate at most once per query",
        )
    check_finite(scores, path, "similarity.scores")
    pairs = list(bench.positives())
    if pos.ndim != 1 or pos.shape[0] != len(pairs) or pos.dtype.name not in FLOAT_DTYPES:
        raise SubmissionError(
            path,
            "similarity.positive_scores",
            f"shape {pos.shape}, expected float [{len(pairs)}]",
            "one score per positives.tsv row",
        )
    check_finite(pos[:, None], path, "similarity.positive_scores")
    column = {c: i for i, c in enumerate(bench.candidate_ids)}
    pos = np.asarray(pos, np.float64)
    per_query: list[np.ndarray] = []
    start = 0
    scores = np.asarray(scores, np.float64)
    for qi, q in enumerate(bench.evaluated_queries):
        ex = bench.model(q.model_id).exemplar_ids
        mine = pos[start : start + len(ex)]
        start += len(ex)
        floor = scores[qi].min()
        listed = {int(c): s for c, s in zip(idx[qi], scores[qi], strict=True)}
        for e, s in zip(ex, mine, strict=True):
            col = column[e]
            if col in listed and listed[col] != s:
                raise SubmissionError(
                    path,
                    "similarity.positive_scores",
                    f"query {q.query_id}: exemplar {e} scores {s} but {listed[col]} in its top-K",
                    "write the same score in both places",
                )
            if col not in listed and s > floor:
                raise SubmissionError(
                    path,
                    "similarity.indices",
                    f"query {q.query_id}: "
                    f"exemplar {e} scores {s}, above the list's lowest "
                    f"{floor}, but is not listed",
                    "write the true top K",
                )
        per_query.append(mine)
    return TopK(idx, scores, per_query)
