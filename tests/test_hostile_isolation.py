"""Hostile extractor submissions: each class of attack, and its observable outcome.

Submitted code runs in a sandboxed child (benchmark.sandbox). Every test here runs a tiny
extractor on abc-tiny through the CLI; the isolation tests run once per sandbox backend that
works on this machine (bubblewrap, unshare), forcing it with ``--isolation``.
"""

from __future__ import annotations

import json
import socket
import textwrap
from pathlib import Path

import pytest
from test_bad_input import assert_user_error, copy_example, evaluate_args, invoke

import benchmark
from benchmark.sandbox import BACKENDS, backend_works

WORKING = [b for b in BACKENDS if backend_works(b)]
if not WORKING:  # pragma: no cover - machines without namespaces
    pytest.skip("no sandbox backend works here", allow_module_level=True)

TINY = """
import torch
from PIL import Image


class Tiny:
    def __init__(self, **kwargs):
        self.kwargs = kwargs
        {init}

    def preprocess(self, image):
        small = image.convert("RGB").resize((8, 8), Image.Resampling.BILINEAR)
        return torch.frombuffer(bytearray(small.tobytes()), dtype=torch.uint8).float() / 255

    def embed(self, batch):
        {embed}
        centred = batch - batch.mean(dim=1, keepdim=True)
        return torch.cat([centred, torch.full((len(batch), 1), 0.01)], dim=1)  # never all-zero
"""


def hostile(
    tmp_path: Path,
    init: str = "pass",
    embed: str = "pass",
    head: str = "",
    kwargs: dict | None = None,
) -> Path:
    """A copy of example_extractor whose class runs ``init`` / ``embed`` code."""
    d = copy_example(tmp_path, "example_extractor")
    body = TINY.replace("{init}", textwrap.indent(textwrap.dedent(init), " " * 8).strip())
    body = body.replace("{embed}", textwrap.indent(textwrap.dedent(embed), " " * 8).strip())
    (d / "extractor.py").write_text(textwrap.dedent(head) + body)
    yaml = (
        (d / "submission.yaml").read_text().replace("extractor.py:TinyPixels", "extractor.py:Tiny")
    )
    yaml = yaml.replace("kwargs: {size: 8}", f"kwargs: {json.dumps(kwargs or {})}")
    (d / "submission.yaml").write_text(yaml)
    return d


def ok(result) -> None:
    assert result.exit_code == 0, result.output


def run(d: Path, tmp_path: Path, *extra: object):
    return invoke(*evaluate_args(d, tmp_path, "--no-cache", "--device", "cpu", *extra))


@pytest.mark.parametrize("backend", WORKING)
def test_network_is_unreachable(backend, tmp_path, tiny):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    init = f"""
    import socket
    for host, port in (("127.0.0.1", {port}), ("1.1.1.1", 443)):
        s = socket.socket()
        s.settimeout(2)
        try:
            s.connect((host, port))
        except OSError:
            continue
        raise RuntimeError(f"reached {{host}}:{{port}}")
    """
    result = run(hostile(tmp_path, init=init), tmp_path, "--isolation", backend)
    ok(result)  # every connect failed inside the child
    with pytest.raises(BlockingIOError):
        listener.accept()  # and nothing reached the harness's loopback
    listener.close()


@pytest.mark.parametrize("backend", WORKING)
def test_writes_outside_scratch_fail(backend, tmp_path, tiny, _isolated_cache):
    targets = {
        "submission": str(tmp_path / "example_extractor" / "pwned.txt"),
        "benchmark": str(tiny.root / "pwned.txt"),
        "harness": str(Path(benchmark.__file__).parent / "pwned.txt"),
        "cache": str(_isolated_cache / "pwned.txt"),
        "home": str(Path.home() / "pwned.txt"),
    }
    init = """
    import os
    for name, path in self.kwargs["targets"].items():
        try:
            with open(path, "w") as f:
                f.write("pwned")
        except OSError:
            continue
        raise RuntimeError(f"wrote into the {name} folder")
    with open(os.path.join(os.getcwd(), "scratch.txt"), "w") as f:  # its own folder works
        f.write("fine")
    with open("/tmp/private.txt", "w") as f:  # and so does its private /tmp
        f.write("fine")
    """
    d = hostile(tmp_path, init=init, kwargs={"targets": targets})
    ok(run(d, tmp_path, "--isolation", backend))
    assert not any(Path(p).exists() for p in targets.values())
    assert not Path("/tmp/private.txt").exists()


@pytest.mark.parametrize(
    "embed, how",
    [
        ("import sys; sys.exit(0)", "sys.exit(0)"),
        ("import os; os._exit(3)", "exited with status 3"),
        ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", "SIGKILL"),
        ("raise KeyError('boom')", "KeyError"),
    ],
    ids=["sys-exit", "os-exit", "sigkill", "raises"],
)
def test_any_way_the_child_ends_is_one_line(embed, how, tmp_path, tiny):
    result = run(hostile(tmp_path, embed=embed), tmp_path)
    line = assert_user_error(result, how, "child log:")
    log = line.rsplit("child log: ", 1)[1].rstrip(")")
    assert Path(log).is_file()
    assert not (tmp_path / "out").exists(), "a failed run wrote a result"


@pytest.mark.slow
def test_hang_is_killed_at_the_timeout(tmp_path, tiny):
    result = run(
        hostile(tmp_path, embed="import time; time.sleep(10_000)"), tmp_path, "--timeout", "5"
    )
    assert_user_error(result, "--timeout 5", "killed", "child log:")
    assert not (tmp_path / "out").exists()


def test_memory_beyond_the_limit_fails(tmp_path, tiny):
    embed = "blob = bytearray(8 << 30)  # 8 GiB, four times the limit"
    result = run(hostile(tmp_path, embed=embed), tmp_path, "--memory-limit", "2G")
    assert_user_error(result, "MemoryError", "--memory-limit", "child log:")
    assert not (tmp_path / "out").exists()


def test_prints_never_reach_stdout(tmp_path, tiny):
    init = "import os, sys; print('junk'); os.write(1, b'raw junk\\n'); print('e', file=sys.stderr)"
    d = hostile(tmp_path, init=init, embed="print('more junk', flush=True)")
    result = run(d, tmp_path, "--json")
    ok(result)
    assert json.loads(result.stdout)["submission"]["name"] == "example-extractor"
    assert "junk" not in result.stderr


def test_monkeypatching_the_harness_has_no_effect(tmp_path, tiny):
    head = """
    import builtins
    import numpy as np
    import benchmark.metrics as metrics
    import benchmark.scoring as scoring

    def perfect(above, ties, unresolved, policy=None):
        ones = np.ones(len(above))
        out = {m.name: ones for m in metrics.MEASURES}
        return out, out

    metrics.per_query_bounds = perfect
    scoring.score_features = lambda *a, **k: (_ for _ in ()).throw(SystemExit(0))
    builtins.round = lambda *a, **k: 1.0
    """
    honest = run(hostile(tmp_path / "a"), tmp_path / "a", "--json")
    patched = run(hostile(tmp_path / "b", head=head), tmp_path / "b", "--json")
    ok(honest)
    ok(patched)
    a, b = json.loads(honest.stdout), json.loads(patched.stdout)
    assert a["metrics"] == b["metrics"]
    assert all(c["metrics"]["mAP"]["value"] < 1.0 for c in b["metrics"])


def test_trust_code_is_recorded(tmp_path, tiny):
    result = run(hostile(tmp_path), tmp_path, "--json", "--trust-code")
    ok(result)
    assert json.loads(result.stdout)["environment"]["isolation"] == "none (--trust-code)"
    sandboxed = run(hostile(tmp_path / "s"), tmp_path / "s", "--json")
    assert json.loads(sandboxed.stdout)["environment"]["isolation"] in WORKING


def test_no_backend_refuses_without_trust_code(tmp_path, tiny, monkeypatch):
    from benchmark import sandbox

    monkeypatch.setattr(sandbox, "backend_works", lambda backend: False)
    result = run(hostile(tmp_path), tmp_path)
    assert_user_error(result, "--isolation", "cannot isolate", "--trust-code")


# item 7: extractor user errors, one line each ------------------------------------------------


def test_meta_device_is_refused(tmp_path, tiny):
    assert_user_error(run(hostile(tmp_path), tmp_path, "--device", "meta"), "--device", "meta")


@pytest.mark.parametrize("size", ["-1", "0"])
def test_bad_batch_size_is_refused(size, tmp_path, tiny):
    assert_user_error(run(hostile(tmp_path), tmp_path, "--batch-size", size), "--batch-size")


def test_dim_changing_between_batches(tmp_path, tiny):
    d = hostile(
        tmp_path,
        init="self.calls = 0",
        embed="""
    self.calls += 1
    if self.calls > 1:
        return batch[:, :5] + 1
    """,
    )
    assert_user_error(run(d, tmp_path, "--batch-size", "16"), "embed", "dim changed", "child log:")


def test_preprocess_returning_numpy(tmp_path, tiny):
    d = hostile(tmp_path)
    src = d / "extractor.py"
    src.write_text(
        src.read_text()
        .replace("return torch.frombuffer", "return (lambda t: t.numpy())(torch.frombuffer")
        .replace("/ 255\n", "/ 255)\n")
    )
    assert_user_error(run(d, tmp_path), "preprocess", "numpy.ndarray", "torch.Tensor")
