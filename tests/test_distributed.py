"""torch.distributed runs (gloo, CPU) at 2 and 3 ranks write the single-process result byte
for byte; image blocks are dealt to ranks without overlap."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from benchmark.distributed import block_ids, owned_tables
from benchmark.evaluation import RunOptions, evaluate
from benchmark.fileio import dumps_json
from benchmark.results import stable_view
from tests.test_shards import write_extractor, write_features

QUIET = RunOptions(progress=False)

RANK_MAIN = """
import json, sys
from benchmark.distributed import evaluate_distributed, finish
from benchmark.evaluation import RunOptions
from benchmark.fileio import dumps_json
from benchmark.results import stable_view
try:  # as the CLI does: tear the process group down however the run ends
    result = evaluate_distributed(sys.argv[1], sys.argv[2], options=RunOptions(progress=False))
finally:
    finish()
if result is not None:
    open(sys.argv[3], "w").write(dumps_json(stable_view(result)))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(n: int, sub, bench_root, out, cache) -> list[subprocess.CompletedProcess]:
    port = free_port()
    procs = []
    for rank in range(n):
        env = {
            **os.environ,
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(n),
            "ATTRIB_BENCH_CACHE": str(cache),
            "HF_HUB_OFFLINE": "1",
        }
        cmd = [sys.executable, "-c", RANK_MAIN, str(sub), str(bench_root), str(out)]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    done = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        done.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return done


# features at 3 ranks run through the real launcher below (torchrun)
@pytest.mark.parametrize("kind, n", [("features", 2), ("extractor", 2), ("extractor", 3)])
def test_distributed_equals_one_process(tiny, tmp_path, kind, n):
    if kind == "features":
        sub = write_features(tmp_path / "sub", tiny)
    else:
        sub = write_extractor(tmp_path / "sub")
    single = evaluate(sub, tiny, options=RunOptions(progress=False, cache=False))
    out = tmp_path / "result.json"
    cache = tmp_path / "cache"
    procs = run_ranks(n, sub, tiny.root, out, cache)
    for p in procs:
        assert p.returncode == 0, p.stderr.decode()[-2000:]
    assert out.read_text() == dumps_json(stable_view(single))
    if kind == "extractor":
        # every block was extracted into the shared cache, whole
        assert len(list(cache.rglob("*.safetensors"))) == sum(
            len(block_ids(tiny, t, w))
            for t, w in [
                ("queries", {q.query_id for q in tiny.evaluated_queries}),
                ("exemplars", set(tiny.evaluated_exemplar_ids)),
                ("distractors", None),
            ]
        )


def test_a_failing_rank_stops_every_rank_with_one_line(tiny, tmp_path):
    procs = run_ranks(2, tmp_path / "missing", tiny.root, tmp_path / "r.json", tmp_path / "c")
    for p in procs:
        assert p.returncode != 0
        last = p.stderr.decode().strip().splitlines()[-1]
        assert "error" in last.lower()


def test_block_ids_match_the_image_blocks(tiny):
    qids = {q.query_id for q in tiny.evaluated_queries}
    for table, wanted in [("queries", qids), ("distractors", None)]:
        assert block_ids(tiny, table, wanted) == [
            b.ids for b in tiny.iter_image_blocks(table, wanted)
        ]


@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_ranks_own_disjoint_blocks_covering_everything(tiny, size):
    seen: dict[str, list[str]] = {}
    for rank in range(size):
        for table, ids, _ in owned_tables(tiny, rank, size):
            assert not set(seen.get(table, [])) & ids
            seen.setdefault(table, []).extend(ids)
    assert sorted(seen["distractors"]) == sorted(tiny.distractor_ids)
    assert sorted(seen["exemplars"]) == sorted(tiny.evaluated_exemplar_ids)
    assert len(seen["queries"]) == len(tiny.evaluated_queries)
    if size > 1:
        assert len({r for r in range(size) if owned_tables(tiny, r, size)}) > 1
    json.dumps(seen)


def test_torchrun_cli_writes_the_one_process_result(tiny, tmp_path):
    """The real launcher: torchrun --nproc-per-node 3 -m benchmark evaluate (gloo, CPU)."""
    from pathlib import Path

    from benchmark.results import load_result

    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun is not installed next to this interpreter")
    sub = write_features(tmp_path / "sub", tiny)
    single = evaluate(sub, tiny, options=QUIET)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [
        str(torchrun), "--nproc-per-node", "3", "--master-addr", "127.0.0.1",
        "--master-port", str(free_port()), "-m", "benchmark", "evaluate", "-s", str(sub),
        "-b", str(tiny.root), "-q", "-o", str(tmp_path / "out"),
    ]  # fmt: skip
    p = subprocess.run(cmd, env=env, capture_output=True, timeout=300, cwd=tmp_path)
    assert p.returncode == 0, p.stderr.decode()[-3000:]
    result = load_result(tmp_path / "out" / "result.json")
    assert dumps_json(stable_view(result)) == dumps_json(stable_view(single))
    assert p.stdout.decode().count("wrote ") == 1  # rank 0 alone writes
