"""Throughput of ``splits import-abc`` (hashing) and ``splits verify --quick`` on a miniature.

    python benchmarks/bench_abc_import.py [--laion 2000] [--kib 400] [--jobs 2]

Builds the official layout with ``--laion`` LAION files of ``--kib`` KiB each (random bytes
behind a PNG signature: hashing does not decode), imports it (folder mode), verifies it
quickly and fully, and prints files/s, MiB/s, the ratio import / plain ``sha256`` of the same
bytes in one thread (how much the bookkeeping and threads cost or gain), and the time 1M
files of that size would take at the measured rate (an extrapolation, labelled as such).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

from benchmark.abc_import import import_abc
from benchmark.folder_benchmark import verify_files


def build(root: Path, n: int, kib: int) -> Path:
    ds = root / "dataset"
    rng = os.urandom
    for d in ("laion_subset", "exemplar/imagenet/images/n0", "synth/imagenet/media/n0_0/samples"):
        (ds / d).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (ds / "laion_subset" / f"{i:09d}.png").write_bytes(
            b"\x89PNG" + i.to_bytes(4, "big") + rng(kib * 1024)
        )
    (ds / "exemplar/imagenet/images/n0/a.JPEG").write_bytes(rng(1024))
    (ds / "synth/imagenet/media/n0_0/samples/00000.png").write_bytes(rng(1024))
    entry = {
        "exemplar": ["dataset/exemplar/imagenet/images/n0/a.JPEG"],
        "synth": {"media": ["dataset/synth/imagenet/media/n0_0/samples/00000.png"]},
        "class_id": "n0_0",
        "category": "x",
    }
    (ds / "json").mkdir()
    (ds / "json" / "test_observed_imagenet.json").write_text(json.dumps([entry]))
    return ds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--laion", type=int, default=2000)
    parser.add_argument("--kib", type=int, default=400)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    from benchmark.types import Part

    with tempfile.TemporaryDirectory() as tmp:
        ds = build(Path(tmp), args.laion, args.kib)
        files = sorted((ds / "laion_subset").iterdir())
        t = time.perf_counter()
        for f in files:
            hashlib.sha256(f.read_bytes()).hexdigest()
        plain = time.perf_counter() - t
        t = time.perf_counter()
        bench = import_abc(
            ds, Path(tmp) / "b", parts=[Part.OBJECT_SEEN], jobs=args.jobs, show_progress=False
        )
        imp = time.perf_counter() - t
        t = time.perf_counter()
        verify_files(bench, quick=True)
        quick = time.perf_counter() - t
        t = time.perf_counter()
        verify_files(bench, quick=False, jobs=args.jobs)
        full = time.perf_counter() - t
    n, mib = args.laion + 2, args.laion * args.kib / 1024
    print(f"files {n}, {mib:.0f} MiB, jobs {args.jobs}, cpus {os.cpu_count()}")
    print(f"import   {imp:7.2f} s  {n / imp:8.0f} files/s  {mib / imp:7.1f} MiB/s")
    print(
        f"plain    {plain:7.2f} s  (one-thread sha256 of the same files; ratio {plain / imp:.2f})"
    )
    print(f"verify --quick {quick:7.3f} s  {n / quick:8.0f} files/s")
    print(f"verify (full)  {full:7.2f} s  {n / full:8.0f} files/s")
    print(
        f"extrapolated to 1M files of {args.kib} KiB: import {1e6 / (n / imp) / 3600:.1f} h, "
        f"verify --quick {1e6 / (n / quick) / 60:.1f} min (same disk and cores)"
    )


if __name__ == "__main__":
    main()
