#!/usr/bin/env bash
# One prepared GPU check (for a session with a lent accelerator): fp16 extraction throughput of
# ViT-B/16 (DINO's catalog entry, random weights) through the harness vs the bare forward, on
# AbC-mini distractors, at two batch sizes. About 2 minutes on an H100 including start-up.
# Usage: bash benchmarks/gpu_extract.sh   (needs the project's venv: bash .ci/run's setup)
set -euo pipefail
cd "$(dirname "$0")/.."
py=".venv/bin/python"
[ -x "$py" ] || py="python3"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
for batch in 64 256; do
  HF_HUB_OFFLINE=1 "$py" benchmarks/bench_extract.py --baseline dino_vitb16 --device cuda \
    --images 2000 --batch "$batch" --repeats 3
done
