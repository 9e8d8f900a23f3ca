"""How a sandbox is built: backends, their command lines, the child's environment and view.

Split from :mod:`benchmark.sandbox` (which runs and supervises the child); see its docstring
for the isolation each backend gives. Nothing here imports torch.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from functools import cache
from pathlib import Path

from benchmark.paths import cache_root
from benchmark.splits import Benchmark

BACKENDS = ("bwrap", "unshare")
HIDDEN = ("/tmp", "/var/tmp", "/run", "/dev/shm")  # replaced by private tmpfs in the child
ENV_KEEP = (
    "PATH",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "PYTHONPATH",
    "PYTHONHASHSEED",
    "CUDA_VISIBLE_DEVICES",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "ATTRIB_BENCH_DEBUG",
    "ATTRIB_BENCH_WEIGHTS",
    "HF_HOME",
    "HF_HUB_CACHE",
    "TORCH_HOME",
    "XDG_CACHE_HOME",
)
FSIZE_LIMIT = 4 << 30  # largest file the child may write (its log included)
MAX_BLOCK_BYTES = 1 << 31
MAX_MESSAGE = 1 << 16


@cache
def backend_works(backend: str) -> bool:
    """Whether ``backend`` can build the whole sandbox here (probed once per process: the
    child builds its view and exits before importing anything heavy)."""
    if shutil.which(backend) is None:
        return False
    with tempfile.TemporaryDirectory() as d:
        job = Path(d) / "job.json"
        job.write_text(
            json.dumps(
                {
                    "backend": backend,
                    "probe": True,
                    "scratch": d,
                    "readable": [],
                    "hidden": list(HIDDEN),
                    "submission": "-",
                }
            )
        )
        read_fd, write_fd = os.pipe()
        cmd = [
            *wrapper(backend, Path(d), []),
            sys.executable,
            "-s",
            "-m",
            "benchmark.sandbox_child",
            str(job),
            str(write_fd),
        ]
        try:
            proc = subprocess.run(
                cmd,
                capture_output=True,
                timeout=60,
                pass_fds=(write_fd,),
                env=_child_env(Path(d)),
                cwd=d,
            )
        except (OSError, subprocess.TimeoutExpired):
            return False
        finally:
            os.close(write_fd)
            os.close(read_fd)
    return proc.returncode == 0


def _under_hidden(path: Path) -> bool:
    return any(path == Path(h) or path.is_relative_to(h) for h in HIDDEN)


def wrapper(backend: str, scratch: Path, readable: list[Path]) -> list[str]:
    """The command prefix that starts a sandboxed process (empty for ``none``)."""
    visible = [p for p in readable if _under_hidden(p) and p.exists()]
    if backend == "bwrap":
        cmd = ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
        for node in [*sorted(Path("/dev").glob("nvidia*")), Path("/dev/dri")]:
            if node.exists():
                cmd += ["--dev-bind", str(node), str(node)]
        for h in HIDDEN:
            if Path(h).is_dir():
                cmd += ["--tmpfs", h]
        for p in visible:
            cmd += ["--ro-bind", str(p), str(p)]
        return [
            *cmd,
            "--bind",
            str(scratch),
            str(scratch),
            "--unshare-all",
            "--die-with-parent",
            "--cap-drop",
            "ALL",
            "--chdir",
            str(scratch),
            "--",
        ]
    if backend == "unshare":  # the mounts are made by sandbox_child.setup_unshare
        return [
            "unshare",
            "--user",
            "--map-root-user",
            "--mount",
            "--net",
            "--pid",
            "--uts",
            "--ipc",
            "--fork",
            "--kill-child",
            "--mount-proc",
            "--",
        ]
    return []


def _child_env(scratch: Path) -> dict[str, str]:
    env = {k: os.environ[k] for k in ENV_KEEP if k in os.environ}
    harness = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (harness, env.get("PYTHONPATH")) if p)
    env.update(
        HOME=str(scratch / "home"),
        TMPDIR="/tmp",
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        PYTHONDONTWRITEBYTECODE="1",
        PYTHONUNBUFFERED="1",
    )
    if "XDG_CACHE_HOME" not in env:  # the real caches stay readable where they are
        env["HF_HOME"] = env.get("HF_HOME", str(Path.home() / ".cache" / "huggingface"))
        env["TORCH_HOME"] = env.get("TORCH_HOME", str(Path.home() / ".cache" / "torch"))
    return env


def _readable(sub_root: Path, bench: Benchmark) -> list[Path]:
    """Paths the child must read even when they lie under a folder it gets a private copy of."""
    paths = {
        sub_root,
        bench.root.resolve(),
        Path(__file__).resolve().parents[1],
        Path(sys.prefix),
        Path(sys.base_prefix),
        Path(sys.executable).resolve().parent,
        cache_root(),
    }  # the cache stays visible, read-only, even when it lies under /tmp
    paths |= {Path(p) for p in sys.path if p and Path(p).is_dir()}
    if os.environ.get("ATTRIB_BENCH_WEIGHTS"):
        paths.add(Path(os.environ["ATTRIB_BENCH_WEIGHTS"]))
    # Innermost first is not needed; drop paths inside another listed path.
    resolved = sorted({p.resolve() for p in paths if p.exists()})
    return [p for p in resolved if not any(p != q and p.is_relative_to(q) for q in resolved)]
