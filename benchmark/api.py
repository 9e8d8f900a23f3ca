"""The Python API: ``evaluate(...)`` returns a :class:`Result`; ``load_result`` reads one back.

For notebooks and scripts (mteb's ``evaluate(model, tasks)``, lm-eval's ``simple_evaluate``)::

    from benchmark import evaluate, load_result

    result = evaluate(MyExtractor(), benchmark="abc-tiny")  # any object with preprocess/embed
    result.headline        # mean mAP over the test cells (the leaderboard's headline)
    print(result.table())  # the table `attrib-bench evaluate` prints
    result.save("runs/mine.json.gz")
    assert load_result("runs/mine.json.gz") == result

``evaluate`` also takes a submission folder, a catalog baseline name (``"pixels"``), feature
arrays ``(queries, candidates)`` in ``attrib-bench export`` order, or a dense score matrix
[queries x candidates]. The result dict behind a :class:`Result` is the same schema-checked
``result.json`` the CLI writes.

An in-memory object runs in this process, like the rest of the caller's code (nothing is
sandboxed: it is not submitted code). Its result records ``environment.isolation =
"in-process (user object)"`` and ``submission.origin``; a results store refuses results of
in-memory objects and arrays, since no maintainer can re-run them (see docs/security.md).
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.errors import AttribBenchError, SubmissionError
from benchmark.metrics import MEASURES, measure

_NAME = re.compile(r"[^a-z0-9._-]+")
_ARRAY_NAMES = {
    "queries": "queries array",
    "candidates": "candidates array",
    "scores": "score matrix",
}


@dataclass(frozen=True, eq=True)
class Result:
    """A thin, read-only view of one result dict (``result.json``); equal when the dicts are."""

    data: dict[str, Any]

    @classmethod
    def load(cls, path: str | Path) -> Result:
        """Read a stored result of any known schema version (upgraded), see :func:`load_result`."""
        from benchmark.results import load_result as read

        return cls(read(path))

    @property
    def headline(self) -> float:
        """The headline score: the registry's headline measure (mAP) averaged over the test
        cells (a bounded cell counts at its lower bound), as the leaderboard ranks entries."""
        from benchmark.ranking import headline_score

        return headline_score(self.data)

    @property
    def cells(self) -> list[dict[str, Any]]:
        """Per test case x prompt type: counts and each measure's estimate with its CI."""
        return self.data["metrics"]

    @property
    def measures(self) -> tuple[str, ...]:
        """Names of the measures this result holds, in registry order (an upgraded older
        result may lack newer ones, e.g. recall_norm@K before schema 2)."""
        held = {m for cell in self.cells for m in cell["metrics"]}
        known = [m.name for m in MEASURES if m.name in held]
        return (*known, *sorted(held - set(known)))

    @property
    def name(self) -> str:
        return self.data["submission"]["name"]

    def summary(self) -> str:
        """One line: what was scored on what, and the headline score."""
        b, s = self.data["benchmark"], self.data["submission"]
        head = next(m for m in MEASURES if m.headline).name
        isolation = self.data["environment"].get("isolation")
        ran = f"; ran {isolation}" if isolation else ""
        return (
            f"{s['name']} ({s['kind']}) on {b['name']} {b['version']}: "
            f"{head} {self.headline:.4f} (mean over {len(self.cells)} test cells){ran}"
        )

    def table(self) -> str:
        """The table ``attrib-bench evaluate`` prints for this result."""
        from benchmark.format import result_table

        return result_table(self.data)

    def to_dataframe(self):
        """A tidy pandas DataFrame: one row per cell and measure, with the estimate, its
        bounds (top-K submissions) and CI, and the measure's direction."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError(
                "Result.to_dataframe needs pandas (pip install pandas); "
                "Result.cells has the same numbers as plain dicts"
            ) from None
        rows = []
        for cell in self.cells:
            for name in self.measures:
                est = cell["metrics"].get(name)
                if est is None:
                    continue
                try:
                    higher = measure(name).higher_is_better
                except KeyError:
                    higher = None
                rows.append(
                    {
                        "test_case": cell["test_case"],
                        "prompt_type": cell["prompt_type"],
                        "num_models": cell["num_models"],
                        "num_queries": cell["num_queries"],
                        "measure": name,
                        "value": est.get("value"),
                        "lower": est.get("lower", est.get("value")),
                        "upper": est.get("upper", est.get("value")),
                        "ci_low": est["ci_low"],
                        "ci_high": est["ci_high"],
                        "higher_is_better": higher,
                    }
                )
        return pd.DataFrame(rows)

    def to_dict(self) -> dict[str, Any]:
        return self.data

    def save(self, path: str | Path) -> Path:
        """Write the result as JSON (gzip when ``path`` ends in ``.gz``; a folder gets
        ``result.json``); deterministic bytes, written atomically. Returns the file's path."""
        from benchmark.fileio import write_json

        path = Path(path)
        if path.is_dir():
            path = path / "result.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, self.data)
        return path

    def __repr__(self) -> str:
        return f"Result({self.summary()})"


def load_result(path: str | Path) -> Result:
    """Read ``result.json`` / ``.json.gz`` of any schema version this harness knows, upgraded
    through ``benchmark.results.UPGRADES`` and schema-checked; one-line error otherwise."""
    return Result.load(path)


# --------------------------------------------------------------------------------------------
# evaluate


def _split_settings(settings: dict[str, Any]):
    """``EvalConfig`` and ``RunOptions`` from keyword settings; one line for an unknown one."""
    from benchmark.evaluation import EvalConfig, RunOptions
    from benchmark.types import TiePolicy

    config_keys = {f.name for f in fields(EvalConfig)}
    option_keys = {f.name for f in fields(RunOptions)}
    unknown = sorted(set(settings) - config_keys - option_keys)
    if unknown:
        raise AttribBenchError(
            None,
            unknown[0],
            "not a setting of evaluate",
            f"use one of {', '.join(sorted(config_keys | option_keys))}",
        )
    config = {k: v for k, v in settings.items() if k in config_keys}
    if "tie_policy" in config:
        config["tie_policy"] = TiePolicy(config["tie_policy"])
    options = {k: v for k, v in settings.items() if k in option_keys}
    options.setdefault("progress", False)
    return EvalConfig(**config), options


def _default_name(obj: Any) -> str:
    name = _NAME.sub("-", type(obj).__name__.lower()).strip("-._")
    return name[:64] or "python-object"


def _check_name(name: str) -> str:
    from benchmark.store import NAME_PATTERN

    if not isinstance(name, str) or not re.fullmatch(NAME_PATTERN, name):
        raise AttribBenchError(
            None, "name", f"{name!r} is not a valid submission name", "use [a-z0-9._-], <= 64"
        )
    return name


def _as_array(x: Any, field: str) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, without importing torch here
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim != 2 or arr.dtype.kind != "f":
        raise AttribBenchError(
            None,
            field,
            f"a {arr.ndim}-d {arr.dtype} array",
            "pass a 2-d float16/32/64 array (rows in `attrib-bench export` order)",
        )
    return arr


def _is_arrays(obj: Any) -> bool:
    if isinstance(obj, tuple | list):
        return len(obj) == 2 and all(hasattr(a, "shape") for a in obj)
    return hasattr(obj, "shape") and hasattr(obj, "dtype")


@contextmanager
def _array_submission(obj: Any, name: str | None) -> Iterator[Any]:
    """Arrays written as a features or dense-similarity submission in a temporary folder, so
    they pass every check a submitted file passes (shape, dtype, finite, non-zero rows)."""
    from benchmark.submission import Submission

    with tempfile.TemporaryDirectory(prefix="attrib-bench-arrays-") as tmp:
        root = Path(tmp).resolve()
        if isinstance(obj, tuple | list):
            queries, candidates = _as_array(obj[0], "queries"), _as_array(obj[1], "candidates")
            np.save(root / "queries.npy", queries, allow_pickle=False)
            np.save(root / "candidates.npy", candidates, allow_pickle=False)
            config = {
                "name": _check_name(name or "features"),
                "kind": "features",
                "description": "in-memory feature arrays (queries, candidates)",
                "features": {
                    "queries": {"file": "queries.npy"},
                    "candidates": {"file": "candidates.npy"},
                },
            }
        else:
            np.save(root / "scores.npy", _as_array(obj, "scores"), allow_pickle=False)
            config = {
                "name": _check_name(name or "scores"),
                "kind": "similarity",
                "description": "in-memory dense score matrix [queries x candidates]",
                "similarity": {"format": "dense", "file": "scores.npy"},
            }
        try:
            yield Submission(root, config)
        except AttribBenchError as exc:  # name the caller's array, not our temporary file
            if exc.source is not None and exc.source.startswith(str(root)):
                stem = Path(exc.source).stem
                exc.source = f"<in-memory {_ARRAY_NAMES.get(stem, 'arrays')}>"
                exc.args = (exc.line(),)
            raise


def _user_extractor(obj: Any, name: str | None):
    from benchmark.evaluation import UserExtractor
    from benchmark.extractors import check_extractor

    missing = check_extractor(obj)
    if missing:
        raise SubmissionError(
            None,
            type(obj).__name__,
            f"missing {', '.join(missing)}",
            "implement preprocess(image) and embed(batch)",
        )
    cls = type(obj)
    config = {
        "name": _check_name(name or _default_name(obj)),
        "kind": "extractor",
        "description": f"in-memory {cls.__module__}.{cls.__qualname__} object",
        "extractor": {"entry": f"{cls.__module__}:{cls.__qualname__}"},
    }
    return UserExtractor(Path(f"<{cls.__qualname__} object>"), config, hashes={}, extractor=obj)


def evaluate(
    model_or_submission: Any,
    benchmark: str | Path | None = None,
    *,
    name: str | None = None,
    weights: str | Path | None = None,
    **settings: Any,
) -> Result:
    """Score an extractor object, a submission folder, a baseline or arrays on a benchmark.

    Args:
        model_or_submission: one of
            - an object with ``preprocess(image)`` and ``embed(batch)`` (and optionally
              ``embed_query``, ``to``, ``batch_size``; see ``benchmark.extractors``): run
              in this process, no feature cache;
            - a submission folder (or its submission.yaml), e.g. ``"submissions/mine"``;
            - a catalog baseline name, e.g. ``"pixels"`` (``attrib-bench list baselines``);
            - ``(query_features, candidate_features)``: 2-d float arrays or tensors, rows in
              ``attrib-bench export`` order (queries.tsv, candidates.txt);
            - a dense score matrix [queries x candidates] in that order.
        benchmark: registered name, folder or ``hf://`` spec; default: the one a submission
            names, else the default benchmark (AbC-mini).
        name: the submission name recorded in the result (objects and arrays only).
        weights: weights file or folder for a baseline that needs one.
        **settings: ``EvalConfig`` fields (seed, tie_policy, bootstrap_samples, ci_level,
            top_n, store_top, ece_bins) and ``RunOptions`` fields (device, batch_size,
            progress (default False here), cache, sandbox).

    Returns:
        A :class:`Result` over the schema-valid result dict.

    Raises:
        AttribBenchError: bad input, with a one-line message naming the field and the fix.
    """
    from benchmark.evaluation import RunOptions
    from benchmark.evaluation import evaluate as run
    from benchmark.schemas import validate
    from benchmark.submission import Submission

    config, options = _split_settings(settings)
    obj = model_or_submission
    if name is not None and (isinstance(obj, str | Path | Submission)):
        raise AttribBenchError(
            None, "name", "applies to objects and arrays only", "rename the submission folder"
        )
    if weights is not None and not isinstance(obj, str):
        raise AttribBenchError(None, "weights", "applies to a baseline name only", "drop it")
    origin = None
    if isinstance(obj, Submission):
        result = run(obj, benchmark, config, RunOptions(**options))
    elif isinstance(obj, str | Path):
        result = run(_path_or_baseline(obj, weights), benchmark, config, RunOptions(**options))
    elif _is_arrays(obj):
        origin = "arrays"
        with _array_submission(obj, name) as sub:
            result = run(sub, benchmark, config, RunOptions(**options))
    elif hasattr(obj, "preprocess") or hasattr(obj, "embed"):
        origin = "python object"
        options["cache"] = False  # the object's code has no hash: a cache could go stale
        result = run(_user_extractor(obj, name), benchmark, config, RunOptions(**options))
    else:
        raise AttribBenchError(
            None,
            "model_or_submission",
            f"a {type(obj).__name__} is not something evaluate scores",
            "pass an object with preprocess/embed, a submission folder, a baseline name, "
            "(queries, candidates) arrays or a score matrix",
        )
    if origin is not None:
        result["submission"]["origin"] = origin
        validate(result, "result", "result")
    return Result(result)


def _path_or_baseline(spec: str | Path, weights: str | Path | None):
    """A folder (anything that exists, or looks like a path) or a catalog baseline name."""
    from benchmark.submission import load_submission

    text = str(spec)
    if isinstance(spec, Path) or Path(text).exists() or "/" in text or "\\" in text:
        if weights is not None:
            raise AttribBenchError(None, "weights", "applies to a baseline name only", "drop it")
        return load_submission(spec)
    from baselines.models import baseline_submission

    return baseline_submission(text, weights)
