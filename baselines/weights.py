"""Finding a baseline's weights file, and checking it is the pinned one.

Looked for, in order:

1. ``--weights PATH``: the file itself, or a folder holding the catalog's file name;
2. ``$ATTRIB_BENCH_WEIGHTS/<file name>`` (a folder of downloaded checkpoints);
3. a Hub file: the Hugging Face cache (``huggingface_hub.hf_hub_download`` at the pinned
   revision, downloading when online); a URL: ``<cache>/weights/<file name>``, downloaded
   when online.

Every file is hashed; a pinned sha256 that does not match is an error. Offline with no file
gives one line naming the file, where to get it and where to put it. There is never a
fallback to random weights: those exist only when asked for (``random_weights=True``,
used by tests).
"""

from __future__ import annotations

import os
from pathlib import Path

from baselines.catalog import BaselineSpec, Weights, pin
from benchmark.errors import AttribBenchError
from benchmark.fileio import sha256_file
from benchmark.paths import cache_root

ENV_DIR = "ATTRIB_BENCH_WEIGHTS"


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


def _missing(spec: BaselineSpec, w: Weights, problem: str) -> AttribBenchError:
    where = f"${ENV_DIR}/{w.filename}" if os.environ.get(ENV_DIR) else "a folder"
    return AttribBenchError(
        None,
        spec.name,
        problem,
        f"download {w.source} and put it in {where}, then pass --weights "
        f"FOLDER or set {ENV_DIR}=FOLDER",
    )


def resolve_weights(spec: BaselineSpec, weights: str | Path | None = None) -> Path:
    """The verified local weights file of ``spec`` (see the module docstring for the order)."""
    w = spec.weights
    if w is None:
        raise AttribBenchError(None, spec.name, "has no weights", "use it without --weights")
    if weights is not None:
        path = Path(weights)
        if path.is_dir():
            path = path / w.filename
        if not path.is_file():
            raise AttribBenchError(
                path, "--weights", "not found", f"pass the file {w.filename} or its folder"
            )
        return verify(spec, path)
    env = os.environ.get(ENV_DIR)
    if env and (Path(env) / w.filename).is_file():
        return verify(spec, Path(env) / w.filename)
    path = _from_hub(spec, w, w.hub_repo) if w.hub_repo else _from_url(spec, w, str(w.url))
    return verify(spec, path)


def _from_hub(spec: BaselineSpec, w: Weights, repo: str) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    revision = pin(spec.name).get("revision") or "main"
    try:
        return Path(hf_hub_download(repo, w.filename, revision=revision))
    except LocalEntryNotFoundError:
        raise _missing(
            spec, w, f"{w.filename} is not in the Hugging Face cache and the Hub is offline"
        ) from None
    except Exception as exc:  # network or Hub errors: one line, the same fix
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise _missing(spec, w, f"cannot fetch {w.source} ({first})") from None


def _from_url(spec: BaselineSpec, w: Weights, url: str) -> Path:
    path = cache_root() / "weights" / w.filename
    if path.is_file():
        return path
    if _offline():
        raise _missing(spec, w, f"{w.filename} is not downloaded and the network is off")
    from torch.hub import download_url_to_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        download_url_to_file(url, str(tmp), progress=True)
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise _missing(spec, w, f"cannot download {url} ({first})") from None
    os.replace(tmp, path)
    return path


def verify(spec: BaselineSpec, path: Path) -> Path:
    """``path`` if it matches the pinned sha256 (or nothing is pinned yet)."""
    want = pin(spec.name).get("sha256")
    if want and file_sha256(path) != want:
        raise AttribBenchError(
            path,
            spec.name,
            f"sha256 {file_sha256(path)[:16]}... is not the pinned {want[:16]}...",
            f"delete it and fetch {spec.weights.source} again"
            if spec.weights
            else "fetch it again",
        )
    return path


_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a weights file, memoized per (path, size, mtime) within the process."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = sha256_file(path)
    return _HASHES[key]


def pin_weights(name: str) -> dict[str, str | None]:
    """Resolve ``name``'s weights online and record revision + sha256 in the lock file.

    A Hub file is pinned at the repository's current commit, with the sha256 the Hub records
    for it; a URL is downloaded and hashed. An existing, different pin is never overwritten.
    """
    import json

    from baselines.catalog import LOCK_FILE, get_spec

    spec = get_spec(name)
    w = spec.weights
    if w is None:
        raise AttribBenchError(None, name, "has no weights to pin", "name a weighted baseline")
    if w.hub_repo:
        from huggingface_hub import HfApi

        info = HfApi().model_info(w.hub_repo, files_metadata=True)
        files = {s.rfilename: s for s in info.siblings or []}
        if w.filename not in files:
            raise AttribBenchError(
                None, name, f"{w.hub_repo} has no {w.filename}", "fix the catalog entry"
            )
        lfs = files[w.filename].lfs
        revision = info.sha
        sha = lfs.sha256 if lfs else None
    else:
        revision, sha = None, file_sha256(_from_url(spec, w, str(w.url)))
    old = pin(name).get("sha256")
    if old and sha != old:
        raise AttribBenchError(
            LOCK_FILE,
            name,
            f"upstream now serves sha256 {sha}, not the pinned {old}",
            "investigate before re-pinning: results made with the old file would not compare",
        )
    data = json.loads(LOCK_FILE.read_text(encoding="utf-8"))
    data["weights"][name] = {**data["weights"].get(name, {}), "revision": revision, "sha256": sha}
    LOCK_FILE.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    return data["weights"][name]
