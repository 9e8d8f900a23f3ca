#!/usr/bin/env bash
# One prepared GPU check (at most ~5 minutes): exactness and speed of the device scoring path
# and fp16 ViT-B/16 extraction throughput, printed as one summary table.
#
#   bash benchmarks/gpu_check.sh            # on a machine with an NVIDIA GPU
#   bash benchmarks/gpu_check.sh --dry-run  # the same steps on the CPU at toy sizes (no GPU)
#
# What it does, in order:
#   1. sets up .venv from the repo if it is missing (python3.11 -m venv .venv &&
#      .venv/bin/pip install -q -e .), offline-friendly (HF_HUB_OFFLINE=1);
#   2. exits 1 with one clear line when no CUDA device is usable (not in --dry-run);
#   3. runs the CUDA exactness tests (pytest -m gpu tests/test_scoring_device.py): the device
#      path's counts equal the CPU engine's, in fp32, fp16 and bf16;
#   4. times score_features(..., device="cuda") against a bare torch GEMM over the same tiles
#      on the device, at 2,000 x 200k x 512 and 10,000 x 1M x 512 (the latter only if the
#      GPU has the memory), 1 and 4 exemplars per query, fp32 and fp16 (fp16 re-scores
#      near-threshold rows in fp32, so its counts are exact too);
#   5. times timm vit_base_patch16_224 (random weights) in fp16, channels_last, under
#      torch.inference_mode, batch 256 (goal: >= 3,000 images/s on an H100/H200-class GPU);
#   6. prints one summary table.
# Exit status: 0 when every step ran (the goals are reported, not enforced), 1 when no GPU,
# 2 on a setup failure, 3 when the exactness tests fail.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1

DRY=0
for arg in "$@"; do
    case "$arg" in
        --dry-run) DRY=1 ;;
        -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
        *) echo "error: gpu_check.sh: unknown argument $arg (fix: use --dry-run or nothing)" >&2; exit 2 ;;
    esac
done

if ! .venv/bin/python -c "import benchmark, timm" 2>/dev/null; then
    echo "gpu_check: setting up .venv (python3.11 -m venv .venv && pip install -e .) ..."
    command -v python3.11 >/dev/null || { echo "error: gpu_check.sh: python3.11 not found (fix: install python3.11)" >&2; exit 2; }
    python3.11 -m venv .venv
    .venv/bin/pip install -q -e . || { echo "error: gpu_check.sh: pip install -e . failed" >&2; exit 2; }
fi
PY=.venv/bin/python

if [ "$DRY" = 0 ]; then
    if ! $PY -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
        echo "error: gpu_check.sh: no CUDA GPU is usable here (torch.cuda.is_available() is False; fix: run on a GPU machine, or pass --dry-run for the CPU rehearsal)" >&2
        exit 1
    fi
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    echo "gpu_check: CUDA exactness tests ..."
    if ! timeout 120 $PY -m pytest -q -p no:cacheprovider -m gpu tests/test_scoring_device.py; then
        echo "error: gpu_check.sh: the CUDA exactness tests failed (see above)" >&2
        exit 3
    fi
fi

timeout 240 $PY - "$DRY" <<'PYEOF'
"""Timing part of benchmarks/gpu_check.sh (argv[1] = 1 for the CPU dry run)."""

import sys
import time

import torch

from benchmark import scoring, scoring_device

DRY = sys.argv[1] == "1"
DEV = torch.device("cpu" if DRY else "cuda")
TOP_N = 100
SIZES = [(60, 3_000, 32)] if DRY else [
    (2_000, 200_000, 512),
    (10_000, 1_000_000, 512),
]
if DRY:  # partial tiles on the toy sizes
    scoring_device.DEVICE_QUERY_BLOCK, scoring_device.DEVICE_CHUNK = 40, 1024
REPEATS = 1 if DRY else 3
rows: list[tuple[str, str, str]] = []


def sync() -> None:
    if DEV.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, repeats: int = REPEATS) -> float:
    fn()  # warm-up (kernels, allocator)
    sync()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def unit(n: int, d: int, gen: torch.Generator) -> torch.Tensor:
    x = torch.randn(n, d, generator=gen, device=DEV)
    return x / x.norm(dim=1, keepdim=True)


def scoring_rows(q_n: int, c_n: int, dim: int) -> None:
    size = f"{q_n:,} x {c_n:,} x {dim}"
    need = (c_n + q_n * 5) * dim * 4 + 3 * 2**30  # features + tiles and temporaries
    if DEV.type == "cuda" and torch.cuda.mem_get_info()[0] < need:
        rows.append((f"scoring {size}", "skipped", f"needs ~{need / 2**30:.0f} GiB free"))
        return
    gen = torch.Generator(device=DEV).manual_seed(0)
    q, d = unit(q_n, dim, gen), unit(c_n, dim, gen)
    qb, cb = scoring_device.DEVICE_QUERY_BLOCK, scoring_device.DEVICE_CHUNK

    def bare(dtype: torch.dtype) -> None:
        qq, dd = q.to(dtype), d.to(dtype)
        out = torch.empty(min(qb, q_n), cb, device=DEV, dtype=dtype)
        for c0 in range(0, c_n, cb):
            dc = dd[c0 : c0 + cb]
            for s in range(0, q_n, qb):
                blk = qq[s : s + qb]
                torch.mm(blk, dc.T, out=out[: len(blk), : len(dc)])

    with scoring_device._no_tf32(DEV):  # the matmul settings the scorer itself uses
        t_bare = {"fp32": timed(lambda: bare(torch.float32))}
        t_bare["fp16"] = timed(lambda: bare(torch.float16))
    for n_ex in (1, 4):
        x = unit(q_n * n_ex, dim, gen)
        x = (x + 0.3 * q.repeat_interleave(n_ex, 0)).cpu()  # exemplars near their query
        index = [list(range(i * n_ex, (i + 1) * n_ex)) for i in range(q_n)]
        kw = dict(
            query_ids=[str(i) for i in range(q_n)],
            exemplar_ids=[tuple(map(str, r)) for r in index],
            top_n=TOP_N,
            device=DEV,
        )

        def chunks(n: int):
            for c0 in range(0, c_n, n):
                yield d[c0 : c0 + n]  # already on the device

        results = {}
        for prec in ("fp32", "fp16"):

            def run(prec=prec):
                results[prec] = scoring.score_features(
                    q.cpu(), x, index, chunks, precision=prec, **kw
                )

            sec = timed(run, repeats=min(REPEATS, 2))
            st = scoring_device.LAST_STATS
            rescored = (
                f", fp32 re-scored: rows {st.rescored_rows / max(st.rows, 1):.1%}, "
                f"pairs {st.rescored_pairs / max(st.rows, 1):.1f}/row"
            )
            rows.append(
                (
                    f"scoring {size}, {n_ex} ex/query, {prec}",
                    f"{sec:.3f} s",
                    f"bare {prec} GEMM {t_bare[prec]:.3f} s -> ratio {t_bare[prec] / sec:.2f}; "
                    f"{q_n * c_n / sec / 1e9:.1f} G pairs/s"
                    + (rescored if prec != "fp32" else ""),
                )
            )
        same = all(
            (getattr(results["fp32"], f) == getattr(results["fp16"], f)).all()
            for f in ("above", "ties")
        )
        rows.append((f"fp16 counts == fp32 counts ({size}, {n_ex} ex)", str(same), ""))
        del results
    del q, d
    if DEV.type == "cuda":
        torch.cuda.empty_cache()


def vit_row() -> None:
    import timm

    batch, iters = (4, 1) if DRY else (256, 10)
    name = "vit_tiny_patch16_224" if DRY else "vit_base_patch16_224"
    model = timm.create_model(name, pretrained=False).eval().to(DEV)
    dtype = torch.float32 if DRY else torch.float16
    model = model.to(dtype=dtype, memory_format=torch.channels_last)
    x = torch.randn(batch, 3, 224, 224, device=DEV, dtype=dtype).to(
        memory_format=torch.channels_last
    )
    if DEV.type == "cuda":
        torch.backends.cudnn.benchmark = True
    with torch.inference_mode():
        for _ in range(3):
            model(x)
        sync()
        t0 = time.perf_counter()
        for _ in range(iters):
            model(x)
        sync()
        sec = time.perf_counter() - t0
    ips = batch * iters / sec
    goal = "" if DRY else f" [goal >= 3,000: {'met' if ips >= 3000 else 'NOT met'}]"
    rows.append(
        (f"{name} {'fp32' if DRY else 'fp16'}, batch {batch}", f"{ips:,.0f} img/s", goal.strip())
    )


t_start = time.perf_counter()
print(f"gpu_check: device {DEV}" + (f" ({torch.cuda.get_device_name()})" if DEV.type == "cuda" else " (dry run, toy sizes)"), flush=True)
for q_n, c_n, dim in SIZES:
    print(f"gpu_check: scoring {q_n} x {c_n} x {dim} ...", flush=True)
    scoring_rows(q_n, c_n, dim)
print("gpu_check: ViT extraction ...", flush=True)
vit_row()
w = max(len(r[0]) for r in rows)
print()
print(f"{'measurement':<{w}}  {'result':>14}  notes")
print("-" * (w + 60))
for a, b, c in rows:
    print(f"{a:<{w}}  {b:>14}  {c}")
print("-" * (w + 60))
print(f"total {time.perf_counter() - t_start:.0f} s; torch {torch.__version__}")
PYEOF
