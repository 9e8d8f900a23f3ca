"""``attrib-bench import-features abc``: AbC's precomputed features as a features submission.

The official release ships one folder per backbone, ``feats/<model>/``, holding
``laion_subset.pth`` (``{'feats': [N, D], 'paths': [...]}``, sorted file order) and one file
per test case named after its JSON (``test_bamfg.pth`` ...) with ``exemplar_paths``,
``exemplar_chunks`` (one (start, end) per model in JSON order), ``exemplar_tensors``,
``synth_paths`` / ``synth_ids`` / ``synth_tensors`` (per prompt type). They are torch
pickles, so they are read with ``torch.load(weights_only=True)`` only (tensors, lists, dicts,
tuples, numbers and strings; anything else is refused with one line).

Rows are matched to the benchmark by the official paths, which are its ids (LAION rows by file
name, ignoring the folder prefix and extension, so features of the PNG release match the JPEG
variant too). A row the benchmark does not have, or a benchmark id with no row, is an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from benchmark.abc_import import PART_JSON
from benchmark.errors import SubmissionError
from benchmark.splits import Benchmark

LAION_FILE = "laion_subset.pth"


def load_pth(path: Path) -> Any:
    """A torch file read with ``weights_only=True`` (no arbitrary unpickling), or one line."""
    import torch

    if not path.is_file():
        raise SubmissionError(path, None, "file not found", "check the features folder")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise SubmissionError(
            path,
            None,
            f"refused: not loadable with torch.load(weights_only=True) ({first})",
            "use the official feature files; other pickles are never loaded",
        ) from None


def _matrix(value: Any, path: Path, field: str, rows: int | None = None) -> np.ndarray:
    import torch

    if not isinstance(value, torch.Tensor) or value.ndim != 2 or not value.is_floating_point():
        raise SubmissionError(path, field, "expected a float [rows, dim] tensor", "re-download")
    if rows is not None and value.shape[0] != rows:
        raise SubmissionError(
            path, field, f"{value.shape[0]} rows for {rows} paths", "re-download the file"
        )
    out = value.float().numpy()
    if not np.isfinite(out).all():
        raise SubmissionError(path, field, "NaN or inf values", "re-download the file")
    return out


def _strings(value: Any, path: Path, field: str) -> list[str]:
    if not isinstance(value, list | tuple) or not all(isinstance(x, str) for x in value):
        raise SubmissionError(path, field, "expected a list of paths", "re-download the file")
    return list(value)


def laion_key(path: str) -> str:
    """``.../laion_subset/000123.png`` -> ``000123`` (folder prefix and extension dropped)."""
    name = path.replace("\\", "/").rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[0] if "." in name else name


def _rows(paths: list[str], path: Path, field: str, key=lambda p: p) -> dict[str, int]:
    out: dict[str, int] = {}
    for i, p in enumerate(paths):
        k = key(p.removeprefix("./"))
        if k in out:
            raise SubmissionError(path, field, f"duplicate path {p!r}", "re-download the file")
        out[k] = i
    return out


def _match(
    rows: dict[str, int], ids: tuple[str, ...] | list[str], path: Path, field: str, key
) -> list[int]:
    wanted = {key(i): i for i in ids}
    extra = [k for k in rows if k not in wanted]
    if extra:
        raise SubmissionError(
            path,
            field,
            f"{len(extra)} rows the benchmark does not have, e.g. {extra[0]!r}",
            "import features made for this benchmark (same dataset and test cases)",
        )
    missing = [i for i in ids if key(i) not in rows]
    if missing:
        raise SubmissionError(
            path,
            field,
            f"{len(missing)} benchmark ids have no row, e.g. {missing[0]!r}",
            "use the complete feature files of the release",
        )
    return [rows[key(i)] for i in ids]


def import_abc_features(feats_dir: str | Path, bench: Benchmark, out: str | Path) -> Path:
    """Write the features submission ``out`` from one backbone's official feature folder."""
    import torch
    from safetensors.torch import save_file

    feats_dir, out = Path(feats_dir), Path(out)
    lpath = feats_dir / LAION_FILE
    laion = load_pth(lpath)
    if not isinstance(laion, dict) or not {"feats", "paths"} <= laion.keys():
        raise SubmissionError(lpath, None, "expected {'feats', 'paths'}", "re-download it")
    lpaths = _strings(laion["paths"], lpath, "paths")
    lfeats = _matrix(laion["feats"], lpath, "feats", len(lpaths))
    d_rows = _match(
        _rows(lpaths, lpath, "paths", laion_key), bench.distractor_ids, lpath, "paths", laion_key
    )
    parts = sorted({q.part for q in bench.evaluated_queries}, key=lambda p: p.value)
    ex_feat: dict[str, np.ndarray] = {}
    q_feat: dict[str, np.ndarray] = {}
    for part in parts:
        path = feats_dir / f"{PART_JSON[part]}.pth"
        if not path.is_file():
            raise SubmissionError(
                path,
                None,
                f"no features for the benchmark's {part.value} queries",
                "add the file, or import the benchmark without this part (--test-cases)",
            )
        _read_test_case(load_pth(path), path, bench, part, ex_feat, q_feat)
    qids = [q.query_id for q in bench.evaluated_queries]
    ex_ids = list(bench.evaluated_exemplar_ids)
    _match({i: 0 for i in q_feat}, qids, feats_dir, "synth_paths", lambda p: p)
    _match({i: 0 for i in ex_feat}, ex_ids, feats_dir, "exemplar_paths", lambda p: p)
    dim = lfeats.shape[1]
    if any(v.shape[0] != dim for v in (*ex_feat.values(), *q_feat.values())):
        raise SubmissionError(feats_dir, None, "feature dims differ between files", "re-download")
    queries = np.stack([q_feat[i] for i in qids])
    candidates = np.concatenate([lfeats[d_rows], np.stack([ex_feat[e] for e in ex_ids])])
    out.mkdir(parents=True, exist_ok=True)
    save_file({"features": torch.from_numpy(queries)}, str(out / "query_features.safetensors"))
    save_file(
        {"features": torch.from_numpy(candidates)}, str(out / "candidate_features.safetensors")
    )
    (out / "query_ids.txt").write_text("".join(f"{i}\n" for i in qids), encoding="utf-8")
    cands = list(bench.distractor_ids) + ex_ids
    (out / "candidate_ids.txt").write_text("".join(f"{i}\n" for i in cands), encoding="utf-8")
    import yaml

    config = {
        "schema_version": 1,
        "name": f"abc-official-{feats_dir.name}".lower().replace("_", "-"),
        "kind": "features",
        "description": (
            f"AbC's precomputed {feats_dir.name} features (official release), imported with "
            "`attrib-bench import-features abc`; scored by cosine similarity like AbC."
        ),
        "license": "CC-BY-NC-SA-4.0",
        "authors": ["AbC authors (features)", "attrib-bench import-features"],
        "benchmark": f"{bench.name}@{bench.version}",
        "features": {
            "queries": {"file": "query_features.safetensors", "ids": "query_ids.txt"},
            "candidates": {"file": "candidate_features.safetensors", "ids": "candidate_ids.txt"},
        },
    }
    (out / "submission.yaml").write_text(yaml.safe_dump(config, sort_keys=False), "utf-8")
    return out


def _read_test_case(data: Any, path: Path, bench: Benchmark, part, ex_feat, q_feat) -> None:
    keys = {"exemplar_paths", "exemplar_chunks", "exemplar_tensors", "synth_paths"}
    keys |= {"synth_ids", "synth_tensors"}
    if not isinstance(data, dict) or not keys <= data.keys():
        raise SubmissionError(path, None, f"expected the keys {sorted(keys)}", "re-download it")
    models = [m for m in bench.models if m.part is part]
    ex_paths = _strings(data["exemplar_paths"], path, "exemplar_paths")
    ex = _matrix(data["exemplar_tensors"], path, "exemplar_tensors", len(ex_paths))
    chunks = data["exemplar_chunks"]
    if not isinstance(chunks, list | tuple) or len(chunks) != len(models):
        raise SubmissionError(
            path,
            "exemplar_chunks",
            f"{len(chunks) if isinstance(chunks, list | tuple) else '?'} models, the benchmark's "
            f"{part.value} has {len(models)}",
            "import features made for this benchmark",
        )
    for m, chunk in zip(models, chunks, strict=True):
        start, end = (int(x) for x in chunk)
        if tuple(ex_paths[start:end]) != m.exemplar_ids:
            raise SubmissionError(
                path,
                "exemplar_chunks",
                f"model {m.model_id!r}: exemplars differ from the benchmark's",
                "import features made for this benchmark",
            )
    for i, p in enumerate(ex_paths):
        ex_feat.setdefault(p, ex[i])
    if not all(isinstance(data[k], dict) for k in ("synth_paths", "synth_ids", "synth_tensors")):
        raise SubmissionError(path, "synth_paths", "expected {type: ...}", "re-download it")
    by_id = {q.query_id: q for q in bench.evaluated_queries}
    for ptype, plist in data["synth_paths"].items():
        field = f"synth_paths.{ptype}"
        paths = _strings(plist, path, field)
        feats = _matrix(
            data["synth_tensors"].get(ptype), path, f"synth_tensors.{ptype}", len(paths)
        )
        idx = data["synth_ids"].get(ptype)
        if not isinstance(idx, list | tuple) or len(idx) != len(paths):
            raise SubmissionError(path, f"synth_ids.{ptype}", "one index per path", "re-download")
        for i, (p, mi) in enumerate(zip(paths, idx, strict=True)):
            q = by_id.get(p)
            if q is None:
                raise SubmissionError(
                    path,
                    field,
                    f"query {p!r} is not in the benchmark",
                    "import features made for this benchmark",
                )
            if not 0 <= int(mi) < len(models) or models[int(mi)].model_id != q.model_id:
                raise SubmissionError(
                    path, f"synth_ids.{ptype}", f"{p!r}: wrong model index", "re-download it"
                )
            q_feat[p] = feats[i]
