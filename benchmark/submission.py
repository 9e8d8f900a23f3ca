"""Submissions: ``submissions/<name>/submission.yaml`` plus code, features or scores.

Three kinds enter the pipeline at different points:

- ``extractor``: a Python class (see :class:`benchmark.extractors.FeatureExtractor`); the
  harness extracts and caches features. Its code runs in this process: review it first.
- ``features``: query and candidate feature arrays (``.npy`` or ``.safetensors``), rows in
  the order of an ``ids`` file or, by default, of ``attrib-bench export``.
- ``similarity``: ``dense`` (a [queries x candidates] matrix in export order, float16/32,
  memory-mapped) or ``topk`` (a safetensors file with ``indices`` int64 [Q, K] into
  ``candidates.txt``, ``scores`` [Q, K], and ``positive_scores`` [P] aligned with the rows of
  ``positives.tsv``), K >= 100.

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

CONFIG = "submission.yaml"
MIN_TOPK = max(RECALL_KS)
_FINITE_CHUNK = 1 << 16  # rows per NaN/inf check, to bound memory on huge files


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
        config = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
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


def check_finite(array: np.ndarray, path: Path, field: str) -> None:
    """Refuse NaN/inf, reading the (possibly memory-mapped) array one chunk at a time."""
    for start in range(0, array.shape[0], _FINITE_CHUNK):
        block = np.asarray(array[start : start + _FINITE_CHUNK])
        ok = np.isfinite(block).reshape(len(block), -1).all(axis=1)
        if not ok.all():
            raise SubmissionError(
                path,
                field,
                f"NaN or inf values (first in row {start + int(np.argmin(ok))})",
                "replace non-finite values before submitting",
            )


def _float_matrix(sub: Submission, field: str, rel: str) -> tuple[np.ndarray, Path]:
    path = sub.path(rel, f"{field}.file")
    array = open_array(path, f"{field}.file")
    if array.ndim != 2 or array.shape[1] == 0:
        raise SubmissionError(
            path,
            f"{field}.file",
            f"expected a 2-D [rows, dim] array, got shape {array.shape}",
            "save a [num_ids, dim] matrix",
        )
    if array.dtype.kind != "f":
        raise SubmissionError(
            path,
            f"{field}.file",
            f"dtype {array.dtype} is not floating point",
            "save float16 or float32",
        )
    check_finite(array, path, f"{field}.file")
    return array, path


@dataclass(frozen=True)
class FeatureArrays:
    """Feature matrices with the row of each benchmark id (no copy of the big one)."""

    queries: np.ndarray
    query_rows: np.ndarray  # row for each evaluated query, in benchmark order
    candidates: np.ndarray
    candidate_rows: np.ndarray  # row for each candidate id, in benchmark order


def load_features(sub: Submission, bench: Benchmark) -> FeatureArrays:
    spec = sub.config["features"]
    q, q_path = _float_matrix(sub, "features.queries", spec["queries"]["file"])
    c, c_path = _float_matrix(sub, "features.candidates", spec["candidates"]["file"])
    if q.shape[1] != c.shape[1]:
        raise SubmissionError(
            c_path,
            "features.candidates.file",
            f"dim {c.shape[1]} differs from the queries' dim {q.shape[1]}",
            "use one feature space",
        )
    q_rows = _row_order(
        sub,
        "features.queries",
        spec["queries"].get("ids"),
        q.shape[0],
        tuple(x.query_id for x in bench.evaluated_queries),
        q_path,
    )
    c_rows = _row_order(
        sub,
        "features.candidates",
        spec["candidates"].get("ids"),
        c.shape[0],
        bench.candidate_ids,
        c_path,
    )
    return FeatureArrays(q, q_rows, c, c_rows)


# --------------------------------------------------------------------------------------------
# similarity


def load_dense(sub: Submission, bench: Benchmark) -> np.ndarray:
    rel = sub.config["similarity"]["file"]
    matrix, path = _float_matrix(sub, "similarity", rel)
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
    if scores.shape != idx.shape or scores.dtype.kind != "f":
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
    if pos.ndim != 1 or pos.shape[0] != len(pairs) or pos.dtype.kind != "f":
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
