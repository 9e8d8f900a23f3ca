"""Text formatting shared by the CLI, the leaderboard markdown, the site and the report.

One place decides how an estimate with its confidence interval reads ("0.412 [0.371, 0.455]"),
how a bounded estimate reads ("[0.250, 0.500]": the value is only known to lie in a range), and
how a plain-text table is laid out, so every surface prints the same numbers the same way.
"""

from __future__ import annotations

import math
from typing import Any

from benchmark.metrics import SHOWN

#: A calibrator threshold this far above exp(0) = 1 flattens every query's distribution.
UNIFORM_THRESHOLD = 1e3


def number(value: Any, spec: str = ".3f") -> str:
    """``value`` formatted with ``spec`` when it is a finite number, else as plain text.

    A page or table never fails on a malformed field (HTML pages escape the text).

    >>> number(0.41234), number(float("nan")), number("n/a")
    ('0.412', 'nan', 'n/a')
    """
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return format(value, spec)
    return str(value)


def estimate_parts(est: dict[str, Any], spec: str = ".3f") -> tuple[str, str]:
    """An estimate as two texts: the value (or its bounds when only bounded) and its CI.

    >>> estimate_parts({"value": 0.5, "ci_low": 0.25, "ci_high": 0.75})
    ('0.500', '[0.250, 0.750]')
    >>> estimate_parts({"value": None, "lower": 0.1, "upper": 0.2, "ci_low": 0.0, "ci_high": 0.3})
    ('[0.100, 0.200]', '[0.000, 0.300]')
    """
    if est.get("value") is None:
        value = f"[{number(est.get('lower'), spec)}, {number(est.get('upper'), spec)}]"
    else:
        value = number(est["value"], spec)
    return value, f"[{number(est.get('ci_low'), spec)}, {number(est.get('ci_high'), spec)}]"


def format_estimate(est: dict[str, Any] | None, spec: str = ".3f") -> str:
    """One metric cell as text: ``value [ci_low, ci_high]``; a bounded estimate shows its
    bounds only (its CI is in the result file); a missing cell is ``-``.

    >>> format_estimate({"value": 0.5, "ci_low": 0.25, "ci_high": 0.75})
    '0.500 [0.250, 0.750]'
    >>> format_estimate({"value": None, "lower": 0.1, "upper": 0.2})
    '[0.100, 0.200]'
    >>> format_estimate(None)
    '-'
    """
    if est is None:
        return "-"
    value, ci = estimate_parts(est, spec)
    return value if est.get("value") is None else f"{value} {ci}"


def table(rows: list[list[str]]) -> list[str]:
    """Left-aligned plain-text columns; the first row is the header, underlined.

    >>> print("\\n".join(table([["a", "bb"], ["ccc", "d"]])))
    a    bb
    ---  --
    ccc  d
    """
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def markdown_table(rows: list[list[str]]) -> list[str]:
    """A GitHub markdown table; the first row is the header.

    >>> markdown_table([["a", "b"], ["1", "2"]])
    ['| a | b |', '| --- | --- |', '| 1 | 2 |']
    """
    lines = ["| " + " | ".join(r) + " |" for r in rows]
    lines.insert(1, "| " + " | ".join("---" for _ in rows[0]) + " |")
    return lines


def calibrator_text(cal: dict[str, Any]) -> str:
    """The fitted calibrator in words: a threshold far above 1 means the fit found that the
    val scores carry no usable confidence, so say "uniform" rather than print a tau that no
    longer matters."""
    if cal["threshold"] > UNIFORM_THRESHOLD:
        return f"uniform over the candidates, b={number(cal['threshold'], '.3g')}"
    return f"tau={number(cal['temperature'], '.4g')}, b={number(cal['threshold'], '.4g')}"


#: The measure columns: those the registry marks shown (benchmark.metrics.MEASURES).
RESULT_MEASURES = SHOWN


def result_table(result: dict[str, Any]) -> str:
    """The human-readable summary of a result that ``evaluate`` prints."""
    head = ["test case", "prompt", "models", "queries", *RESULT_MEASURES]
    rows = [head]
    for cell in result["metrics"]:
        rows.append(
            [
                cell["test_case"],
                cell["prompt_type"],
                str(cell["num_models"]),
                str(cell["num_queries"]),
                *(format_estimate(cell["metrics"][m]) for m in RESULT_MEASURES),
            ]
        )
    b, s = result["benchmark"], result["submission"]
    title = (
        f"{s['name']} ({s['kind']}) on {b['name']} {b['version']} - "
        f"mean [{result['settings']['ci_level']:.0%} cluster-bootstrap CI], "
        f"ties {result['settings']['tie_policy']}"
    )
    out = [title, *table(rows)]
    cal = result["calibration"]
    if "test" in cal:
        t = cal["test"]
        out.append(
            f"calibration ({'fit on val' if cal['fitted_on'] == 'val' else 'stored'}, "
            f"{calibrator_text(cal['calibrator'])}): exemplar NLL {t['exemplar_nll']:.3f}, "
            f"exemplar mass {t['exemplar_mass']:.3f}, ECE {t['ece']:.4f}"
        )
    else:
        out.append(f"calibration skipped: {cal.get('skipped')}")
    out += [f"note: {f}" for f in result["flags"]]
    return "\n".join(out)
