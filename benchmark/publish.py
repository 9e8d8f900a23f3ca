"""Publishing a frozen benchmark version to the Hugging Face Hub as a dataset repo.

One commit holds the manifest, the dataset card and every file the manifest pins: the
shards and the artifacts (base model, deltas), from the same list ``splits verify`` checks
(:func:`benchmark.integrity.listed_files`), and nothing else in the folder. The commit is
tagged ``v<version>`` so that ``--benchmark hf://OWNER/NAME@v<version>`` pins exactly what
was verified here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark.errors import BenchmarkError
from benchmark.integrity import listed_files
from benchmark.splits import MANIFEST, load_benchmark, verify_benchmark


@dataclass(frozen=True)
class Upload:
    path_in_repo: str
    local: Path
    num_bytes: int


def refuse_folder_backed(root: Path) -> None:
    """An imported AbC (``folder`` in its manifest) keeps its images outside the folder: a
    push would publish tables that point at files no downloader has."""
    from benchmark.fileio import read_json

    manifest = read_json(root / MANIFEST, "manifest") if (root / MANIFEST).is_file() else {}
    if isinstance(manifest, dict) and "folder" in manifest:
        raise BenchmarkError(
            root / MANIFEST,
            "folder",
            "its images are files under a source folder, not in its shards, so it is not "
            "self-contained",
            "--pack it first: attrib-bench splits import-abc SRC --dest DIR --pack",
        )


def planned_uploads(root: str | Path) -> list[Upload]:
    """What a push would upload, after re-hashing every listed file (shards and artifacts)."""
    root = Path(root)
    refuse_folder_backed(root)
    verify_benchmark(root)
    bench = load_benchmark(root)
    rels = [MANIFEST, "README.md"] + [f.path for f in listed_files(bench.manifest)]
    missing = [r for r in rels if not (root / r).is_file()]
    if missing:
        raise BenchmarkError(
            root / missing[0], None, "file to publish is missing", "freeze the benchmark again"
        )
    return [Upload(r, root / r, (root / r).stat().st_size) for r in rels]


def push_benchmark(
    root: str | Path,
    repo_id: str,
    *,
    create_pr: bool = False,
    token: str | None = None,
    api: Any | None = None,
) -> str:
    """Upload in one commit and tag it; returns the commit (or pull request) URL.

    ``api``: an ``HfApi``-like client (default: ``HfApi(token=token)``)."""
    from huggingface_hub import CommitOperationAdd, HfApi

    uploads = planned_uploads(root)
    bench = load_benchmark(root)
    api = api if api is not None else HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", exist_ok=True)
    ops = [
        CommitOperationAdd(path_in_repo=u.path_in_repo, path_or_fileobj=str(u.local))
        for u in uploads
    ]
    info = api.create_commit(
        repo_id,
        operations=ops,
        repo_type="dataset",
        create_pr=create_pr,
        commit_message=f"{bench.name} {bench.version} (manifest sha256 "
        f"{bench.manifest_sha256[:12]})",
    )
    if not create_pr:
        api.create_tag(repo_id, tag=f"v{bench.version}", repo_type="dataset", revision=info.oid)
    return info.pr_url if create_pr else info.commit_url


# --------------------------------------------------------------------------------------------
# The leaderboard site as a static Hugging Face Space


@dataclass(frozen=True)
class SitePlan:
    space_id: str
    operations: list[tuple[str, bytes]]  # (path in the Space, content); index.html at the root

    def describe(self) -> list[str]:
        lines = [f"{self.space_id} (static Space): {len(self.operations)} files in one commit"]
        return lines + [f"  upload {p} ({len(b):,} bytes)" for p, b in self.operations]


def plan_site(root: str | Path, space_id: str) -> SitePlan:
    """Every file of ``root/site`` (``leaderboard build``), with ``index.html`` at the Space's
    root. Refused when the site is missing or older than the store (its ``index.html`` is not
    what ``build`` would write now), so a Space never shows other numbers than the results."""
    from benchmark.errors import AttribBenchError
    from benchmark.leaderboard import SITE_DIR, read_store, render_site

    site = Path(root) / SITE_DIR
    index = site / "index.html"
    build = "run attrib-bench leaderboard build first"
    if not index.is_file():
        raise AttribBenchError(index, None, "no site to publish", build)
    current = render_site(read_store(root, on_error=lambda exc: None))
    if index.read_text(encoding="utf-8") != current:
        raise AttribBenchError(index, None, "is older than the results store", build)
    files = sorted(p for p in site.rglob("*") if p.is_file() and not p.is_symlink())
    return SitePlan(space_id, [(p.relative_to(site).as_posix(), p.read_bytes()) for p in files])


def push_site(plan: SitePlan, api: Any, *, create_pr: bool = False, message: str | None = None):
    """Create the static Space if needed and upload the site in one commit (a pull request
    with ``create_pr``)."""
    from huggingface_hub import CommitOperationAdd

    if not create_pr:
        api.create_repo(plan.space_id, repo_type="space", space_sdk="static", exist_ok=True)
    ops = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=b) for p, b in plan.operations]
    return api.create_commit(
        repo_id=plan.space_id,
        repo_type="space",
        operations=ops,
        commit_message=message or f"Leaderboard site: {len(ops)} files",
        create_pr=create_pr,
    )
