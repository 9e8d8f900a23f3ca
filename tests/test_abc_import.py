"""Importing the official AbC release: a miniature of its layout, JSON schema and files.

The miniature follows the official conventions exactly: JSON paths start with ``dataset/``,
synthesized images are listed as ``dataset/synth/...`` while the Hub stores them under
``synth_test/``, exemplars are JPEGs, LAION images PNGs named by index; features and weights
are torch files with the official keys, written with ``torch.save``.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from benchmark import abc_import
from benchmark.abc_features import import_abc_features
from benchmark.abc_import import import_abc, parse_test_cases
from benchmark.cli import main
from benchmark.errors import AttribBenchError
from benchmark.evaluation import EvalConfig, RunOptions, evaluate
from benchmark.folder_benchmark import FolderBenchmark, verify_files
from benchmark.splits import load_benchmark
from benchmark.types import Part

N_LAION = 30
DIM = 8
# test JSON -> (folder, [(class_id, category, n_exemplars)], prompt types)
CASES = {
    "test_observed_imagenet": (
        "imagenet",
        [("n01518878_0008", "bird"), ("n01530575_0003", "bird")],
        ("media", "gpt"),
    ),
    "test_unobserved_imagenet": (
        "imagenet",
        [("n02085620_0001", "dog"), ("n02086240_0004", "dog")],
        ("media", "gpt"),
    ),
    "test_bamfg": ("bamfg", [("101549_0", None), ("204311_2", None)], ("gpt", "object")),
    "test_artchive": ("artchive", [("african", None), ("cubism", None)], ("gpt", "object")),
    "val_imagenet": ("imagenet", [("n03000134_0002", "fence")], ("media", "gpt")),
}
SAMPLES = 3  # per prompt type per model (40 in the release)


def _image(rng: np.random.Generator, fmt: str) -> bytes:
    arr = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def build_miniature(root: Path, seed: int = 0) -> Path:
    """``root/dataset`` laid out like the official release (Hub variant: synth_test/)."""
    rng = np.random.default_rng(seed)
    ds = root / "dataset"

    def put(official: str, fmt: str) -> None:
        rel = official.removeprefix("dataset/")
        if rel.startswith("synth/"):
            rel = "synth_test/" + rel.removeprefix("synth/")
        path = ds / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_image(rng, fmt))

    for name, (folder, models, ptypes) in CASES.items():
        entries = []
        for k, (class_id, category) in enumerate(models):
            if folder == "imagenet":
                wnid = class_id.split("_")[0]
                ex = [f"dataset/exemplar/imagenet/images/{wnid}/ILSVRC2012_val_{k:08d}.JPEG"]
            else:
                ex = [
                    f"dataset/exemplar/{folder}/images/{class_id}/{class_id}_{j}.jpg"
                    for j in range(1 + k)
                ]
            synth = {
                t: [
                    f"dataset/synth/{folder}/{t}/{class_id}/samples/{i:05d}.png"
                    for i in range(SAMPLES)
                ]
                for t in ptypes
            }
            for p in ex:
                put(p, "JPEG")
            for paths in synth.values():
                for p in paths:
                    put(p, "PNG")
            entries.append(
                {"exemplar": ex, "synth": synth, "class_id": class_id, "category": category}
            )
        (ds / "json").mkdir(parents=True, exist_ok=True)
        (ds / "json" / f"{name}.json").write_text(json.dumps(entries))
    for i in range(N_LAION):
        put(f"dataset/laion_subset/{i:09d}.png", "PNG")
    return ds


def write_official_features(ds: Path, out: Path, seed: int = 1) -> Path:
    """``feats/<model>/`` with the official keys: random features (no ties)."""
    g = torch.Generator().manual_seed(seed)
    out.mkdir(parents=True, exist_ok=True)
    laion = sorted(p.name for p in (ds / "laion_subset").iterdir())
    torch.save(
        {
            "feats": torch.randn(len(laion), DIM, generator=g),
            "paths": [f"dataset/laion_subset/{n}" for n in laion],
        },
        out / "laion_subset.pth",
    )
    for name in CASES:
        entries = json.loads((ds / "json" / f"{name}.json").read_text())
        data = {"exemplar_paths": [], "exemplar_chunks": [], "synth_paths": {}, "synth_ids": {}}
        for i, e in enumerate(entries):
            start = len(data["exemplar_paths"])
            data["exemplar_paths"] += e["exemplar"]
            data["exemplar_chunks"].append((start, start + len(e["exemplar"])))
            for t, paths in e["synth"].items():
                data["synth_paths"].setdefault(t, []).extend(paths)
                data["synth_ids"].setdefault(t, []).extend([i] * len(paths))
        data["exemplar_tensors"] = torch.randn(len(data["exemplar_paths"]), DIM, generator=g)
        data["synth_tensors"] = {
            t: torch.randn(len(p), DIM, generator=g) for t, p in data["synth_paths"].items()
        }
        torch.save(data, out / f"{name}.pth")
    return out


def official_reference(feats: Path, name: str, ks=(5, 10, 100)) -> dict[str, dict[str, float]]:
    """AbC's evaluation re-implemented in numpy: per prompt type, mean AP and recall@K."""

    def unit(x):
        x = np.asarray(x, np.float64)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    laion = unit(torch.load(feats / "laion_subset.pth", weights_only=True)["feats"])
    data = torch.load(feats / f"{name}.pth", weights_only=True)
    ex = unit(data["exemplar_tensors"])
    out = {}
    for t, synth in data["synth_tensors"].items():
        aps, recalls = [], []
        for idx, q in zip(data["synth_ids"][t], unit(synth), strict=True):
            a, b = data["exemplar_chunks"][idx]
            gallery = np.concatenate([laion, ex[a:b]])
            order = np.argsort(-(gallery @ q))
            hits = order >= len(laion)
            ranks = np.flatnonzero(hits) + 1
            aps.append(np.mean(np.arange(1, len(ranks) + 1) / ranks))
            recalls.append([hits[:k].sum() / (b - a) for k in ks])
        out[t] = {"mAP": float(np.mean(aps))}
        out[t].update(
            {f"recall@{k}": float(v) for k, v in zip(ks, np.mean(recalls, 0), strict=True)}
        )
    return out


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    root = tmp_path_factory.mktemp("abc-release")
    ds = build_miniature(root)
    dest = root / "bench"
    bench = import_abc(ds, dest, parts=parse_test_cases([]), show_progress=False)
    return ds, dest, bench


def test_import_ids_parts_and_order(mini):
    ds, dest, bench = mini
    assert isinstance(bench, FolderBenchmark)
    parts = {m.model_id: m.part for m in bench.models}
    assert parts["n01518878_0008"] is Part.OBJECT_SEEN
    assert parts["n02085620_0001"] is Part.OBJECT_UNSEEN
    assert parts["101549_0"] is Part.STYLE_SEEN and parts["african"] is Part.STYLE_UNSEEN
    assert "n03000134_0002" not in parts  # val only with --test-cases all/val
    assert bench.distractor_ids == tuple(
        f"dataset/laion_subset/{i:09d}.png" for i in range(N_LAION)
    )
    q = bench.queries[0]
    assert q.query_id == "dataset/synth/imagenet/media/n01518878_0008/samples/00000.png"
    f = bench.image_file("queries", q.query_id)
    assert f.path.startswith("synth_test/") and (ds / f.path).stat().st_size == f.num_bytes
    (block,) = list(bench.iter_image_blocks("queries", {q.query_id}))
    assert block.images[0] == (ds / f.path).read_bytes()
    card = (dest / "README.md").read_text()
    assert "object-seen <- test_observed_imagenet.json" in card
    assert load_benchmark(dest).manifest_sha256 == bench.manifest_sha256


def test_verify_quick_and_full_detect_changes(mini, tmp_path):
    ds, dest, bench = mini
    assert verify_files(bench, quick=True)["files"] > N_LAION
    runner = CliRunner()
    res = runner.invoke(main, ["splits", "verify", str(dest), "--quick"])
    assert res.exit_code == 0 and "(sizes)" in res.output, res.output
    victim = ds / "laion_subset" / f"{3:09d}.png"
    original = victim.read_bytes()
    try:
        victim.write_bytes(bytes([original[0] ^ 1]) + original[1:])  # same size
        assert verify_files(bench, quick=True)["mode"] == "sizes"
        res = runner.invoke(main, ["splits", "verify", str(dest)])
        assert res.exit_code == 2 and "sha256 does not match" in res.output
        with pytest.raises(AttribBenchError, match="sha256 differs"):
            list(bench.iter_image_blocks("distractors"))
        victim.write_bytes(original + b"x")
        res = runner.invoke(main, ["splits", "verify", str(dest), "--quick"])
        assert res.exit_code == 2 and "bytes, the manifest says" in res.output
    finally:
        victim.write_bytes(original)


def test_evaluate_baseline_on_imported(mini):
    from baselines.models import baseline_submission

    _, _, bench = mini
    result = evaluate(
        baseline_submission("pixels"),
        bench,
        EvalConfig(bootstrap_samples=10),
        RunOptions(progress=False, cache=False),
    )
    cells = {(c["test_case"], c["prompt_type"]) for c in result["metrics"]}
    assert ("object-seen", "media") in cells and ("style-unseen", "object") in cells
    assert result["benchmark"]["manifest_sha256"] == bench.manifest_sha256


def test_imported_features_match_official_evaluation(mini, tmp_path):
    ds, _, bench = mini
    feats = write_official_features(ds, tmp_path / "feats" / "clip")
    sub = import_abc_features(feats, bench, tmp_path / "sub")
    result = evaluate(
        sub, bench, EvalConfig(bootstrap_samples=10), RunOptions(progress=False, cache=False)
    )
    got = {(c["test_case"], c["prompt_type"]): c["metrics"] for c in result["metrics"]}
    names = {p: n for n, p in abc_import.JSON_PARTS.items()}
    compared = 0
    for part in (Part.OBJECT_SEEN, Part.OBJECT_UNSEEN, Part.STYLE_SEEN, Part.STYLE_UNSEEN):
        for t, ref in official_reference(feats, names[part]).items():
            for measure, value in ref.items():
                assert got[(part.value, t)][measure]["value"] == pytest.approx(value, abs=1e-9)
                compared += 1
    assert compared == 4 * 2 * 4


def test_import_features_refuses_pickles_and_wrong_rows(mini, tmp_path):
    import pickle

    ds, _, bench = mini
    feats = write_official_features(ds, tmp_path / "feats" / "dino")
    data = torch.load(feats / "laion_subset.pth", weights_only=True)
    torch.save({**data, "paths": data["paths"][:-1]}, feats / "laion_subset.pth")
    with pytest.raises(AttribBenchError, match="rows for"):
        import_abc_features(feats, bench, tmp_path / "a")
    torch.save(
        {"feats": data["feats"][:-1], "paths": data["paths"][:-1]}, feats / "laion_subset.pth"
    )
    with pytest.raises(AttribBenchError, match="benchmark ids have no row"):
        import_abc_features(feats, bench, tmp_path / "b")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (feats / "laion_subset.pth").write_bytes(pickle.dumps({"feats": Evil()}))
    res = CliRunner().invoke(
        main,
        ["import-features", "abc", str(feats), "-b", str(bench.root), "--out", str(tmp_path / "c")],
    )
    assert res.exit_code == 2 and "weights_only=True" in res.output
    assert len(res.output.strip().splitlines()) == 1 and "pwned" not in res.output


def test_resume_after_kill(tmp_path, monkeypatch):
    ds = build_miniature(tmp_path / "rel", seed=3)
    dest = tmp_path / "bench"
    real = abc_import._hash_file
    calls = {"n": 0}

    def dying(path):
        calls["n"] += 1
        if calls["n"] > 20:
            raise KeyboardInterrupt  # the user's Ctrl-C, mid-way
        return real(path)

    monkeypatch.setattr(abc_import, "_hash_file", dying)
    with pytest.raises(KeyboardInterrupt):
        import_abc(ds, dest, jobs=1, show_progress=False)
    logged = (dest / abc_import.PROGRESS_FILE).read_text().splitlines()
    assert len(logged) == 20 and not (dest / "manifest.json").exists()
    calls["n"] = -(10**9)
    counted = []
    monkeypatch.setattr(abc_import, "_hash_file", lambda p: counted.append(p) or real(p))
    bench = import_abc(ds, dest, jobs=2, show_progress=False)
    total = len(bench.queries) + len(bench.exemplar_ids) + len(bench.distractor_ids)
    assert len(counted) == total - 20  # only what the killed run had not hashed
    assert not (dest / abc_import.PROGRESS_FILE).exists()
    fresh = import_abc(ds, tmp_path / "again", show_progress=False)
    assert fresh.manifest_sha256 == bench.manifest_sha256  # resumed == uninterrupted


def test_pack_and_subset_and_val(tmp_path):
    ds = build_miniature(tmp_path / "rel", seed=4)
    res = CliRunner().invoke(
        main,
        [
            "splits",
            "import-abc",
            str(ds),
            "--dest",
            str(tmp_path / "p"),
            "--pack",
            "-q",
            "--test-cases",
            "bamfg,val",
        ],
    )
    assert res.exit_code == 0, res.output
    bench = load_benchmark(tmp_path / "p")
    assert not isinstance(bench, FolderBenchmark)
    assert {m.part for m in bench.models} == {Part.STYLE_SEEN, Part.VAL}
    q = bench.queries[0]
    (block,) = list(bench.iter_image_blocks("queries", {q.query_id}))
    rel = q.query_id.replace("dataset/synth/", "synth_test/")
    assert block.images[0] == (ds / rel).read_bytes()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda ds: (ds / "synth_test/bamfg/gpt/101549_0/samples/00001.png").unlink(), "is not in"),
        (
            lambda ds: _edit_json(
                ds, lambda e: e[0]["exemplar"].__setitem__(0, "dataset/../../etc/passwd")
            ),
            "escapes the source folder",
        ),
        (
            lambda ds: _edit_json(ds, lambda e: e[0]["exemplar"].__setitem__(0, "/etc/passwd")),
            "does not start with",
        ),
        (lambda ds: _edit_json(ds, lambda e: e[0].pop("synth")), "needs exemplar, synth"),
        (
            lambda ds: (ds / "json/test_bamfg.json").write_text('{"models": []}'),
            "expected a non-empty list",
        ),
        (lambda ds: _symlink_out(ds), "symlink that leaves"),
    ],
)
def test_bad_release_one_line(tmp_path, mutate, message):
    ds = build_miniature(tmp_path / "rel", seed=5)
    mutate(ds)
    res = CliRunner().invoke(
        main, ["splits", "import-abc", str(ds), "--dest", str(tmp_path / "b"), "-q"]
    )
    assert res.exit_code == 2, res.output
    line = res.output.strip()
    assert line.startswith("error: ") and "\n" not in line and message in line, line


def _edit_json(ds: Path, change) -> None:
    path = ds / "json" / "test_bamfg.json"
    entries = json.loads(path.read_text())
    change(entries)
    path.write_text(json.dumps(entries))


def _symlink_out(ds: Path) -> None:
    outside = ds.parent / "outside.png"
    outside.write_bytes(b"x")
    victim = ds / "exemplar/bamfg/images/101549_0/101549_0_0.jpg"
    victim.unlink()
    victim.symlink_to(outside)


# --------------------------------------------------------------------------------------------
# AbC's released tuned weights (baselines/abc_official.py)


def abc_calibrator_reference(scores: torch.Tensor, inv_tau: float, bias: float) -> torch.Tensor:
    """AbC's calibrator forward, written from its definition (bias gain 0.001, not saved)."""
    scaled = scores * inv_tau
    t = torch.exp(scaled - scaled.max(dim=1, keepdim=True).values)
    trunc = torch.relu(t + bias * 0.001)
    return trunc / trunc.sum(dim=1, keepdim=True)


@pytest.mark.parametrize(("inv_tau", "bias"), [(1.0, 0.0), (23.7, -41.0), (80.0, -700.0)])
def test_official_calibrator_gives_identical_probabilities(inv_tau, bias):
    from baselines.abc_official import abc_calibrator

    g = torch.Generator().manual_seed(0)
    scores = torch.rand(6, 50, generator=g, dtype=torch.float64) * 2 - 1
    want = abc_calibrator_reference(scores, inv_tau, bias).numpy()
    cal = abc_calibrator(inv_tau, bias)
    got = np.stack([cal.influence(s) for s in scores.numpy()])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    if bias < -500:  # the threshold really zeroes candidates: the test can tell b from b/1000
        assert (got == 0).any()


def _official_weights(folder: Path, model: str, dim: int, calibrator: bool = True) -> Path:
    g = torch.Generator().manual_seed(7)

    def linear():
        return {
            "weight": torch.eye(dim) + 0.1 * torch.randn(dim, dim, generator=g),
            "bias": 0.5 * torch.randn(dim, generator=g),
        }

    (folder / "weights" / "mapper").mkdir(parents=True, exist_ok=True)
    torch.save(
        {"real_mapper": linear(), "synth_mapper": linear()},
        folder / "weights" / "mapper" / f"{model}_tuned.pth",
    )
    if calibrator:
        (folder / "weights" / "calibrator").mkdir(parents=True, exist_ok=True)
        torch.save(
            {"inv_tau": torch.tensor(20.0), "bias": torch.tensor(-30.0)},
            folder / "weights" / "calibrator" / f"{model}_tuned.pth",
        )
    return folder


def test_official_mapper_is_abcs_linear_on_raw_features(tmp_path):
    from baselines.abc_official import official_heads

    _official_weights(tmp_path, "dino", 6)
    hf = official_heads("dino_vitb16.tuned_abc", tmp_path)
    state = torch.load(tmp_path / "weights/mapper/dino_tuned.pth", weights_only=True)
    x = torch.randn(4, 6) * 5 + 2  # raw, unnormalized backbone features
    for role, key in (("real", "real_mapper"), ("synth", "synth_mapper")):
        lin = torch.nn.Linear(6, 6)
        lin.load_state_dict(state[key])
        want = torch.nn.functional.normalize(lin(x), dim=-1)
        assert torch.allclose(hf.heads(x, role), want, atol=1e-6)
    assert hf.record["calibrator"] == {"temperature": 1 / 20.0, "threshold": -0.03}


def test_tuned_abc_baseline_end_to_end(mini, tmp_path, monkeypatch):
    """A weight-free backbone stands in for the official ones (their weights are not here)."""
    from baselines import abc_official
    from baselines.catalog import get_spec
    from baselines.models import baseline_submission

    _, _, bench = mini
    monkeypatch.setitem(abc_official.MODEL_NAMES, "pixels", "pix")
    _official_weights(tmp_path, "pix", get_spec("pixels").dim)
    r = evaluate(
        baseline_submission("pixels.tuned_abc", tmp_path),
        bench,
        EvalConfig(bootstrap_samples=10),
        RunOptions(progress=False, cache=False),
    )
    assert r["calibration"]["calibrator"] == {"temperature": 0.05, "threshold": -0.03}
    assert "pix_tuned.pth" in r["calibration"]["fitted_on"]
    plain = evaluate(
        baseline_submission("pixels"),
        bench,
        EvalConfig(bootstrap_samples=10),
        RunOptions(progress=False, cache=False),
    )
    assert r["metrics"] != plain["metrics"]  # the mapper really changed the ranking


def test_official_weights_missing_or_unsafe_one_line(tmp_path, monkeypatch):
    import pickle

    from baselines.abc_official import official_heads

    monkeypatch.delenv("ATTRIB_BENCH_WEIGHTS", raising=False)
    with pytest.raises(AttribBenchError, match=r"weights/mapper/clip_tuned.pth not found"):
        official_heads("clip_vit_b32.openai.tuned_abc", tmp_path)
    with pytest.raises(AttribBenchError, match="released tuned weights only for"):
        official_heads("dinov2_vitb14.lvd142m.tuned_abc", tmp_path)
    (tmp_path / "mapper").mkdir()
    (tmp_path / "mapper" / "sscd_tuned.pth").write_bytes(pickle.dumps({"real_mapper": print}))
    with pytest.raises(AttribBenchError, match="weights_only=True"):
        official_heads("sscd_resnet50.disc_mixup.tuned_abc", tmp_path)
