"""Publishing a frozen benchmark version to the Hugging Face Hub as a dataset repo.

One commit holds the manifest, the dataset card and every shard the manifest lists (nothing
else in the folder), and the commit is tagged ``v<version>`` so that
``--benchmark hf://OWNER/NAME@v<version>`` pins exactly what was verified here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from benchmark.errors import BenchmarkError
from benchmark.splits import MANIFEST, load_benchmark, verify_benchmark


@dataclass(frozen=True)
class Upload:
    path_in_repo: str
    local: Path
    num_bytes: int


def planned_uploads(root: str | Path) -> list[Upload]:
    """What a push would upload, after re-hashing every shard."""
    root = Path(root)
    verify_benchmark(root)
    bench = load_benchmark(root)
    rels = [MANIFEST, "README.md"] + [
        f["path"] for t in bench.manifest["tables"].values() for f in t["files"]
    ]
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
) -> str:
    """Upload in one commit and tag it; returns the commit (or pull request) URL."""
    from huggingface_hub import CommitOperationAdd, HfApi

    uploads = planned_uploads(root)
    bench = load_benchmark(root)
    api = HfApi(token=token)
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
