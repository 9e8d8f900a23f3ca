"""Feature-extraction throughput of the harness against the bare model forward.

    python benchmarks/bench_extract.py [--baseline dino_vitb16] [--images 512] [--batch 64]
                                       [--repeats 2] [--threads N] [--device cpu|cuda]

The harness path is ``benchmark.features.extract_table`` on AbC-mini distractors with a
catalog baseline (random weights: a forward costs the same whatever the weights are): read
the Parquet shard, decode WebP, preprocess in a thread pool one block ahead, stack, copy to
the device, embed in batches (fp16 autocast on CUDA), check the output. The reference is the
same model's forward alone on the same images already decoded, preprocessed, stacked into
the same batches and resident on the device. Both run in one process, interleaved. Prints
images per second and the ratio harness / bare (goal: >= 0.9, i.e. decoding and
preprocessing must not be the bottleneck).

``harness isolated`` is the path every submitted extractor takes: a temporary submission that
wraps the same baseline runs in the sandboxed child (``--isolation``, default auto), features
come back through safetensors files in its scratch folder and are checked by the parent. Its
time includes starting the sandbox, importing torch and building the model in the child.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch

from baselines.models import Baseline
from benchmark import features as feat
from benchmark.benchmarks import resolve_benchmark
from benchmark.sandbox import SandboxOptions, extract_isolated, resolve_backend
from benchmark.submission import load_submission

WRAPPER = """
from baselines.models import Baseline


class Wrapped(Baseline):
    def __init__(self, name):
        super().__init__(name, random_weights=True)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="dino_vitb16")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--isolation", default="auto", help="auto | bwrap | unshare")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = feat.pick_device(args.device)

    bench = resolve_benchmark("abc-mini")
    ids = list(bench.distractor_ids[: args.images])
    extractor = Baseline(args.baseline, random_weights=True).to(device)
    images = [
        feat.decode(data)
        for block in bench.iter_image_blocks("distractors", set(ids))
        for data in block.images
    ]
    ready = torch.stack([extractor.preprocess(im) for im in images])
    batches = [b.to(device) for b in ready.split(args.batch)]

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def harness() -> None:
        feat.extract_table(
            extractor,
            bench,
            "distractors",
            set(ids),
            role="gallery",
            cache=None,
            device=device,
            batch_size=args.batch,
        )
        sync()

    def bare() -> None:
        with torch.inference_mode():
            for b in batches:
                extractor.embed(b).cpu()
        sync()

    work = Path(tempfile.mkdtemp(prefix="bench-extract-"))
    sub_dir = work / "sub"
    sub_dir.mkdir()
    (sub_dir / "extractor.py").write_text(WRAPPER)
    (sub_dir / "submission.yaml").write_text(
        "schema_version: 1\nname: bench-extract\nkind: extractor\n"
        "description: a catalog baseline with random weights, wrapped as a submission\n"
        "license: MIT\n"
        f"extractor: {{entry: extractor.py:Wrapped, kwargs: {{name: {args.baseline}}}}}\n"
    )
    sub = load_submission(sub_dir)
    sandbox_options = SandboxOptions(isolation=args.isolation)
    backend = resolve_backend(sandbox_options)

    def isolated() -> None:
        extract_isolated(
            sub,
            bench,
            [("distractors", set(ids), "gallery")],
            cache=None,
            device=device,
            batch_size=args.batch,
            options=sandbox_options,
            source="bench",
        )

    def preprocess_only() -> None:
        for im in images:
            extractor.preprocess(im)

    bare()  # warm-up (allocator, kernels)
    times: dict[str, list[float]] = {
        "harness": [],
        "harness isolated": [],
        "bare forward": [],
        "preprocess only": [],
    }
    for _ in range(args.repeats):
        runs = (("harness", harness), ("harness isolated", isolated), ("bare forward", bare))
        for name, fn in runs:
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    preprocess_only()
    times["preprocess only"].append(time.perf_counter() - t0)

    n = len(ids)
    precision = "fp16 autocast" if extractor.spec.get("half") else "fp32"
    print(
        f"{args.baseline} (random weights, {precision}) on {device}, {n} AbC-mini images, "
        f"batch {args.batch}, {torch.get_num_threads()} threads"
    )
    for name, ts in times.items():
        best = min(ts)
        label = f"{name} (1 thread)" if name == "preprocess only" else name
        print(f"  {label:<26} {best:8.2f} s   {n / best:8.1f} images/s")
    ratio = min(times["bare forward"]) / min(times["harness"])
    print(f"harness (in-process) speed / bare forward speed: {ratio:.2f} (goal >= 0.90)")
    iso = min(times["bare forward"]) / min(times["harness isolated"])
    print(f"harness isolated ({backend}) speed / bare forward speed: {iso:.2f} (goal >= 0.90)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
