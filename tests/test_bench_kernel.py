"""benchmarks/bench_kernel.py runs on a small size and checks its own counts."""

import runpy
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_kernel.py"


def test_small_run_prints_both_modes(capsys, monkeypatch):
    pytest.importorskip("numba")
    argv = [str(SCRIPT), "--queries", "40", "--candidates", "2500", "--repeats", "1"]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(SCRIPT), run_name="__main__")
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| 1 ") or line.startswith("| 4 ")]
    assert len(rows) == 2
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert all(float(c) > 0 for c in cells[1:])


def test_wrong_counts_fail(monkeypatch):
    """The self-check is live: a kernel that miscounts makes the script fail."""
    pytest.importorskip("numba")
    from benchmark import _kernels

    real = _kernels.count_and_insert

    def off_by_one(scores, thr, n, above, ties, top_val, top_idx, col0):
        real(scores, thr, n, above, ties, top_val, top_idx, col0)
        above[0, 0] += 1

    monkeypatch.setattr(_kernels, "count_and_insert", off_by_one)
    argv = [str(SCRIPT), "--queries", "8", "--candidates", "1500", "--repeats", "1"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(AssertionError, match="row 0 exemplar 0"):
        runpy.run_path(str(SCRIPT), run_name="__main__")
