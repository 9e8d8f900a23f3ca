"""Sharded runs (evaluate --shard I/N --partial-out, merge) equal one-process runs byte for
byte, and bad partial sets are refused with one line."""

from __future__ import annotations

import json
import shutil
import textwrap

import numpy as np
import pytest
from safetensors.numpy import save_file

from benchmark.errors import AttribBenchError
from benchmark.evaluation import EvalConfig, RunOptions, evaluate
from benchmark.fileio import dumps_json
from benchmark.results import stable_view
from benchmark.shards import Shard, evaluate_shard, merge

QUIET = RunOptions(progress=False)


def write_features(root, tiny, seed: int = 0, dim: int = 24):
    """A features submission with seeded Gaussian features (no ties) for abc-tiny."""
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((len(tiny.evaluated_queries), dim)).astype(np.float32)
    n_cand = len(tiny.distractor_ids) + len(tiny.evaluated_exemplar_ids)
    cand = rng.standard_normal((n_cand, dim)).astype(np.float32)
    root.mkdir(parents=True, exist_ok=True)
    save_file({"features": q}, str(root / "q.safetensors"))
    np.save(root / "c.npy", cand)
    (root / "submission.yaml").write_text(
        textwrap.dedent(
            """\
            schema_version: 1
            name: gauss-features
            kind: features
            description: seeded random features
            license: MIT
            benchmark: abc-tiny
            features: {queries: {file: q.safetensors}, candidates: {file: c.npy}}
            """
        )
    )
    return root


@pytest.fixture(scope="module")
def gauss(tmp_path_factory, tiny):
    return write_features(tmp_path_factory.mktemp("gauss") / "sub", tiny)


def _run_shards(sub, tiny, n, out, config=None):
    for i in range(n):
        evaluate_shard(sub, tiny.root, Shard(i, n), out, config, QUIET)


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_merged_shards_equal_one_process_byte_for_byte(gauss, tiny, tmp_path, n):
    single = evaluate(gauss, tiny, options=QUIET)
    _run_shards(gauss, tiny, n, tmp_path / "parts")
    merged = merge([tmp_path / "parts"])
    assert dumps_json(stable_view(merged)) == dumps_json(stable_view(single))
    # the top distractors really come from several shards (else the k-way merge is untested)
    ranges = [Shard(i, n).range(len(tiny.distractor_ids)) for i in range(n)]
    idx = {d: i for i, d in enumerate(tiny.distractor_ids)}
    owners = {
        next(s for s, (a, b) in enumerate(ranges) if a <= idx[t[0]] < b)
        for q in merged["queries"]
        for t in q["top_distractors"]
    }
    assert len(owners) == n


def test_partials_may_come_from_several_folders(gauss, tiny, tmp_path):
    _run_shards(gauss, tiny, 3, tmp_path / "a")
    (tmp_path / "b").mkdir()
    for suffix in (".json", ".safetensors"):
        name = Shard(2, 3).stem + suffix
        shutil.move(tmp_path / "a" / name, tmp_path / "b" / name)
    single = evaluate(gauss, tiny, options=QUIET)
    merged = merge([tmp_path / "a", tmp_path / "b"])
    assert dumps_json(stable_view(merged)) == dumps_json(stable_view(single))


def test_shard_ranges_are_disjoint_and_cover():
    for n_rows in (5, 300, 1001):
        for count in (1, 2, 3, 5):
            rows = [r for i in range(count) for r in range(*Shard(i, count).range(n_rows))]
            assert rows == list(range(n_rows))


@pytest.mark.parametrize("text", ["3/3", "-1/2", "1/0", "a/b", "1"])
def test_bad_shard_spec_is_one_line(text):
    with pytest.raises(AttribBenchError) as exc:
        Shard.parse(text)
    assert "\n" not in str(exc.value) and "--shard" in str(exc.value)


def _err(dirs) -> str:
    with pytest.raises(AttribBenchError) as exc:
        merge(dirs)
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_merge_refuses_missing_repeated_and_mixed_partials(gauss, tiny, tmp_path):
    _run_shards(gauss, tiny, 3, tmp_path / "p")
    (tmp_path / "p" / "partial-00001-of-00003.json").unlink()
    assert "shard(s) 1 of 3 missing" in _err([tmp_path / "p"])
    # a shard of another split in the same folder
    evaluate_shard(gauss, tiny.root, Shard(0, 2), tmp_path / "p", None, QUIET)
    assert "shard.count" in _err([tmp_path / "p"])
    # other settings
    _run_shards(gauss, tiny, 2, tmp_path / "q")
    evaluate_shard(gauss, tiny.root, Shard(1, 2), tmp_path / "r", EvalConfig(seed=5), QUIET)
    shutil.copy(tmp_path / "r" / "partial-00001-of-00002.json", tmp_path / "q")
    assert "settings" in _err([tmp_path / "q"])
    # the same shard twice, from two folders
    _run_shards(gauss, tiny, 2, tmp_path / "s")
    assert "keep one copy" in _err([tmp_path / "q", tmp_path / "s"])


def test_merge_refuses_a_tampered_or_foreign_partial(gauss, tiny, tmp_path):
    _run_shards(gauss, tiny, 2, tmp_path / "p")
    side = tmp_path / "p" / "partial-00001-of-00002.json"
    meta = json.loads(side.read_text())
    meta["shard"]["start"] += 1
    side.write_text(json.dumps(meta))
    assert "rows do not match" in _err([tmp_path / "p"])
    meta["shard"]["start"] -= 1
    meta["submission"]["sha256"] = "0" * 64
    side.write_text(json.dumps(meta))
    assert "submission" in _err([tmp_path / "p"])
    (tmp_path / "p" / "partial-00001-of-00002.safetensors").write_bytes(b"not safetensors")
    meta["submission"]["sha256"] = json.loads(
        (tmp_path / "p" / "partial-00000-of-00002.json").read_text()
    )["submission"]["sha256"]
    side.write_text(json.dumps(meta))
    assert "unreadable" in _err([tmp_path / "p"])
    assert "no partial" in _err([tmp_path])


# An extractor with no weights: seeded Gaussian features from a hash of the image (no ties).
HASHED = """
import hashlib
import numpy as np
import torch


class Hashed:
    spec = {"name": "hashed"}

    def preprocess(self, image):
        seed = int.from_bytes(hashlib.sha256(image.tobytes()).digest()[:8], "little")
        return torch.from_numpy(np.random.default_rng(seed).standard_normal(16).astype("float32"))

    def embed(self, batch):
        return batch
"""


def write_extractor(root, body: str = HASHED, name: str = "hashed"):
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{name}.py").write_text(body)
    (root / "submission.yaml").write_text(
        textwrap.dedent(
            f"""\
            schema_version: 1
            name: {name}
            kind: extractor
            description: hashed features
            license: MIT
            extractor: {{entry: {name}.py:{name.capitalize()}}}
            """
        )
    )
    return root


def test_extractor_shards_extract_their_own_rows_and_merge_exactly(tiny, tmp_path):
    sub = write_extractor(tmp_path / "ext")
    single = evaluate(sub, tiny, options=RunOptions(progress=False, cache=False))
    _run_shards(sub, tiny, 3, tmp_path / "parts")
    merged = merge([tmp_path / "parts"])
    assert dumps_json(stable_view(merged)) == dumps_json(stable_view(single))


def test_cli_shards_and_merge_write_the_one_process_result(gauss, tiny, tmp_path):
    from click.testing import CliRunner

    from benchmark.cli import main
    from benchmark.results import load_result

    cli = CliRunner()
    base = ["evaluate", "-s", str(gauss), "-b", str(tiny.root), "-q"]
    one = cli.invoke(main, [*base, "-o", str(tmp_path / "one")])
    assert one.exit_code == 0, one.output
    for i in range(3):
        r = cli.invoke(main, [*base, "--shard", f"{i}/3", "--partial-out", str(tmp_path / "p")])
        assert r.exit_code == 0, r.output
        assert f"partial-0000{i}-of-00003.json" in r.output
    m = cli.invoke(main, ["merge", str(tmp_path / "p"), "-o", str(tmp_path / "merged")])
    assert m.exit_code == 0, m.output
    a = load_result(tmp_path / "one" / "result.json")
    b = load_result(tmp_path / "merged" / "result.json")
    assert dumps_json(stable_view(a)) == dumps_json(stable_view(b))


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--shard", "0/2"], "--shard and --partial-out go together"),
        (["--shard", "2/2", "--partial-out", "P"], "not a shard spec"),
        (["--shard", "0/2", "--partial-out", "P", "--store", "S"], "pass --store to"),
        (["--approximate", "ivf", "--store", "S"], "approximate results are not canonical"),
        (["--approximate", "ivf", "--shard", "0/2", "--partial-out", "P"], "cannot be sharded"),
    ],
)
def test_cli_refuses_bad_scale_options_in_one_line(gauss, tiny, tmp_path, extra, needle):
    from click.testing import CliRunner

    from benchmark.cli import main

    args = ["evaluate", "-s", str(gauss), "-b", str(tiny.root), "-q", *extra]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2, r.output
    assert needle in r.output and len(r.output.strip().splitlines()) == 1, r.output


def _without_top_ids(result: dict) -> dict:
    view = stable_view(result)
    for q in view["queries"]:
        q["top_distractors"] = [t[1:] for t in q["top_distractors"]]  # scores stay compared
    return view


@pytest.fixture(scope="module")
def histogram_runs(tiny, tmp_path_factory):
    """color_histogram on abc-tiny: many distractors score exactly 0.0, so ties sit at the
    top-N boundary."""
    from baselines.models import baseline_submission

    sub = baseline_submission("color_histogram")
    single = evaluate(sub, tiny, options=QUIET)
    out = tmp_path_factory.mktemp("hist")
    _run_shards(sub, tiny, 2, out)
    return single, merge([out])  # the catalog baseline is rebuilt from the partials' record


def test_a_catalog_baseline_merges_without_naming_it_again(histogram_runs):
    single, merged = histogram_runs
    # counts, metrics, calibration and the top scores are identical even with ties ...
    assert dumps_json(_without_top_ids(merged)) == dumps_json(_without_top_ids(single))


def test_top_ids_tied_at_the_boundary_match_too(histogram_runs):
    """... and so are the ids: both keep the N best by score, then lowest distractor index
    (this depends on scoring.score_features breaking top-N boundary ties that way)."""
    single, merged = histogram_runs
    assert dumps_json(stable_view(merged)) == dumps_json(stable_view(single))
