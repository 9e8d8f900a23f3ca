"""The results store's rules: what may enter it, where it goes, and how it is written.

A store is a folder ``<root>/<benchmark>@<version>/<submission>.json.gz`` (``root`` is e.g.
``leaderboard/results``). Every rule here holds by construction, for every writer:

- names: benchmark name, version and submission name match ``NAME_PATTERN`` (in the result
  schema and here), and every path is resolved inside the root, so no name or symlink can
  send a write elsewhere;
- admission (``check_storable``): the result is scored with the canonical settings, on a
  registered benchmark version (its manifest sha256), with sane values (metrics in [0, 1] and
  inside their CI, counts non-negative integers, no control characters in strings);
- writes: check-then-write runs under an ``flock`` on ``<root>/.lock``; an existing entry is
  never replaced without ``replace=True``, whatever its hashes; bytes are deterministic.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmark.errors import AttribBenchError, ResultError
from benchmark.fileio import file_lock, json_bytes, write_bytes_atomic

#: Benchmark names, versions and submission names in a store: lower-case ASCII letters,
#: digits, ``.``, ``_``, ``-``; starting with a letter or digit; at most 64 characters.
NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
LOCK_FILE = ".lock"
SUFFIX = ".json.gz"
#: Slack for float rounding in the range and CI checks (a mean computed two ways).
VALUE_EPS = 1e-9
#: Fields whose text may hold line breaks and tabs (free prose); no other control character.
_PROSE = {"submission.description"}
#: Control characters (Unicode category Cc) and the bidi marks/overrides that reorder text.
_BIDI = "\u200e\u200f\u202a-\u202e\u2066-\u2069"
_CONTROL = re.compile(f"[\x00-\x1f\x7f-\x9f{_BIDI}]")
_CONTROL_IN_PROSE = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{_BIDI}]")


def check_name(value: Any, field: str, source: str | Path | None = None) -> str:
    """``value`` if it is a valid store name, else one line naming the field."""
    if not isinstance(value, str) or _NAME.fullmatch(value) is None:
        shown = repr(value) if not isinstance(value, str) else repr(value[:80])
        raise ResultError(
            source,
            field,
            f"{shown} is not a valid name: store names match {NAME_PATTERN}",
            "use lower-case ASCII letters, digits, '.', '_' and '-' only",
        )
    return value


def entry_key(result: dict[str, Any], source: str | Path | None = None) -> str:
    """``<benchmark>@<version>/<submission>``, after checking each part."""
    b, s = result.get("benchmark") or {}, result.get("submission") or {}
    name = check_name(b.get("name"), "benchmark.name", source)
    version = check_name(b.get("version"), "benchmark.version", source)
    return f"{name}@{version}/{check_name(s.get('name'), 'submission.name', source)}"


def inside(root: Path, path: Path, source: str | Path | None = None) -> Path:
    """``path`` resolved, if it lies inside ``root`` (resolved); else a one-line error."""
    base, full = root.resolve(), path.resolve()
    if not full.is_relative_to(base):
        raise ResultError(
            source, "submission.name", f"{path} resolves outside the store {base}", "rename it"
        )
    return full


def entry_path(root: str | Path, result: dict[str, Any], source: str | Path | None = None) -> Path:
    """Where ``root`` keeps ``result``; checked names, resolved inside ``root``."""
    root = Path(root)
    folder, name = entry_key(result, source).split("/")
    path = root / folder / f"{name}{SUFFIX}"
    inside(root, path, source)
    return path


# --------------------------------------------------------------------------------------------
# admission


def check_strings(obj: Any, source: str | Path | None, where: str = "") -> None:
    """Refuse NUL and other control characters (and bidi overrides) in any string or key."""
    if isinstance(obj, str):
        bad = (_CONTROL_IN_PROSE if where in _PROSE else _CONTROL).search(obj)
        if bad is not None:
            raise ResultError(
                source,
                where or "(top level)",
                f"holds the control character U+{ord(bad.group()):04X}",
                "remove it; results hold printable text only",
            )
    elif isinstance(obj, dict):
        for key, value in obj.items():
            field = f"{where}.{key}" if where else str(key)
            check_strings(key, source, where or "(keys)")
            check_strings(value, source, field)
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            check_strings(value, source, f"{where}.{i}")


def _count(value: Any, field: str, source: str | Path | None, least: int) -> None:
    if type(value) is not int or value < least:
        raise ResultError(
            source, field, f"{value!r} is not an integer >= {least}", "counts are whole numbers"
        )


def _unit(value: Any, field: str, source: str | Path | None) -> float:
    if type(value) not in (int, float) or not math.isfinite(value):
        raise ResultError(source, field, f"{value!r} is not a finite number", "regenerate it")
    if not -VALUE_EPS <= value <= 1 + VALUE_EPS:
        raise ResultError(
            source, field, f"{value} lies outside [0, 1]", "every metric is a fraction"
        )
    return float(value)


def check_values(result: dict[str, Any], source: str | Path | None = None) -> None:
    """Metrics in [0, 1] and inside their CI; counts non-negative integers."""
    for i, cell in enumerate(result.get("metrics", [])):
        where = f"metrics.{i}"
        _count(cell.get("num_models"), f"{where}.num_models", source, 1)
        _count(cell.get("num_queries"), f"{where}.num_queries", source, 1)
        for m, est in cell.get("metrics", {}).items():
            f = f"{where}.metrics.{m}"
            low, high = (_unit(est.get(k), f"{f}.{k}", source) for k in ("ci_low", "ci_high"))
            if est.get("value") is None:
                points = [("lower", _unit(est.get("lower"), f"{f}.lower", source))]
                points.append(("upper", _unit(est.get("upper"), f"{f}.upper", source)))
                if points[0][1] > points[1][1] + VALUE_EPS:
                    raise ResultError(
                        source, f, "lower bound above upper bound", "regenerate the result"
                    )
            else:
                points = [("value", _unit(est.get("value"), f"{f}.value", source))]
            for name, x in points:
                if not low - VALUE_EPS <= x <= high + VALUE_EPS:
                    raise ResultError(
                        source,
                        f"{f}.{name}",
                        f"{x} lies outside its confidence interval [{low}, {high}]",
                        "regenerate the result",
                    )
    for i, query in enumerate(result.get("queries", [])):
        for j, ex in enumerate(query.get("exemplars", [])):
            where = f"queries.{i}.exemplars.{j}"
            _count(ex.get("rank"), f"{where}.rank", source, 1)
            for k in ("above", "ties", "unresolved"):
                _count(ex.get(k), f"{where}.{k}", source, 0)


def check_canonical(settings: Any, source: str | Path | None, field: str = "settings") -> None:
    """Refuse settings other than ``EvalConfig.canonical()``'s."""
    from benchmark.evaluation import EvalConfig

    problem = EvalConfig.canonical_difference(settings)
    if problem is not None:
        raise ResultError(
            source,
            field,
            f"not the canonical settings ({problem}); "
            "only canonical results are ranked on a leaderboard",
            "re-run without --tie-policy/--seed/--bootstrap-samples overrides",
        )


def check_storable(result: dict[str, Any], source: str | Path | None = None) -> str:
    """Everything a result must satisfy to enter a store (beyond its schema); its key."""
    from benchmark.benchmarks import check_registered

    key = entry_key(result, source)
    origin = result["submission"].get("origin")
    if (result.get("environment") or {}).get("isolation") == "in-process (user object)":
        origin = origin or "python object"
    if origin is not None:  # benchmark.evaluate on an object or arrays: nothing to re-run
        raise ResultError(
            source,
            "submission.origin",
            f"scored from an in-memory {origin}, which no maintainer can re-run or verify",
            "save it as a submission folder and evaluate that (see submissions/README.md)",
        )
    check_strings(result, source)
    check_values(result, source)
    check_canonical(result.get("settings"), source)
    check_registered(result["benchmark"], source)
    return key


# --------------------------------------------------------------------------------------------
# reading and writing


def result_bytes(result: dict[str, Any]) -> bytes:
    """The deterministic bytes a store keeps for ``result``."""
    return json_bytes(result, gz=True)


def file_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@contextmanager
def locked(root: str | Path) -> Iterator[None]:
    """Hold the store's lock (``<root>/.lock``) for a check-then-write sequence."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise AttribBenchError(root, None, "the store is a file, not a folder", "fix the path")
    with file_lock(root / LOCK_FILE, "results store"):
        yield


def read_entry(root: str | Path, path: Path) -> tuple[dict[str, Any], str]:
    """A stored entry, checked (schema, admission, filed under its own key), and the sha256
    of the exact bytes it was parsed from."""
    from benchmark.fileio import MAX_JSON_BYTES, read_file_capped
    from benchmark.results import parse_result

    root = Path(root)
    inside(root, path, path)
    data = read_file_capped(path, "result file", MAX_JSON_BYTES)
    result = parse_result(data, path)
    check_storable(result, path)
    expected = entry_path(root, result, path)
    if expected.resolve() != path.resolve():
        raise ResultError(
            path,
            "submission.name",
            f"holds the result of {entry_key(result)}, filed under another name",
            f"move it to {expected}",
        )
    return result, file_sha256(data)


def store_result(
    root: str | Path,
    result: dict[str, Any],
    replace: bool = False,
    source: str | Path | None = None,
) -> Path:
    """Add ``result`` to the store at ``root``; refuse anything ``check_storable`` refuses,
    and an existing entry unless ``replace`` (a replaced verified entry loses its badge: the
    badge binds the old file's bytes)."""
    from benchmark.results import validate_result

    validate_result(result, source or "result")
    check_storable(result, source)
    root = Path(root)
    path = entry_path(root, result, source)
    data = result_bytes(result)
    with locked(root):
        if path.exists() or path.is_symlink():
            if not replace:
                raise ResultError(
                    path,
                    "submission.name",
                    _exists_problem(path, result),
                    "rename the submission, or pass --replace to supersede the entry "
                    "(a verified entry then loses its badge)",
                )
            if not path.is_file():
                raise ResultError(path, None, "is not a file", "remove it by hand")
        write_bytes_atomic(path, data)
    return path


def _exists_problem(path: Path, result: dict[str, Any]) -> str:
    from benchmark.results import load_result

    name = result["submission"]["name"]
    try:
        old = load_result(path)["submission"]["sha256"]
    except AttribBenchError:
        return f"an entry for {name} is already stored (unreadable)"
    new = result["submission"]["sha256"]
    if old != new:
        return f"an entry for {name} made from other files exists ({old[:12]}, new {new[:12]})"
    return f"an entry for {name} made from the same files exists"
