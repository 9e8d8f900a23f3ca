#!/usr/bin/env bash
# Build a benchmark version over several sittings on a CPU. Start it at the beginning of each
# sitting; every step resumes where the last sitting stopped, or passes quickly when done:
#
#   nohup splits/generate/continue.sh CONFIG > /tmp/CONFIG.log 2>&1 &
#
# 1. pretrain the recipe's base model (checkpoints every 250 steps in the attrib-bench cache)
#    and, when done, install it into the recipe's base_model folder (fp16);
# 2. generate every model into splits/generate/runs/CONFIG (done.json and delta/ per model;
#    commit them between sittings and a new machine resamples the images from them), one
#    single-threaded job per core (~1.4x the throughput of one process on two cores);
# 3. write the signal report and contact sheet beside the previous version's report.
# Commit what each step leaves (base model, runs, report) as it appears; then freeze.
# Everything runs under nice 19, so the sitting's own work keeps the CPU.
set -euo pipefail
config=${1:?usage: continue.sh CONFIG [PREVIOUS_REPORT_JSON]}
previous=${2:-docs/abc-mini-generation.json}
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=1
bench=(nice -n 19 .venv/bin/attrib-bench splits)
cache="${ATTRIB_BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/attrib-bench}/runs/$config"
run="splits/generate/runs/$config"
note() { echo "[$(date -u +%FT%TZ)] $*"; }

# A base model already installed from this recipe's model and pretraining settings (e.g. one
# committed by an earlier version) is used as it is: on a new machine the pretraining cache is
# empty, and resuming would mean hours of pretraining from step 0.
installed=$(.venv/bin/python - "$config" <<'PY'
import json, sys
from dataclasses import asdict
from pathlib import Path
from splits.generate.config import load_recipe
r = load_recipe(sys.argv[1])
made = Path(r.generate.base_model) / "pretrain.json"
same = made.is_file() and json.loads(json.dumps({"model": asdict(r.model), "pretrain": asdict(r.pretrain)})) == {
    k: json.loads(made.read_text())[k] for k in ("model", "pretrain")}
print("yes" if same else "no")
PY
)
if [ "$installed" = yes ]; then
  note "pretrain $config: its base model is installed with these settings; skipped"
else
  note "pretrain $config (resumes from $cache/pretrain)"
  "${bench[@]}" pretrain "$config" --out "$cache/pretrain" --install
fi
jobs=$(nproc)
note "generate $config (resumes from $run; $jobs one-thread jobs)"
"${bench[@]}" generate "$config" --out "$run" --jobs "$jobs"
note "report $config against $previous"
"${bench[@]}" report "$config" --run "$run" --out "docs/$config-generation.md" \
    --sheet "docs/$config-contact-sheet.png" --previous "$previous"
note "done: commit the base model, $run (done.json, delta/) and docs/$config-generation.*"
