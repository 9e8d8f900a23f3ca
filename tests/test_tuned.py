"""Tuned heads: identity start, learning, val selection, determinism, the CLI round trip,
cached backbone features, and stored calibrators."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from baselines import catalog, tuned
from baselines.models import baseline_submission
from baselines.noweight import Pixels
from baselines.tuned import Heads, TrainData, TuneConfig, train_heads
from benchmark.cli import main
from benchmark.errors import AttribBenchError
from benchmark.evaluation import RunOptions, evaluate

QUIET = RunOptions(progress=False)


def test_identity_heads_rank_exactly_like_the_backbone():
    g = torch.Generator().manual_seed(0)
    q, x = torch.randn(5, 8, generator=g), torch.randn(7, 8, generator=g) * 3 - 1
    h = Heads(8)
    cos = torch.nn.functional.normalize(q, dim=1) @ torch.nn.functional.normalize(x, dim=1).T
    assert torch.allclose(h(q, "synth") @ h(x, "real").T, cos, atol=1e-6)
    assert float(h.identity_penalty().detach()) == 0.0


def shifted_domain(seed: int = 0, dim: int = 16, models: int = 24) -> TrainData:
    """Queries are their model's prototype seen through a fixed rotation (a "synthesis"
    domain shift); exemplars are the prototype plus noise. Heads can undo the rotation."""
    g = torch.Generator().manual_seed(seed)
    rot = torch.linalg.qr(torch.randn(dim, dim, generator=g))[0]
    protos = torch.randn(2 * models, dim, generator=g)

    def part(ids):
        ex = torch.cat([protos[i] + 0.3 * torch.randn(3, dim, generator=g) for i in ids])
        qs = torch.stack([(protos[i] + 0.3 * torch.randn(dim, generator=g)) @ rot for i in ids])
        index = [[3 * k, 3 * k + 1, 3 * k + 2] for k in range(len(ids))]
        return qs, ex, index

    tq, tx, tindex = part(range(models))
    vq, vx, vindex = part(range(models, 2 * models))
    positive = torch.zeros(len(tq), len(tx), dtype=torch.bool)
    for i, cols in enumerate(tindex):
        positive[i, cols] = True
    return TrainData(
        train_queries=tq,
        train_positive=positive,
        train_exemplars=tx,
        val_queries=vq,
        val_exemplars=vx,
        val_index=vindex,
        distractors=torch.randn(200, dim, generator=g),
        val_query_ids=[f"q{i}" for i in range(len(vq))],
        val_exemplar_ids=[tuple(f"e{i}-{j}" for j in range(3)) for i in range(len(vq))],
    )


def test_training_undoes_a_domain_shift_and_is_deterministic():
    data = shifted_domain()
    config = TuneConfig(epochs=60, lr=3e-2, patience=60, seed=3)
    heads, record = train_heads(data, config)
    assert record["val_mAP_identity"] < 0.5
    assert record["val_mAP_selected"] > record["val_mAP_identity"] + 0.3
    assert record["selected_epoch"] > 0
    again, record2 = train_heads(data, config)
    assert record2 == record
    for k, v in heads.state_dict().items():
        assert torch.equal(v, again.state_dict()[k])


def test_selection_never_reports_worse_than_the_identity():
    data = shifted_domain(seed=1)
    # Train labels that carry no information: shuffle the positives.
    g = torch.Generator().manual_seed(0)
    noise = TrainData(
        **{
            **data.__dict__,
            "train_positive": data.train_positive[
                torch.randperm(len(data.train_positive), generator=g)
            ],
        }
    )
    heads, record = train_heads(noise, TuneConfig(epochs=10, patience=3))
    assert record["val_mAP_selected"] >= record["val_mAP_identity"]
    if record["selected_epoch"] == 0:
        assert float(heads.identity_penalty().detach()) == 0.0
    assert abs(tuned.val_map(noise, heads) - record["val_mAP_selected"]) < 1e-12


class CountingPixels(Pixels):
    calls = 0

    def embed(self, batch):
        CountingPixels.calls += 1
        return super().embed(batch)


@pytest.fixture
def counting(monkeypatch):
    """Count backbone forward passes of the pixels baseline."""
    monkeypatch.setitem(catalog.CATALOG, "pixels", catalog.CATALOG["pixels"])
    monkeypatch.setattr("baselines.noweight.Pixels", CountingPixels)
    CountingPixels.calls = 0
    return CountingPixels


@pytest.mark.slow
def test_train_tuned_cli_round_trip_with_cached_backbone(tiny, counting, tmp_path):
    runner = CliRunner()
    args = ["train-tuned", "--backbone", "pixels", "-b", "abc-tiny", "--epochs", "3", "-q"]
    first = runner.invoke(main, [*args, "--out", str(tmp_path)])
    assert first.exit_code == 0, first.output
    assert "selected epoch" in first.output
    path = tmp_path / "pixels.tuned_abc-tiny.safetensors"
    assert path.is_file() and counting.calls > 0
    record = tuned.read_heads(path).record
    assert record["benchmark"] == "abc-tiny" and record["config"]["epochs"] == 3
    assert {"temperature", "threshold"} <= set(record["calibrator"])

    counting.calls = 0
    again = runner.invoke(main, [*args, "--out", str(tmp_path / "again")])
    assert again.exit_code == 0, again.output
    assert counting.calls == 0, "retraining must reuse the cached backbone features"
    assert (tmp_path / "again" / path.name).read_bytes() == path.read_bytes()  # deterministic

    # Usable like any baseline: evaluate finds the heads and their stored calibrator.
    sub = baseline_submission("pixels.tuned_abc-tiny", tmp_path)
    assert "heads:pixels.tuned_abc-tiny.safetensors" in sub.file_hashes
    result = evaluate(sub, tiny, options=QUIET)
    assert counting.calls == 0  # the distractors' backbone features came from the cache
    cal = result["calibration"]
    assert "stored with the submission" in cal["fitted_on"]
    assert cal["calibrator"] == {k: record["calibrator"][k] for k in ("temperature", "threshold")}


def test_stored_calibrator_is_the_one_used(tiny, tmp_path):
    heads = Heads(catalog.CATALOG["pixels"].dim)
    record = {
        "benchmark": "abc-tiny",
        "version": tiny.version,
        "backbone_weights_sha256": None,
        "calibrator": {"temperature": 0.5, "threshold": -0.25},
    }
    tuned.save_heads(tmp_path / "pixels.tuned_abc-tiny.safetensors", heads, record)
    r = evaluate(baseline_submission("pixels.tuned_abc-tiny", tmp_path), tiny, options=QUIET)
    assert r["calibration"]["calibrator"] == {"temperature": 0.5, "threshold": -0.25}
    # Identity heads rank exactly like the plain baseline.
    plain = evaluate(baseline_submission("pixels"), tiny, options=QUIET)
    assert r["metrics"] == plain["metrics"]
    assert plain["calibration"]["fitted_on"] == "val"


def test_heads_for_other_backbone_weights_are_refused(tmp_path):
    class Backbone:
        name, weights_sha256, random_weights = "dino_vitb16", "b" * 64, False
        batch_size = 8

        def preprocess(self, image):
            return image

    path = tuned.save_heads(
        tmp_path / "dino_vitb16.tuned_x.safetensors",
        Heads(4),
        {"backbone_weights_sha256": "a" * 64},
    )
    with pytest.raises(AttribBenchError, match="trained on backbone weights aaaa"):
        tuned.Tuned(Backbone(), tuned.read_heads(path))


def test_missing_heads_say_how_to_train_them(tmp_path, monkeypatch):
    monkeypatch.setattr(tuned, "SHIPPED_DIR", tmp_path)
    with pytest.raises(AttribBenchError, match="run attrib-bench train-tuned --backbone pixels"):
        baseline_submission("pixels.tuned_nowhere")
    (tmp_path / "pixels.tuned_nowhere.safetensors").write_bytes(b"garbage")
    with pytest.raises(AttribBenchError, match="not a head file"):
        baseline_submission("pixels.tuned_nowhere")


@pytest.mark.slow
def test_baselines_calibrate_stores_what_evaluate_then_uses(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(catalog, "CALIBRATOR_DIR", tmp_path)
    out = CliRunner().invoke(main, ["baselines", "calibrate", "color_histogram", "-b", "abc-tiny"])
    assert out.exit_code == 0, out.output
    path = tmp_path / f"color_histogram.abc-tiny@{tiny.version}.json"
    stored = json.loads(path.read_text())
    fresh = evaluate(baseline_submission("color_histogram"), tiny, options=QUIET)
    assert fresh["calibration"]["fitted_on"].startswith("val, stored")
    assert fresh["calibration"]["calibrator"] == stored["calibrator"]
    # A calibrator fitted on other features is ignored (refit on val).
    stored["feature_key"] = "something-else"
    path.write_text(json.dumps(stored))
    refit = evaluate(baseline_submission("color_histogram"), tiny, options=QUIET)
    assert refit["calibration"]["fitted_on"] == "val"
    assert refit["calibration"]["calibrator"] == fresh["calibration"]["calibrator"]


def test_train_tuned_help_states_the_real_defaults():
    """The CLI does not import baselines at start-up, so its help repeats TuneConfig's
    defaults as text: this keeps the two in step."""
    import dataclasses

    text = " ".join(CliRunner().invoke(main, ["train-tuned", "--help"]).output.split())
    for f in dataclasses.fields(TuneConfig):
        assert f"({f.default:g})" in text, f.name


def test_cli_imports_no_baselines_at_start_up():
    import subprocess
    import sys

    code = "import sys, benchmark.cli; print(any(m.startswith('baselines') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("backbone", ["pixels", "color_histogram", "random"])
def test_shipped_artefacts_match_the_code(backbone):
    """The heads, calibrators and results under baselines/ and leaderboard/ were made by the
    current code; after a change that alters features, rerun baselines/reproduce.sh."""
    from baselines.backbone import Baseline
    from baselines.catalog import read_calibrator
    from benchmark.benchmarks import resolve_benchmark
    from benchmark.results import load_result

    mini = resolve_benchmark("abc-mini")
    plain = Baseline(backbone)
    assert read_calibrator(backbone, "abc-mini", mini.version, plain.feature_key) is not None
    heads = tuned.find_heads(f"{backbone}.tuned_abc-mini")
    assert heads.path.parent == tuned.SHIPPED_DIR
    assert heads.record["backbone_spec"] == plain.spec
    assert heads.record["manifest_sha256"] == mini.manifest_sha256
    store = catalog.HERE.parent / "leaderboard" / "results" / f"abc-mini@{mini.version}"
    for name in (backbone, f"{backbone}.tuned_abc-mini"):
        stored = load_result(store / f"{name}.json.gz")
        assert stored["submission"]["sha256"] == baseline_submission(name).sha256, name
