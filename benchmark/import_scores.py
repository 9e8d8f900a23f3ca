"""``attrib-bench import-scores``: other tools' attribution scores as a similarity submission.

Influence-style methods (AbU, TRAK-family, FastGDA) do not produce features; they write a
score for every (query, training image) pair, each tool in its own layout. This module turns
those files into a normal dense similarity submission (``scores.npy``: one row per query in
``attrib-bench export`` order, one column per ``candidates.txt`` line, higher = more
influential), so they are scored, bootstrapped and compared like any other entry.

Formats:

- ``abu``: AbU's results folder. Per query, ``influence/<synth path without synth/>/``
  holds ``influence.pkl`` (``{'influence': [E + N], 'rank': ...}``) or ``influence.npy``:
  the model's E exemplars FIRST (in its JSON order), then the N LAION rows; higher = more
  influential. ``rank`` is ignored (it is ``argsort(-influence)``).
- ``train_x_query``: one [train, query] matrix (dattri, Journey-TRAK); transposed.
- ``fastgda``: FastGDA's ``rank``: per query a full ``argsort`` of its influence, most
  influential first (position 0). The item at position p gets score G - p, so the order is
  kept exactly and no two items tie (whatever ties the tool's influence had were already
  broken by its argsort).
- ``generic``: one matrix with ``--orientation query_x_train|train_x_query`` and
  ``--lower-is-better`` (scores are negated: order reversed, ties stay ties).

Matrix rows and columns are matched to benchmark ids by ``--ids QUERY_IDS GALLERY_IDS``
(one id per line in the file's order; exemplars may come first or last: ids decide), or by
default follow ``queries.tsv`` and ``candidates.txt``. Every benchmark query must be scored:
a missing query is an error, never a zero that would move a mean. Every candidate id must be
present too, except the AbU layout, where a query's row has only its own exemplars: the
columns of other models' exemplars, which its ranking never reads, hold the row's minimum.

Matrices are read from ``.npy``/``.safetensors`` (memory-mapped), ``.pt``/``.pth``
(``torch.load(weights_only=True)``) or pickles (numpy arrays only,
:mod:`benchmark.safe_pickle`). float64 and integer input is written as float64 (no two
distinct scores are rounded into a tie), float16/32 as float32.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.errors import SubmissionError
from benchmark.fileio import open_array, read_id_list, sha256_file
from benchmark.splits import Benchmark

FORMATS = ("abu", "train_x_query", "fastgda", "generic")
ORIENTATIONS = ("query_x_train", "train_x_query")
SCORES_FILE = "scores.npy"
PARTIAL_FILE = ".scores.npy.partial"  # renamed to SCORES_FILE only when complete
CONFIG_FILE = "submission.yaml"
BLOCK_VALUES = 1 << 25  # values per block of rows converted at once (256 MB in float64)
#: Up to this many candidates, FastGDA positions are exact in float32.
FLOAT32_EXACT = 1 << 24
_PREFERRED = {"abu": ("influence",), "fastgda": ("rank",), "generic": ("influence", "scores")}


@dataclass(frozen=True)
class ScoreOptions:
    """How to read a score file (see the module docstring)."""

    orientation: str = "query_x_train"
    lower_is_better: bool = False
    query_ids: Path | None = None
    gallery_ids: Path | None = None
    key: str | None = None  # array inside a dict (dotted: test.rank); default by format
    name: str | None = None


def import_scores(
    fmt: str, file: str | Path, bench: Benchmark, out: str | Path, opts: ScoreOptions
) -> Path:
    """Write the similarity submission ``out`` from ``file`` in format ``fmt``."""
    file, out = Path(file), Path(out)
    if fmt not in FORMATS:
        raise SubmissionError(None, "FORMAT", f"unknown format {fmt!r}", f"use {FORMATS}")
    if opts.orientation not in ORIENTATIONS:
        raise SubmissionError(
            None, "--orientation", f"{opts.orientation!r}", f"use one of {ORIENTATIONS}"
        )
    if fmt != "generic" and (opts.lower_is_better or opts.orientation != "query_x_train"):
        raise SubmissionError(
            None,
            "--orientation/--lower-is-better",
            f"only for the generic format; {fmt} fixes its own",
            f"drop the option, or use: import-scores generic {file}",
        )
    out.mkdir(parents=True, exist_ok=True)
    # A failed import must not leave an old submission.yaml beside new, partial scores.
    (out / CONFIG_FILE).unlink(missing_ok=True)
    (out / SCORES_FILE).unlink(missing_ok=True)
    if fmt == "abu":
        if opts.query_ids or opts.gallery_ids:
            raise SubmissionError(
                None, "--ids", "not used by the abu format", "AbU's folders name each query"
            )
        digest, conversion = _write_abu(file, bench, out, opts.key)
    else:
        digest, conversion = _write_matrix(fmt, file, bench, out, opts)
    (out / PARTIAL_FILE).replace(out / SCORES_FILE)
    _write_config(fmt, file, digest, conversion, bench, out, opts.name)
    return out


# --------------------------------------------------------------------------------------------
# reading arrays


def load_scores_array(path: Path, key: str | None, preferred: tuple[str, ...] = ()) -> Any:
    """The score array in ``path`` (memory-mapped for .npy/.safetensors)."""
    suffix = path.suffix.lower()
    if not path.exists():
        raise SubmissionError(path, None, "file not found", "check the path")
    if suffix == ".npy":  # C or Fortran order (a saved M.T is common for train x query)
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
            raise SubmissionError(
                path, None, f"not a readable .npy array ({first})", "write it with numpy.save"
            ) from None
    if suffix == ".safetensors":
        return open_array(path, "FILE", key)
    if suffix in (".pt", ".pth"):
        from benchmark.abc_features import load_pth

        return _pick(load_pth(path), key, preferred, path)
    if suffix in (".pkl", ".pickle"):
        from benchmark.safe_pickle import load_numpy_pickle

        return _pick(load_numpy_pickle(path, "FILE"), key, preferred, path)
    raise SubmissionError(
        path, None, f"unsupported file type {suffix!r}", "use .npy, .safetensors, .pt or .pkl"
    )


def _as_array(obj: Any) -> np.ndarray | None:
    if isinstance(obj, np.ndarray):
        return obj
    if type(obj).__module__.startswith("torch") and hasattr(obj, "numpy"):
        t = obj.detach().cpu()
        return (t.double() if t.is_floating_point() and t.dtype.itemsize < 4 else t).numpy()
    if isinstance(obj, list | tuple) and obj and all(_as_array(x) is not None for x in obj):
        rows = [_as_array(x) for x in obj]
        if all(r.ndim == 1 and r.shape == rows[0].shape for r in rows):  # type: ignore[union-attr]
            return np.stack(rows)  # FastGDA's per-query lists
    return None


def _pick(obj: Any, key: str | None, preferred: tuple[str, ...], path: Path) -> np.ndarray:
    found: dict[str, np.ndarray] = {}

    def walk(o: Any, prefix: str, depth: int) -> None:
        arr = _as_array(o)
        if arr is not None:
            found[prefix] = arr
        elif isinstance(o, dict) and depth < 3:
            for k, v in o.items():
                walk(v, f"{prefix}.{k}" if prefix else str(k), depth + 1)

    walk(obj, "", 0)
    if key is not None:
        if key not in found:
            listed = ", ".join(sorted(found)) or "none"
            raise SubmissionError(path, "--key", f"no array {key!r} (arrays: {listed})", "fix it")
        return found[key]
    if "" in found:
        return found[""]
    named = [k for k in found if k.rsplit(".", 1)[-1] in preferred]
    choice = named if len(named) == 1 else list(found)
    if len(choice) != 1:
        listed = ", ".join(sorted(found)) or "none"
        raise SubmissionError(
            path, None, f"cannot tell which array holds the scores ({listed})", "pass --key"
        )
    return found[choice[0]]


def _check_numeric(arr: np.ndarray, path: Path, ndim: int) -> None:
    if arr.ndim != ndim or arr.dtype.kind not in "biuf" or 0 in arr.shape:
        want = "[rows, columns] matrix" if ndim == 2 else "vector"
        raise SubmissionError(
            path, None, f"expected a numeric {want}, got {arr.dtype} {arr.shape}", "fix the file"
        )


def _positions(
    ids_path: Path | None, n: int, expected: tuple[str, ...], path: Path, what: str
) -> np.ndarray:
    """For each expected id, its index along the file's ``what`` axis (n long)."""
    if ids_path is None:
        if n != len(expected):
            raise SubmissionError(
                path,
                None,
                f"{n} {what}, the benchmark has {len(expected)}",
                "follow `attrib-bench export` order, pass --ids, or check --orientation",
            )
        return np.arange(n)
    ids = read_id_list(ids_path, "--ids")
    if len(ids) != n:
        raise SubmissionError(ids_path, "--ids", f"{len(ids)} ids for {n} {what}", "one per row")
    where: dict[str, int] = {}
    for i, x in enumerate(ids):
        if x in where:
            raise SubmissionError(ids_path, "--ids", f"duplicate id {x!r}", "list each id once")
        where[x] = i
    known = set(expected)
    unknown = [x for x in ids if x not in known]
    if unknown:
        raise SubmissionError(
            ids_path,
            "--ids",
            f"{len(unknown)} ids are not in the benchmark, e.g. {unknown[0]!r}",
            "use ids from `attrib-bench export` (official paths for an imported AbC)",
        )
    missing = [x for x in expected if x not in where]
    if missing:
        raise SubmissionError(
            ids_path,
            "--ids",
            f"{len(missing)} of the benchmark's {what} have no scores, e.g. {missing[0]!r}",
            "score every query and candidate (a missing one is never counted as zero)",
        )
    return np.array([where[x] for x in expected], dtype=np.int64)


# --------------------------------------------------------------------------------------------
# writing


def _open_out(out: Path, shape: tuple[int, int], dtype) -> np.ndarray:
    path = out / PARTIAL_FILE
    path.unlink(missing_ok=True)
    return np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)


def _finite(block: np.ndarray, path: Path, first_row: int) -> None:
    bad = ~np.isfinite(block).all(axis=1)
    if bad.any():
        raise SubmissionError(
            path,
            None,
            f"NaN or inf scores (query row {first_row + int(np.argmax(bad))})",
            "replace non-finite values",
        )


def _write_matrix(
    fmt: str, path: Path, bench: Benchmark, out: Path, opts: ScoreOptions
) -> tuple[str, str]:
    arr = load_scores_array(path, opts.key, _PREFERRED.get(fmt, ()))
    _check_numeric(arr, path, 2)
    transpose = fmt == "train_x_query" or opts.orientation == "train_x_query"
    mat = arr.T if transpose else arr
    qids = tuple(q.query_id for q in bench.evaluated_queries)
    rows = _positions(opts.query_ids, mat.shape[0], qids, path, "queries")
    cols = _positions(opts.gallery_ids, mat.shape[1], bench.candidate_ids, path, "candidates")
    if fmt == "fastgda":
        if arr.dtype.kind not in "iu":
            raise SubmissionError(
                path, None, f"rank has dtype {arr.dtype}", "pass FastGDA's integer `rank`"
            )
        g = mat.shape[1]
        dtype = np.float32 if g <= FLOAT32_EXACT else np.float64
        conversion = (
            "FastGDA rank (argsort, most influential first) -> score G - position "
            f"(G = {g}); order kept, no ties"
        )
    else:
        wide = arr.dtype.kind in "iu" or arr.dtype == np.float64
        dtype = np.float64 if wide else np.float32
        conversion = ("train x query, transposed" if transpose else "query x train") + (
            "; lower is better: scores negated (order reversed, ties kept)"
            if opts.lower_is_better
            else "; higher is better, as is"
        )
    dest = _open_out(out, (len(qids), len(bench.candidate_ids)), dtype)
    step = max(1, BLOCK_VALUES // max(mat.shape[1], len(cols)))
    for start in range(0, len(rows), step):
        block = np.asarray(mat[rows[start : start + step]])
        if fmt == "fastgda":
            block = _rank_scores(block, path, start)
        block = np.asarray(block, np.float64)[:, cols]
        if opts.lower_is_better:
            block = -block
        _finite(block, path, start)
        dest[start : start + len(block)] = block
    dest.flush()
    del dest
    return sha256_file(path), conversion


def _rank_scores(ranks: np.ndarray, path: Path, first_row: int) -> np.ndarray:
    """Each row a full ranking (a permutation, best first) -> scores G - position."""
    g = ranks.shape[1]
    out = np.empty(ranks.shape, np.float64)
    value = np.arange(g, 0, -1, dtype=np.float64)
    for i, r in enumerate(ranks):
        r = r.astype(np.int64, copy=False)
        if r.min() < 0 or r.max() >= g or np.bincount(r, minlength=g).max() != 1:
            raise SubmissionError(
                path,
                None,
                f"rank row {first_row + i} is not a permutation of 0..{g - 1}",
                "pass the full argsort FastGDA writes (every candidate once per query)",
            )
        out[i, r] = value
    return out


def _abu_file(root: Path, qid: str) -> Path | None:
    rel = qid.removeprefix("dataset/").removeprefix("synth/")
    if ".." in Path(rel).parts or rel.startswith("/"):
        return None
    for base in (root, root / "influence"):
        for name in ("influence.pkl", "influence.npy"):
            if (base / rel / name).is_file():
                return base / rel / name
    return None


def _write_abu(root: Path, bench: Benchmark, out: Path, key: str | None) -> tuple[str, str]:
    if not root.is_dir():
        raise SubmissionError(
            root, None, "not a folder", "pass AbU's results folder (holding influence/)"
        )
    queries = bench.evaluated_queries
    found = [_abu_file(root, q.query_id) for q in queries]
    missing = [q.query_id for q, f in zip(queries, found, strict=True) if f is None]
    if missing:
        rel = missing[0].removeprefix("dataset/").removeprefix("synth/")
        raise SubmissionError(
            root,
            None,
            f"{len(missing)} of the benchmark's {len(queries)} queries have no influence file, "
            f"e.g. {rel}/influence.pkl",
            "run AbU on every task of the track (a missing query is never counted as zero)",
        )
    n_d = len(bench.distractor_ids)
    column = {c: j for j, c in enumerate(bench.candidate_ids)}
    dest = _open_out(out, (len(queries), len(bench.candidate_ids)), np.float64)
    listing = []
    files = [f for f in found if f is not None]  # all of them, as checked above
    for i, (q, f) in enumerate(zip(queries, files, strict=True)):
        vec = load_scores_array(f, key, _PREFERRED["abu"])
        _check_numeric(vec, f, 1)
        ex = bench.model(q.model_id).exemplar_ids
        if vec.shape[0] != len(ex) + n_d:
            raise SubmissionError(
                f,
                "influence",
                f"{vec.shape[0]} values; this benchmark needs {len(ex)} exemplars + {n_d} LAION "
                f"rows = {len(ex) + n_d}",
                "derive the AbU view with --num-distractors equal to AbU's --laion_subset_size",
            )
        row = np.asarray(vec, np.float64)
        _finite(row[None], f, i)
        full = np.full(len(bench.candidate_ids), row.min())  # other models' exemplars: unread
        full[:n_d] = row[len(ex) :]
        full[[column[e] for e in ex]] = row[: len(ex)]
        dest[i] = full
        listing.append(f"{sha256_file(f)}  {f.relative_to(root).as_posix()}\n")
    dest.flush()
    del dest
    digest = hashlib.sha256("".join(listing).encode()).hexdigest()
    conversion = (
        "AbU influence (exemplars first, then LAION rows; higher = more influential) placed "
        "by id; other models' exemplar columns hold the row minimum (never ranked)"
    )
    return digest, conversion


def _write_config(
    fmt: str,
    file: Path,
    digest: str,
    conversion: str,
    bench: Benchmark,
    out: Path,
    name: str | None,
) -> None:
    import yaml

    default = re.sub(r"[^A-Za-z0-9._-]+", "-", f"imported-{fmt}-{file.stem}")[:64].strip("-.")
    config = {
        "schema_version": 1,
        "name": name or default,
        "kind": "similarity",
        "description": (
            f"Scores imported with `attrib-bench import-scores {fmt}` from {file.name} "
            f"(sha256 {digest}{', over the per-query files' if fmt == 'abu' else ''}). "
            f"Conversion: {conversion}. Benchmark manifest sha256 {bench.manifest_sha256}."
        ),
        "license": "unspecified (the scores' authors)",
        "authors": ["attrib-bench import-scores"],
        "benchmark": f"{bench.name}@{bench.version}",
        "similarity": {"format": "dense", "file": SCORES_FILE},
    }
    from benchmark.schemas import validate

    validate(config, "submission", out / CONFIG_FILE)
    (out / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False), "utf-8")
