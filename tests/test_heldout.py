"""splits.generate.heldout: a recipe change split into the probed models and the others."""

import pytest

from splits.generate.heldout import held_out_change, probed_models


def row(model_id, part, recall):
    return {"model_id": model_id, "part": part, "customized": {"recall@10": recall}}


def test_probed_models_are_found_under_any_models_key():
    probe = {"probes": {"a": {"models": ["m1", "m2"]}, "b": [{"models": ["m3"]}]}, "x": 1}
    assert probed_models(probe) == {"m1", "m2", "m3"}


def test_change_is_split_into_probed_and_other_models():
    old = [row("m1", "p", 0.5), row("m2", "p", 0.0), row("m3", "p", 0.25), row("m4", "q", 0.5)]
    new = [row("m1", "p", 1.0), row("m2", "p", 0.0), row("m3", "p", 0.0), row("m4", "q", 0.5)]
    new.append(row("m5", "q", 1.0))  # not in the old report: left out
    got = {(p, g): (n, iv) for p, g, n, iv in held_out_change(new, old, {"m1"}, "recall@10")}
    assert set(got) == {("p", "probed"), ("p", "others"), ("q", "others")}
    n, iv = got[("p", "probed")]
    assert n == 1 and iv.value == pytest.approx(0.5) and iv.low == iv.high == pytest.approx(0.5)
    n, iv = got[("p", "others")]  # m2: 0, m3: -0.25
    assert n == 2 and iv.value == pytest.approx(-0.125)
    assert iv.low == pytest.approx(-0.25) and iv.high == pytest.approx(0.0)
    n, iv = got[("q", "others")]
    assert n == 1 and iv.value == 0.0


def test_command_pools_models_across_test_cases(tmp_path, monkeypatch, capsys):
    import json

    from splits.generate import heldout

    old = [row("train-obj-1", "train", 0.0), row("val-obj-2", "val", 0.5), row("s", "val", 0.0)]
    new = [row("train-obj-1", "train", 0.5), row("val-obj-2", "val", 1.0), row("s", "val", 1.0)]
    for name, rows in (("new", new), ("old", old)):
        (tmp_path / f"{name}.json").write_text(json.dumps({"results": [{"models": rows}]}))
    (tmp_path / "probe.json").write_text(json.dumps({"models": []}))
    argv = ["heldout", str(tmp_path / "new.json"), str(tmp_path / "old.json")]
    argv += ["--probe", str(tmp_path / "probe.json"), "--pool", "seen objects=*-obj-*"]
    monkeypatch.setattr("sys.argv", argv)
    heldout.main()
    out = capsys.readouterr().out
    assert "| seen objects | others: 2 | +0.500 [+0.500, +0.500] |" in out  # "s" is not pooled
    assert "| val | others: 2 | +0.750" in out
