"""Feature-extraction throughput of the harness against the bare model forward.

    python benchmarks/bench_extract.py [--model vit_base_patch16_224] [--images 512]
                                       [--batch 64] [--repeats 2] [--threads N]

The harness path is ``benchmark.features.extract_table`` on AbC-mini distractors: read the
Parquet shard, decode WebP, preprocess in a thread pool, stack, embed in batches, check the
output. The baseline is the same model's forward alone on the same images already decoded,
preprocessed and stacked into the same batches. Both run in one process, interleaved, with
random weights (a forward costs the same whatever the weights are). Prints images per second
and the speed ratio harness / bare (goal: >= 0.9, i.e. decoding and preprocessing must not be
the bottleneck). Preprocessing here is DINO's (resize 256 bicubic, center crop 224, ImageNet
mean/std).
"""

from __future__ import annotations

import argparse
import time

import torch
from torchvision.transforms import v2

from benchmark import features as feat
from benchmark.benchmarks import resolve_benchmark


class TimmExtractor:
    def __init__(self, model: str):
        import timm

        self.model = timm.create_model(model, pretrained=False, num_classes=0).eval()
        self.transform = v2.Compose(
            [
                v2.PILToTensor(),
                v2.Resize(256, interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
                v2.CenterCrop(224),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
            ]
        )

    def preprocess(self, image):
        return self.transform(image.convert("RGB"))

    def embed(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model(batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_base_patch16_224")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    bench = resolve_benchmark("abc-mini")
    ids = list(bench.distractor_ids[: args.images])
    extractor = TimmExtractor(args.model)
    cpu = torch.device("cpu")
    images = [
        feat.decode(data)
        for block in bench.iter_image_blocks("distractors", set(ids))
        for data in block.images
    ]
    ready = torch.stack([extractor.preprocess(im) for im in images])
    batches = list(ready.split(args.batch))

    def harness() -> None:
        feat.extract_table(
            extractor,
            bench,
            "distractors",
            set(ids),
            role="gallery",
            cache=None,
            device=cpu,
            batch_size=args.batch,
        )

    def bare() -> None:
        with torch.inference_mode():
            for b in batches:
                extractor.embed(b)

    def preprocess_only() -> None:
        for im in images:
            extractor.preprocess(im)

    bare()  # warm-up (allocator, kernels)
    times: dict[str, list[float]] = {"harness": [], "bare forward": [], "preprocess only": []}
    for _ in range(args.repeats):
        for name, fn in (("harness", harness), ("bare forward", bare)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    preprocess_only()
    times["preprocess only"].append(time.perf_counter() - t0)

    n = len(ids)
    print(
        f"{args.model}, {n} AbC-mini images, batch {args.batch}, {torch.get_num_threads()} threads"
    )
    for name, ts in times.items():
        best = min(ts)
        print(f"  {name:<16} {best:8.2f} s   {n / best:8.1f} images/s")
    ratio = min(times["bare forward"]) / min(times["harness"])
    print(f"harness speed / bare forward speed: {ratio:.2f} (goal >= 0.90)")


if __name__ == "__main__":
    main()
