"""Paired comparison of two results on the same benchmark version.

Per-query metrics are recomputed from each result's stored exemplar counts, matched by query
id, and the mean difference (A - B) gets a paired cluster-bootstrap interval: models are
resampled once and both entries are evaluated on the same draw.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmark import stats
from benchmark.errors import ResultError
from benchmark.metrics import MEASURES, per_query_bounds
from benchmark.types import TiePolicy


def counts_from_result(
    result: dict[str, Any],
) -> tuple[list[dict], np.ndarray, np.ndarray, np.ndarray]:
    records = result["queries"]
    e_max = max((len(r["exemplars"]) for r in records), default=1)
    arrays = {
        k: np.full((len(records), e_max), -1, np.int64) for k in ("above", "ties", "unresolved")
    }
    for i, r in enumerate(records):
        for j, e in enumerate(r["exemplars"]):
            for k in arrays:
                arrays[k][i, j] = e[k]
    return records, arrays["above"], arrays["ties"], arrays["unresolved"]


def per_query(result: dict[str, Any]) -> tuple[list[dict], dict[str, np.ndarray], bool]:
    """Query records, per-query measures (lower bounds) and whether they are exact."""
    records, above, ties, unresolved = counts_from_result(result)
    policy = TiePolicy(result["settings"]["tie_policy"])
    lower, upper = per_query_bounds(above, ties, unresolved, policy)
    exact = all(np.array_equal(lower[m], upper[m]) for m in lower)
    return records, lower, exact


def compare_results(
    a: dict[str, Any],
    b: dict[str, Any],
    *,
    seed: int = 0,
    samples: int = stats.DEFAULT_SAMPLES,
    level: float = stats.DEFAULT_LEVEL,
    names: tuple[str, str] = ("A", "B"),
) -> list[dict[str, Any]]:
    """Rows (test case, prompt type, measure, A, B, diff, CI) for every shared cell.

    ``names`` label the two results (usually their file paths) in error messages.
    """
    pair = f"{names[0]} vs {names[1]}"
    for key in ("name", "version", "manifest_sha256"):
        if a["benchmark"][key] != b["benchmark"][key]:
            raise ResultError(
                pair,
                f"benchmark.{key}",
                f"results differ ({a['benchmark'][key]} vs {b['benchmark'][key]})",
                "compare results of the same benchmark version",
            )
    if a["settings"]["tie_policy"] != b["settings"]["tie_policy"]:
        raise ResultError(
            pair,
            "settings.tie_policy",
            "results use different tie policies",
            "re-evaluate one of them with the other's --tie-policy",
        )
    rec_a, m_a, exact_a = per_query(a)
    rec_b, m_b, exact_b = per_query(b)
    if not (exact_a and exact_b):
        raise ResultError(
            names[1] if exact_a else names[0],
            "queries",
            "this result has bounded (top-K) metrics",
            "paired comparison needs exact per-query metrics",
        )
    index_b = {r["query_id"]: i for i, r in enumerate(rec_b)}
    missing = [r["query_id"] for r in rec_a if r["query_id"] not in index_b]
    if missing or len(rec_a) != len(rec_b):
        raise ResultError(
            pair,
            "queries",
            "the results do not cover the same queries",
            "compare complete results of the same benchmark version",
        )
    order = np.array([index_b[r["query_id"]] for r in rec_a])
    cells = sorted({(r["test_case"], r["prompt_type"]) for r in rec_a if r["test_case"] != "val"})
    rows = []
    for test_case, ptype in cells:
        sel = np.array([r["test_case"] == test_case and r["prompt_type"] == ptype for r in rec_a])
        models = np.array([r["model_id"] for r in rec_a])[sel]
        for m in MEASURES:
            va, vb = m_a[m.name][sel], m_b[m.name][order][sel]
            iv = stats.paired_difference(
                va,
                vb,
                models,
                seed=seed,
                samples=samples,
                level=level,
                stream=f"{test_case}/{ptype}",
            )
            rows.append(
                {
                    "test_case": test_case,
                    "prompt_type": ptype,
                    "measure": m.name,
                    "a": float(va.mean()),
                    "b": float(vb.mean()),
                    "diff": iv.value,
                    "ci_low": iv.low,
                    "ci_high": iv.high,
                    "significant": bool(iv.low > 0 or iv.high < 0),
                }
            )
    return rows


def comparison_lines(
    ra: dict[str, Any],
    rb: dict[str, Any],
    rows: list[dict[str, Any]],
    measures: tuple[str, ...] = ("mAP", "recall@10"),
) -> list[str]:
    """``compare_results`` rows of ``measures`` as text: A, B, A - B and the interval of the
    difference, starred where it excludes 0."""
    from benchmark.format import estimate_parts

    lines = [
        f"A = {ra['submission']['name']}, B = {rb['submission']['name']} "
        f"({ra['benchmark']['name']} {ra['benchmark']['version']})",
        f"{'test case':<14} {'prompt':<7} {'measure':<10} {'A':>7} {'B':>7} {'A-B':>7}  95% CI",
    ]
    for r in rows:
        if r["measure"] not in measures:
            continue
        ci = estimate_parts({"value": r["diff"], **r}, "+.3f")[1]
        lines.append(
            f"{r['test_case']:<14} {r['prompt_type']:<7} {r['measure']:<10} "
            f"{r['a']:7.3f} {r['b']:7.3f} {r['diff']:+7.3f}  {ci}{' *' if r['significant'] else ''}"
        )
    lines.append("* the interval excludes 0")
    return lines
