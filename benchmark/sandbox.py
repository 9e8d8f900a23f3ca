"""Running a submitted extractor in an isolated child process (the parent never imports it).

The harness (this process) computes which feature blocks are missing from the cache, writes a
job file into a fresh scratch folder and starts ``python -m benchmark.sandbox_child`` inside a
sandbox. The child loads the extractor, embeds the missing blocks and writes each one as a
safetensors file into its scratch folder, announcing it on a pipe. The parent reads the file
(never following links), checks it (float [rows, D], finite, one D for every block and role),
writes the cache itself and advances the progress bar. Nothing the child says is trusted: the
parent knows which blocks it asked for and accepts exactly those.

Sandbox backends, tried in this order (``--isolation`` forces one):

- ``bwrap`` (bubblewrap): new user, mount, network, PID, IPC and UTS namespaces; ``/`` bound
  read-only; private tmpfs on ``/tmp``, ``/var/tmp``, ``/run`` and ``/dev/shm``; a minimal
  ``/dev`` (plus the GPU device nodes); only the scratch folder is writable; no capabilities.
- ``unshare`` (util-linux): ``unshare --user --map-root-user --mount --net --pid --fork``, then
  :mod:`benchmark.sandbox_child` remounts every mount read-only except the scratch folder,
  mounts the same private tmpfs folders, enters a nested user namespace (which locks the
  read-only flags: they cannot be undone from inside) and drops every capability.

Either way the child has no network (a fresh network namespace with a downed loopback), cannot
see or signal the harness (PID namespace), gets only allow-listed environment variables (no
tokens), and runs under ``RLIMIT_DATA`` (``--memory-limit``) and ``RLIMIT_FSIZE``. Its stdout
and stderr go to a log file, never to the harness's output. ``--timeout`` bounds the whole
extraction (wall clock); the child's process group is killed on expiry. With ``--trust-code``
the child runs without a sandbox (for machines where neither backend works); the result
records which isolation was used under ``environment.isolation``.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmark import features as feat
from benchmark.errors import AttribBenchError, SubmissionError
from benchmark.paths import cache_root
from benchmark.sandbox_backends import (
    BACKENDS,
    FSIZE_LIMIT,
    HIDDEN,
    MAX_BLOCK_BYTES,
    MAX_MESSAGE,
    _child_env,
    _readable,
    backend_works,
    wrapper,
)
from benchmark.splits import Benchmark


@dataclass(frozen=True)
class SandboxOptions:
    """How submitted code is run: backend, limits, and the explicit opt-out."""

    isolation: str = "auto"  # auto | bwrap | unshare
    trust_code: bool = False  # run the child without a sandbox (recorded in the result)
    timeout: float | None = None  # seconds, whole extraction, wall clock
    memory_limit: str | None = None  # e.g. "4G": RLIMIT_DATA of the child

    def __post_init__(self) -> None:
        if self.isolation not in ("auto", *BACKENDS):
            raise AttribBenchError(
                None,
                "--isolation",
                f"unknown backend {self.isolation!r}",
                "use auto, bwrap or unshare",
            )
        if self.timeout is not None and not self.timeout > 0:
            raise AttribBenchError(
                None, "--timeout", f"must be positive, got {self.timeout}", "e.g. --timeout 3600"
            )
        if self.memory_limit is not None:
            parse_memory(self.memory_limit)


def parse_memory(text: str) -> int:
    """``"4G"``, ``"512M"``, ``"1.5G"`` or bytes -> bytes."""
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    s = str(text).strip().upper().removesuffix("B").removesuffix("I")
    num, unit = (s[:-1], s[-1]) if s and s[-1] in units else (s, "")
    try:
        value = int(float(num) * units[unit])
    except ValueError:
        value = 0
    if value < (64 << 20):
        raise AttribBenchError(
            None,
            "--memory-limit",
            f"{text!r} is not a size of at least 64M",
            "e.g. --memory-limit 4G (torch alone needs about 1G)",
        )
    return value


# --------------------------------------------------------------------------------------------
# backends


def resolve_backend(options: SandboxOptions) -> str:
    """The backend to use: ``bwrap``, ``unshare`` or ``none`` (``--trust-code`` only)."""
    if options.trust_code:
        return "none"
    wanted = BACKENDS if options.isolation == "auto" else (options.isolation,)
    for backend in wanted:
        if backend_works(backend):
            return backend
    tried = " or ".join(wanted)
    raise AttribBenchError(
        None,
        "--isolation",
        f"cannot isolate submitted code here ({tried} cannot create user, mount and network "
        "namespaces)",
        "apt-get install bubblewrap, allow unprivileged user namespaces, or pass "
        "--trust-code after reviewing the code",
    )


# the parent side


@dataclass
class _Todo:
    table: str
    role: str
    key: str
    ids: tuple[str, ...]


def _read_block(path: Path) -> torch.Tensor:
    """A block file from the child's scratch: a regular file, not a link, size-capped."""
    from safetensors.torch import load

    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_BLOCK_BYTES:
            raise ValueError("not a regular file of sane size")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read()
    finally:
        os.close(fd)
    tensors = load(data)
    if set(tensors) != {"features"}:
        raise ValueError(f"tensors {sorted(tensors)[:3]}, expected 'features'")
    return tensors["features"]


class _Child:
    """One sandboxed child: started, read line by line, killed on any way out."""

    def __init__(self, sub_label: str, log: Path, timeout: float | None):
        self.label, self.log, self.timeout = sub_label, log, timeout
        self.proc: subprocess.Popen | None = None
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.buffer = b""
        self.read_fd = -1

    def fail(self, problem: str, fix: str = "see the log") -> AttribBenchError:
        return SubmissionError(self.label, "extractor", problem, f"{fix}; child log: {self.log}")

    def start(self, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        self.read_fd, write_fd = os.pipe()
        with open(self.log, "ab") as log:
            try:
                self.proc = subprocess.Popen(
                    [*argv, str(write_fd)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    env=env,
                    cwd=cwd,
                    pass_fds=(write_fd,),
                    start_new_session=True,
                )
            except OSError as exc:
                os.close(write_fd)
                raise self.fail(f"cannot start the child ({exc.strerror})") from None
        os.close(write_fd)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()
        if self.read_fd >= 0:
            os.close(self.read_fd)
            self.read_fd = -1

    def messages(self):
        """Each JSON message of the child; ends when it closes the pipe (it exited)."""
        while True:
            while b"\n" in self.buffer:
                line, self.buffer = self.buffer.split(b"\n", 1)
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                if isinstance(msg, dict):
                    yield msg
            wait = None if self.deadline is None else self.deadline - time.monotonic()
            if wait is not None and wait <= 0:
                raise self.fail(
                    f"did not finish within --timeout {self.timeout:g} s (killed)",
                    "raise --timeout or make the extractor faster",
                )
            ready, _, _ = select.select([self.read_fd], [], [], wait)
            if not ready:
                continue
            chunk = os.read(self.read_fd, MAX_MESSAGE)
            if not chunk:
                return
            self.buffer = (self.buffer + chunk)[-4 * MAX_MESSAGE :]

    def ended(self) -> str:
        """How the child ended, in words."""
        if self.proc is None:
            return "was never started"
        try:
            rc = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return "closed its channel but kept running (killed)"
        if rc < 0 or rc > 128:
            sig = -rc if rc < 0 else rc - 128
            name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else sig
            return f"was killed by signal {name}" + (
                " (out of memory or over a file-size limit?)" if sig in (9, 25) else ""
            )
        return f"exited with status {rc}"


def _message_error(child: _Child, err: Any) -> AttribBenchError:
    """The child's own one-line error (user-code failure), made safe to print."""

    def clean(value: Any, limit: int = 300) -> str:
        text = " ".join(str(value).split())
        return "".join(c for c in text if c.isprintable())[:limit]

    if not isinstance(err, dict):
        return child.fail("reported an unreadable error")
    fix = clean(err.get("fix") or "fix the extractor")
    if err.get("memory"):
        fix = f"{fix}; or raise --memory-limit"
    return SubmissionError(
        clean(err.get("source")) or child.label,
        clean(err.get("field"), 80) or None,
        clean(err.get("problem")) or "failed",
        f"{fix}; child log: {child.log}",
    )


def extract_isolated(
    sub,
    bench: Benchmark,
    tables: list[tuple[str, set[str] | None, str]],
    *,
    cache: feat.FeatureCache | None,
    device: torch.device,
    batch_size: int | None,
    options: SandboxOptions,
    source: str,
    progress: Callable[[int], None] | None = None,
) -> tuple[dict[str, dict[str, torch.Tensor]], str]:
    """Features of each (table, wanted ids, role), id -> float32 row, and the backend used.

    Cached blocks are read here; missing ones are computed by ONE sandboxed child.
    """
    feat.check_batch_size(batch_size)
    backend = resolve_backend(options)
    out: dict[str, dict[str, torch.Tensor]] = {t: {} for t, _, _ in tables}
    todo: dict[tuple[str, str], _Todo] = {}
    dims: set[int] = set()

    def emit(table: str, ids: tuple[str, ...], feats: torch.Tensor) -> None:
        for i, image_id in enumerate(ids):
            out[table][image_id] = feats[i]
        if progress:
            progress(len(ids))

    for table, wanted, role in tables:
        for block in bench.iter_image_blocks(table, wanted):
            feats = feat.cached_block(cache, role, block)
            if feats is None:
                todo[(table, block.key)] = _Todo(table, role, block.key, block.ids)
            else:
                dims.add(int(feats.shape[1]))
                emit(table, block.ids, feats)
    if todo:
        _run_child(
            sub,
            bench,
            tables,
            todo,
            backend,
            cache=cache,
            device=device,
            batch_size=batch_size,
            options=options,
            source=source,
            emit=emit,
            dims=dims,
        )
    if len(dims) > 1:
        raise SubmissionError(
            source,
            "embed",
            f"features have different dims {sorted(dims)} across blocks",
            "return one dim for every image (clear the feature cache if it is stale)",
        )
    return out, backend


def _run_child(
    sub, bench, tables, todo, backend, *, cache, device, batch_size, options, source, emit, dims
) -> None:
    root = cache_root() / "sandbox"
    try:
        root.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix="run-", dir=root))  # ours alone
        (scratch / "out").mkdir()
        (scratch / "home").mkdir()
        (root / "logs").mkdir(exist_ok=True)
        log = root / "logs" / f"{scratch.name}.log"
        job = {
            "submission": str(sub.root),
            "benchmark": str(bench.root.resolve()),
            "device": str(device),
            "batch_size": batch_size,
            "source": source,
            "out": str(scratch / "out"),
            "backend": backend,
            "scratch": str(scratch),
            "readable": [str(p) for p in _readable(sub.root, bench)],
            "hidden": list(HIDDEN),
            "memory": parse_memory(options.memory_limit) if options.memory_limit else None,
            "fsize": FSIZE_LIMIT,
            "tables": [
                {
                    "table": t,
                    "role": r,
                    "wanted": None if w is None else sorted(w),
                    "todo": sorted(k for (tt, k) in todo if tt == t),
                }
                for t, w, r in tables
            ],
        }
        write_job(scratch / "job.json", json.dumps(job))
    except OSError as exc:
        raise feat.disk_full(root, "sandbox scratch", exc) from None
    argv = [
        *wrapper(backend, scratch, [Path(p) for p in job["readable"]]),
        sys.executable,
        "-s",
        "-m",
        "benchmark.sandbox_child",
        str(scratch / "job.json"),
    ]
    child = _Child(str(sub.yaml_path), log, options.timeout)
    done = False
    try:
        child.start(argv, _child_env(scratch), scratch)
        for msg in child.messages():
            if "error" in msg:
                raise _message_error(child, msg["error"])
            if msg.get("done"):
                done = True
                continue
            item = todo.get((str(msg.get("table")), str(msg.get("key"))))
            name = str(msg.get("file", ""))
            if item is None or not name.isdigit():
                continue  # not something we asked for
            path = scratch / "out" / f"{name}.safetensors"
            try:
                feats = _read_block(path)
            except Exception as exc:
                first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
                raise child.fail(f"returned an unreadable feature block ({first})") from None
            path.unlink(missing_ok=True)
            problem = feat.check_features(feats, len(item.ids), f"{item.table} {item.ids[0]}")
            if problem:
                raise SubmissionError(
                    source,
                    "embed",
                    f"returned {problem}",
                    f"return finite float [batch, dim] features; child log: {log}",
                )
            feats = feats.to(torch.float32)
            dims.add(int(feats.shape[1]))
            if len(dims) > 1:
                raise SubmissionError(
                    source,
                    "embed",
                    f"feature dim changed between blocks ({sorted(dims)})",
                    f"return one dim for every batch; child log: {log}",
                )
            if cache is not None:
                cache.save(item.role, item.key, feats)
            del todo[(item.table, item.key)]
            emit(item.table, item.ids, feats)
        how = child.ended()
        if todo or not done or child.proc.returncode != 0:
            raise child.fail(
                f"the extractor's process {how} before finishing ({len(todo)} block(s) missing)"
            )
    finally:
        child.kill()
        shutil.rmtree(scratch, ignore_errors=True)  # our own folder only (mkdtemp above)
    if log.is_file() and log.stat().st_size == 0:
        log.unlink(missing_ok=True)


def write_job(path: Path, text: str) -> None:
    """Write the child's job file (a seam for tests that simulate a full disk)."""
    path.write_text(text, encoding="utf-8")
