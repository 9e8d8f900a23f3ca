"""The child side of :mod:`benchmark.sandbox`: ``python -m benchmark.sandbox_child JOB FD``.

Harness code that runs inside the sandbox, before and around the submitted extractor. For the
``unshare`` backend it first builds the filesystem view (everything read-only except the
scratch folder, private tmpfs folders), enters a nested user namespace so the read-only flags
are locked, and drops every capability; then, as for every backend, it sets the resource
limits, loads the extractor, embeds the blocks the parent asked for and writes each into the
scratch folder, announcing it on the pipe ``FD``. A user-code failure is sent as one error
message; anything else (an exit, a signal) the parent notices on its own.

Nothing here imports torch before the filesystem view and the limits are in place.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import sys
from pathlib import Path

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC = 32, 1024, 2048, 4096, 16384
MS_PRIVATE, MS_RELATIME, MS_STRICTATIME = 1 << 18, 1 << 21, 1 << 24
CLONE_NEWNS, CLONE_NEWUSER = 0x00020000, 0x10000000
PR_SET_NO_NEW_PRIVS = 38
PROC_READ_ONLY = ("/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus", "/proc/fs")
_FLAG_OPTS = {
    "nosuid": MS_NOSUID,
    "nodev": MS_NODEV,
    "noexec": MS_NOEXEC,
    "noatime": MS_NOATIME,
    "nodiratime": MS_NODIRATIME,
    "relatime": MS_RELATIME,
}


class SetupError(Exception):
    """The sandbox could not be built: the child refuses to run the submission."""


_libc = ctypes.CDLL(None, use_errno=True)


def _mount(src: str | None, target: str, fstype: str | None, flags: int, data: str | None = None):
    def enc(s: str | None) -> bytes | None:
        return None if s is None else s.encode()

    if _libc.mount(enc(src), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)) != 0:
        err = ctypes.get_errno()
        raise SetupError(f"mount {target}: {os.strerror(err)}")


def _mounts() -> list[tuple[str, int]]:
    """(mount point, locked per-mount flags) of every mount, in /proc/self/mountinfo order."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        point = fields[4].encode().decode("unicode_escape")  # \040 for spaces
        flags = 0
        for opt in fields[5].split(","):
            flags |= _FLAG_OPTS.get(opt, 0)
        out.append((point, flags))
    return out


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def setup_unshare(scratch: str, readable: list[str], hidden: list[str]) -> None:
    """Inside ``unshare --user --map-root-user --mount --net --pid``: build the view."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    under = [
        p for p in readable if any(p == h or p.startswith(h.rstrip("/") + "/") for h in hidden)
    ]
    fds = {p: os.open(p, os.O_PATH) for p in under if os.path.exists(p)}
    scratch_fd = os.open(scratch, os.O_PATH)
    tmpfs = []
    for h in hidden:
        if os.path.isdir(h) and not os.path.islink(h):
            _mount("tmpfs", h, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=1g")
            tmpfs.append(h)
    for p, fd in fds.items():
        os.makedirs(p, exist_ok=True)
        _mount(f"/proc/self/fd/{fd}", p, None, MS_BIND | MS_REC)
    os.makedirs(scratch, exist_ok=True)
    _mount(f"/proc/self/fd/{scratch_fd}", scratch, None, MS_BIND)
    for p in PROC_READ_ONLY:  # kernel settings: /proc itself stays (it is this PID namespace's)
        if os.path.exists(p):
            _mount(p, p, None, MS_BIND | MS_REC)
    keep = {scratch, *tmpfs, "/proc"}
    for point, flags in _mounts():
        if point in keep:
            continue
        try:
            _mount(None, point, None, MS_REMOUNT | MS_BIND | MS_RDONLY | flags)
        except SetupError:
            if os.path.exists(point) and _writable(point):
                raise
    # A nested user namespace + mount namespace: its mounts are locked, so code running in it
    # cannot remount them read-write or unmount them to uncover what lies beneath.
    uid, gid = os.getuid(), os.getgid()
    if _libc.unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0:
        raise SetupError(f"nested unshare: {os.strerror(ctypes.get_errno())}")
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"{uid} {uid} 1")
    _write("/proc/self/gid_map", f"{gid} {gid} 1")
    drop_capabilities()


def _writable(point: str) -> bool:
    return os.statvfs(point).f_flag & os.ST_RDONLY == 0


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def drop_capabilities() -> None:
    """No capabilities, and none to gain through exec (setuid binaries included)."""
    if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise SetupError("cannot set no_new_privs")
    header, data = _CapHeader(0x20080522, 0), (_CapData * 2)()
    if _libc.capset(ctypes.byref(header), data) != 0:
        raise SetupError(f"capset: {os.strerror(ctypes.get_errno())}")


def set_limits(memory: int | None, fsize: int | None) -> None:
    """Hard and soft limits, so the extractor cannot raise them again."""
    if memory:
        resource.setrlimit(resource.RLIMIT_DATA, (memory, memory))
    if fsize:
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _send(chan, msg: dict) -> None:
    chan.write(json.dumps(msg) + "\n")
    chan.flush()


def _pid1_reaper() -> None:
    """With ``unshare --pid`` this process is the namespace's init, which ignores signals it
    sends itself; fork so the extractor runs as an ordinary process, and mirror its end."""
    pid = os.fork()
    if pid == 0:
        return
    while True:
        try:
            done, status = os.waitpid(-1, 0)
        except ChildProcessError:
            os._exit(1)
        if done == pid:
            if os.WIFSIGNALED(status):
                os._exit(128 + os.WTERMSIG(status))
            os._exit(os.waitstatus_to_exitcode(status))


def run(job: dict, chan) -> None:
    """Load the extractor and write every block the parent asked for."""
    import torch
    from safetensors.torch import save_file

    from benchmark import features as feat
    from benchmark.splits import load_benchmark
    from benchmark.submission import load_extractor, load_submission

    sub = load_submission(job["submission"])
    bench = load_benchmark(job["benchmark"], verify=False)  # the parent verified it
    device = torch.device(job["device"])
    extractor = load_extractor(sub)
    if hasattr(extractor, "to"):
        extractor = extractor.to(device) or extractor
    _send(chan, {"ready": True})
    runner = feat._Runner(extractor, None, device, 0, job["source"])
    out, n = Path(job["out"]), 0
    for spec in job["tables"]:
        todo = set(spec["todo"])
        if not todo:
            continue
        wanted = None if spec["wanted"] is None else set(spec["wanted"])
        for block, feats in feat.extract_blocks(
            extractor,
            bench,
            spec["table"],
            wanted,
            role=spec["role"],
            device=device,
            batch_size=job["batch_size"],
            source=job["source"],
            runner=runner,
            skip=lambda b, todo=todo: b.key not in todo,
        ):
            if feats is None:
                continue
            n += 1
            tmp = out / f".{n}.tmp"
            save_file({"features": feats.contiguous()}, str(tmp))
            os.replace(tmp, out / f"{n}.safetensors")
            _send(chan, {"table": spec["table"], "key": block.key, "file": str(n)})
    _send(chan, {"done": True})


def main(argv: list[str]) -> int:
    job = json.loads(Path(argv[1]).read_text(encoding="utf-8"))
    chan = os.fdopen(int(argv[2]), "w", buffering=1)
    try:
        if job["backend"] == "unshare":
            setup_unshare(job["scratch"], job["readable"], job["hidden"])
            _pid1_reaper()
        set_limits(job.get("memory"), job.get("fsize"))
    except (SetupError, OSError) as exc:
        _send(
            chan,
            {
                "error": {
                    "source": job["submission"],
                    "field": "--isolation",
                    "problem": f"cannot build the sandbox ({exc})",
                    "fix": "use --isolation bwrap, or --trust-code after review",
                }
            },
        )
        return 2
    if job.get("probe"):
        _send(chan, {"done": True})
        return 0
    from benchmark.errors import AttribBenchError

    try:
        run(job, chan)
    except AttribBenchError as exc:
        memory = "MemoryError" in exc.problem or "can't allocate memory" in exc.problem
        _send(
            chan,
            {
                "error": {
                    "source": exc.source,
                    "field": exc.field,
                    "problem": exc.problem,
                    "fix": exc.fix,
                    "memory": memory,
                }
            },
        )
        return 2
    except MemoryError:
        _send(
            chan,
            {
                "error": {
                    "source": job["source"],
                    "field": "extractor",
                    "problem": "ran out of memory",
                    "fix": "use less memory",
                    "memory": True,
                }
            },
        )
        return 2
    except SystemExit as exc:
        _send(
            chan,
            {
                "error": {
                    "source": job["source"],
                    "field": "extractor",
                    "problem": f"called sys.exit({exc.code!r}) before finishing",
                    "fix": "do not exit from the extractor",
                }
            },
        )
        return 2
    except Exception as exc:  # harness-side surprises and user code outside preprocess/embed
        import traceback

        traceback.print_exc()  # into the log
        first = (str(exc).splitlines() or [""])[0]
        _send(
            chan,
            {
                "error": {
                    "source": job["source"],
                    "field": "extractor",
                    "problem": f"raised {type(exc).__name__}: {first}",
                    "fix": "fix the extractor (the log has the traceback)",
                    "memory": "can't allocate memory" in first,
                }
            },
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
