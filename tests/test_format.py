"""benchmark.format: the one way estimates, CIs and tables read (CLI, markdown, report)."""

from __future__ import annotations

import pytest

from benchmark.format import (
    estimate_parts,
    format_estimate,
    markdown_table,
    number,
    result_table,
    table,
)


def test_an_estimate_with_its_ci():
    est = {"value": 0.41234, "ci_low": 0.371, "ci_high": 0.4555}
    assert format_estimate(est) == "0.412 [0.371, 0.456]"
    assert estimate_parts(est) == ("0.412", "[0.371, 0.456]")


def test_a_negative_estimate_and_a_signed_spec():
    est = {"value": -0.05, "ci_low": -0.125, "ci_high": 0.0}
    assert format_estimate(est) == "-0.050 [-0.125, 0.000]"
    assert estimate_parts(est, "+.3f") == ("-0.050", "[-0.125, +0.000]")


def test_a_bounded_estimate_shows_its_bounds():
    est = {"value": None, "lower": 0.25, "upper": 0.5, "ci_low": 0.2, "ci_high": 0.6}
    assert format_estimate(est) == "[0.250, 0.500]"
    assert estimate_parts(est) == ("[0.250, 0.500]", "[0.200, 0.600]")


def test_a_missing_estimate_is_a_dash():
    assert format_estimate(None) == "-"


@pytest.mark.parametrize(
    ("value", "text"),
    [(float("nan"), "nan"), (float("-inf"), "-inf"), (True, "True"), ("x", "x")],
)
def test_malformed_numbers_are_shown_not_raised(value, text):
    assert number(value) == text
    assert format_estimate({"value": value, "ci_low": 0, "ci_high": 1}).startswith(text)


def test_table_aligns_and_underlines():
    assert table([["name", "mAP"], ["a", "0.500"], ["longer", "1"]]) == [
        "name    mAP",
        "------  -----",
        "a       0.500",
        "longer  1",
    ]


def test_markdown_table():
    assert markdown_table([["a", "b"], ["1", "2"]]) == ["| a | b |", "| --- | --- |", "| 1 | 2 |"]


def _result(threshold: float) -> dict:
    est = {"value": 0.5, "ci_low": 0.4, "ci_high": 0.6}
    return {
        "benchmark": {"name": "abc-tiny", "version": "1.0.0"},
        "submission": {"name": "demo", "kind": "features"},
        "settings": {"ci_level": 0.95, "tie_policy": "pessimistic"},
        "metrics": [
            {
                "test_case": "object-seen",
                "prompt_type": "basic",
                "num_models": 3,
                "num_queries": 6,
                "metrics": {
                    "mAP": est,
                    "recall@5": {"value": None, "lower": 0.1, "upper": 0.3},
                    "recall@10": est,
                    "recall@100": est,
                },
            }
        ],
        "calibration": {
            "fitted_on": "val",
            "calibrator": {"temperature": 0.05, "threshold": threshold},
            "test": {"exemplar_nll": 1.0, "exemplar_mass": 0.25, "ece": 0.01},
        },
        "flags": ["a note"],
    }


def test_result_table():
    lines = result_table(_result(-0.5)).splitlines()
    assert lines[0] == (
        "demo (features) on abc-tiny 1.0.0 - mean [95% cluster-bootstrap CI], ties pessimistic"
    )
    assert lines[3].split("  ")[-4:] == [
        "0.500 [0.400, 0.600]",
        "[0.100, 0.300]",
        "0.500 [0.400, 0.600]",
        "0.500 [0.400, 0.600]",
    ]
    assert lines[4].startswith("calibration (fit on val, tau=0.05, b=-0.5): exemplar NLL 1.000")
    assert lines[5] == "note: a note"
    flat = result_table(_result(1.03e8)).splitlines()[4]
    assert flat.startswith("calibration (fit on val, uniform over the candidates, b=1.03e+08)")
