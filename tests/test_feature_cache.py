"""The feature cache: checksummed blocks, corrupt ones recomputed, concurrent cold starts,
a full disk, and keys no submission can choose."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_bad_input import assert_user_error, evaluate_args, invoke

from benchmark import features as feat
from benchmark import sandbox
from benchmark.evaluation import RunOptions, evaluate
from benchmark.submission import load_submission

SUBMISSIONS = Path(__file__).resolve().parents[1] / "submissions"
QUIET = RunOptions(progress=False, device="cpu")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cache of our own, and a copy of the example extractor."""
    monkeypatch.setenv("ATTRIB_BENCH_CACHE", str(tmp_path / "cache"))
    sub = tmp_path / "sub"
    shutil.copytree(SUBMISSIONS / "example_extractor", sub)
    return tmp_path / "cache", sub


def blocks(root: Path) -> list[Path]:
    return sorted((root / feat.CACHE_DIR).rglob("*.safetensors"))


def test_blocks_carry_a_checksum_and_pass_it(cache):
    root, sub = cache
    evaluate(sub, "abc-tiny", options=QUIET)
    files = blocks(root)
    assert files and all(p.parent.parent.name.startswith("sub-") for p in files)
    from safetensors import safe_open

    with safe_open(str(files[0]), framework="pt") as f:
        meta, tensor = f.metadata(), f.get_tensor("features")
    assert meta["sha256"] == feat.tensor_sha256(tensor)
    assert meta["dim"] == str(tensor.shape[1]) and meta["rows"] == str(tensor.shape[0])


@pytest.mark.parametrize("damage", ["flip-bytes", "valid-file-other-values", "nan", "truncate"])
def test_corrupt_block_is_recomputed_with_one_warning(damage, cache, capsys):
    root, sub = cache
    first = evaluate(sub, "abc-tiny", options=QUIET)
    path = blocks(root)[0]
    good = path.read_bytes()
    before = load_file(str(path))["features"].clone()  # not a view of the mmapped file
    if damage == "flip-bytes":
        data = bytearray(good)
        data[-8:] = bytes(255 - b for b in data[-8:])
        path.write_bytes(bytes(data))
    elif damage == "truncate":
        path.write_bytes(good[: len(good) // 2])
    else:  # a well-formed file whose values no longer match the recorded checksum
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
        t = load_file(str(path))["features"].clone()
        t[0, 0] = float("nan") if damage == "nan" else t[0, 0] + 1
        save_file({"features": t}, str(path), metadata=meta)
    capsys.readouterr()
    feat._WARNED.clear()
    second = evaluate(sub, "abc-tiny", options=QUIET)
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and str(path) in warnings[0] and "recomputing" in warnings[0]
    assert second["metrics"] == first["metrics"]
    assert torch.equal(load_file(str(path))["features"], before)  # rewritten, right values


@pytest.mark.slow
def test_concurrent_cold_starts_both_succeed(cache, tiny, tmp_path):
    root, sub = cache
    env = {**os.environ, "ATTRIB_BENCH_CACHE": str(root), "HF_HUB_OFFLINE": "1"}
    bench = tiny  # built once already, so both processes race on the features alone
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from benchmark.cli import main; main()",
                "evaluate",
                "-s",
                str(sub),
                "-b",
                str(bench.root),
                "-q",
                "--json",
                "--device",
                "cpu",
                "-o",
                str(tmp_path / f"o{i}"),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outs]
    a, b = (json.loads(o[0]) for o in outs)
    assert a["metrics"] == b["metrics"] and a["queries"] == b["queries"]
    assert not list((root / feat.CACHE_DIR).rglob("*.tmp")), "a temp file was left behind"
    assert not [p for p in (root / "sandbox").iterdir() if p.name != "logs"]


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_writing_the_cache_is_one_line(cache, monkeypatch, tmp_path):
    _, sub = cache
    monkeypatch.setattr(feat, "write_tensor_file", _enospc)
    result = invoke(*evaluate_args(sub, tmp_path, "--device", "cpu"))
    assert_user_error(result, "feature cache", "the disk is full")


def test_full_disk_writing_the_scratch_is_one_line(cache, monkeypatch, tmp_path):
    _, sub = cache
    monkeypatch.setattr(sandbox, "write_job", _enospc)
    result = invoke(*evaluate_args(sub, tmp_path, "--device", "cpu"))
    assert_user_error(result, "sandbox scratch", "the disk is full")


def test_a_submission_cannot_choose_its_cache_key_or_calibrator(cache):
    """It claims a baseline's cache folder and ships a perfect calibrator: both ignored."""
    root, sub = cache
    from baselines.models import Baseline

    claimed = Baseline("pixels").feature_key
    src = sub / "extractor.py"
    forged = {"temperature": 1e-9, "threshold": -1.0, "source": "forged"}
    src.write_text(
        src.read_text()
        + f"\nTinyPixels.feature_key = {claimed!r}\n"
        + f"TinyPixels.stored_calibrator = lambda self, name, version: {forged!r}\n"
    )
    result = evaluate(sub, "abc-tiny", options=QUIET)
    assert not (root / feat.CACHE_DIR / claimed).exists()
    key = feat.submission_cache_key(load_submission(sub).sha256)
    assert (root / feat.CACHE_DIR / key).is_dir()
    assert result["calibration"]["fitted_on"] == "val"


def test_cache_reads_never_start_the_child(cache, monkeypatch):
    _, sub = cache
    first = evaluate(sub, "abc-tiny", options=QUIET)

    def refuse(*args, **kwargs):
        raise AssertionError("a fully cached run started the extractor")

    monkeypatch.setattr(sandbox, "_run_child", refuse)
    assert evaluate(sub, "abc-tiny", options=QUIET)["metrics"] == first["metrics"]


def test_blocks_of_different_dims_in_one_cache_are_refused(cache):
    root, sub = cache
    evaluate(sub, "abc-tiny", options=QUIET)
    path = blocks(root)[0]
    t = torch.ones(load_file(str(path))["features"].shape[0], 3)
    save_file(
        {"features": t},
        str(path),
        metadata={"sha256": feat.tensor_sha256(t), "rows": str(len(t)), "dim": "3"},
    )
    with pytest.raises(Exception, match="different dims"):
        evaluate(sub, "abc-tiny", options=QUIET)
