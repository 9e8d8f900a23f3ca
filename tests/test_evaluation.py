"""End to end on abc-tiny: the three submission kinds agree, results are deterministic,
features are cached."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
from safetensors.numpy import save_file

from benchmark.evaluation import EvalConfig, RunOptions, evaluate, extract_features
from benchmark.export import dense_scores
from benchmark.fileio import dumps_json
from benchmark.results import stable_view
from benchmark.submission import load_submission

QUIET = RunOptions(progress=False)

# An extractor whose features are unit vectors with four +-1/2 entries picked by hashing the
# image: every cosine score is an exact multiple of 1/4, so all three paths must agree to the
# bit, ties included.
DYADIC = """
import hashlib
import torch

CALLS = {"embed": 0}


class Dyadic:
    spec = {"name": "dyadic"}

    def preprocess(self, image):
        digest = hashlib.sha256(image.tobytes()).digest()
        v = torch.zeros(16)
        cols = []
        for b in digest:
            if b % 16 not in cols:
                cols.append(b % 16)
            if len(cols) == 4:
                break
        for i, c in enumerate(cols):
            v[c] = 0.5 if digest[i + 8] % 2 else -0.5
        return v

    def embed(self, batch):
        CALLS["embed"] += 1
        return batch
"""


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


@pytest.fixture(scope="module")
def dyadic_subs(tmp_path_factory, tiny):
    root = tmp_path_factory.mktemp("subs")
    ext = root / "ext"
    write(ext / "dyadic.py", DYADIC)
    write(
        ext / "submission.yaml",
        """\
        schema_version: 1
        name: dyadic
        kind: extractor
        description: exact-arithmetic test features
        license: MIT
        extractor: {entry: dyadic.py:Dyadic}
        """,
    )
    q, x, chunks, _ = extract_features(
        load_submission(ext), tiny, RunOptions(progress=False, cache=False)
    )
    d = np.concatenate([c.numpy() for c in chunks(1 << 20)])
    cand = np.concatenate([d, x.numpy()])
    feat = root / "feat"
    feat.mkdir()
    save_file({"features": q.numpy()}, str(feat / "q.safetensors"))
    np.save(feat / "c.npy", cand.astype(np.float16))  # dyadic values are exact in float16
    write(
        feat / "submission.yaml",
        """\
        schema_version: 1
        name: dyadic-features
        kind: features
        description: the same features, precomputed
        license: MIT
        benchmark: abc-tiny
        features: {queries: {file: q.safetensors}, candidates: {file: c.npy}}
        """,
    )
    dense = root / "dense"
    dense.mkdir()
    np.save(dense / "s.npy", dense_scores(q.numpy(), cand))
    write(
        dense / "submission.yaml",
        """\
        schema_version: 1
        name: dyadic-dense
        kind: similarity
        description: the same features as a dense similarity
        license: MIT
        benchmark: abc-tiny@1.0.0
        similarity: {format: dense, file: s.npy}
        """,
    )
    return ext, feat, dense


def test_three_kinds_give_identical_metrics(dyadic_subs, tiny):
    results = [evaluate(s, tiny, options=QUIET) for s in dyadic_subs]
    metrics = [json.dumps(r["metrics"]) for r in results]
    assert metrics[0] == metrics[1] == metrics[2]
    queries = [json.dumps([q["exemplars"] for q in r["queries"]]) for r in results]
    assert queries[0] == queries[1] == queries[2]
    ties = sum(e["ties"] for q in results[0]["queries"] for e in q["exemplars"])
    assert ties > 0, "dyadic features must produce ties for this test to mean anything"
    assert json.dumps(results[0]["calibration"]) == json.dumps(results[2]["calibration"])


def test_results_are_deterministic(dyadic_subs, tiny):
    ext = dyadic_subs[0]
    a = evaluate(ext, tiny, options=QUIET)
    b = evaluate(ext, tiny, options=RunOptions(progress=False, cache=False))
    assert dumps_json(stable_view(a)) == dumps_json(stable_view(b))
    assert set(a) - set(stable_view(a)) == {"created", "timings"}


def test_feature_cache_is_reused(tiny, tmp_path, monkeypatch):
    from benchmark import sandbox

    started = []
    run_child = sandbox._run_child
    monkeypatch.setattr(
        sandbox, "_run_child", lambda *a, **k: started.append(1) or run_child(*a, **k)
    )
    write(tmp_path / "counting" / "dyadic.py", DYADIC)
    write(
        tmp_path / "counting" / "submission.yaml",
        """\
        schema_version: 1
        name: counting
        kind: extractor
        description: counts embed calls
        license: MIT
        extractor: {entry: dyadic.py:Dyadic}
        """,
    )
    # The extractor runs in a sandboxed child: count the children started.
    first = evaluate(tmp_path / "counting", tiny, options=QUIET)
    assert started == [1]
    second = evaluate(tmp_path / "counting", tiny, options=QUIET)
    assert started == [1], "second run must read every block from the cache"
    assert first["metrics"] == second["metrics"]


def test_result_records_provenance_and_calibration(tiny):
    from tests.conftest import SUBMISSIONS

    r = evaluate(SUBMISSIONS / "example_extractor", tiny, config=EvalConfig(seed=3), options=QUIET)
    assert r["benchmark"]["manifest_sha256"] == tiny.manifest_sha256
    assert r["settings"]["seed"] == 3 and r["settings"]["tie_policy"] == "pessimistic"
    assert "extractor.py" in r["submission"]["files"]
    assert r["exact"] is True
    cells = {(c["test_case"], c["prompt_type"]) for c in r["metrics"]}
    assert ("object-seen", "media") in cells and ("style-unseen", "object") in cells
    assert all(c["num_models"] == 6 for c in r["metrics"])
    cal = r["calibration"]
    assert cal["fitted_on"] == "val" and cal["calibrator"]["temperature"] > 0
    assert sum(b["count"] for b in cal["test"]["reliability"]) == cal["test"]["num_candidates"]
    for c in r["metrics"]:
        m = c["metrics"]["mAP"]
        assert m["ci_low"] <= m["value"] <= m["ci_high"]


def test_a_random_extractor_is_near_chance_and_pixels_beat_it(tiny, tmp_path):
    from tests.conftest import SUBMISSIONS

    write(
        tmp_path / "rand" / "r.py",
        """
        import hashlib
        import torch

        class Random:
            def preprocess(self, image):
                seed = int.from_bytes(hashlib.sha256(image.tobytes()).digest()[:8], "little")
                return torch.randn(32, generator=torch.Generator().manual_seed(seed))

            def embed(self, batch):
                return batch
        """,
    )
    write(
        tmp_path / "rand" / "submission.yaml",
        """\
        schema_version: 1
        name: random
        kind: extractor
        description: random features
        license: MIT
        extractor: {entry: r.py:Random}
        """,
    )
    rand = evaluate(tmp_path / "rand", tiny, options=QUIET)
    pix = evaluate(SUBMISSIONS / "example_extractor", tiny, options=QUIET)
    n_gallery = len(tiny.distractor_ids)
    for cr, cp in zip(rand["metrics"], pix["metrics"], strict=True):
        assert cr["metrics"]["mAP"]["value"] < 0.1  # chance is about 1/150 here
        assert cp["metrics"]["mAP"]["value"] > cr["metrics"]["mAP"]["value"]
    assert n_gallery == 300


def test_stored_ranks_reproduce_the_metrics(tiny):
    from benchmark.compare import per_query
    from tests.conftest import SUBMISSIONS

    r = evaluate(SUBMISSIONS / "example_extractor", tiny, options=QUIET)
    records, measures, exact = per_query(r)
    assert exact
    for i, rec in enumerate(records):
        ranks = sorted(e["rank"] for e in rec["exemplars"])
        ap = np.mean([(k + 1) / rank for k, rank in enumerate(ranks)])
        assert measures["mAP"][i] == pytest.approx(ap)
        assert len(set(ranks)) == len(ranks)
