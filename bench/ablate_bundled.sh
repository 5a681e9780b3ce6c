#!/usr/bin/env bash
# The bundled demo checkpoint, from seed 0, in one command (CPU, 1 thread per process):
#   1. base DiT pretrained text-only (policy none), 800 steps
#   2. OneStory fine-tuning (selector + conditioner, shot inflation, decoupled warm-up), FT steps
#   3. copy the (dit, adapter) pair into onestory/assets/
# Usage: bash bench/ablate_bundled.sh [OUT=runs] [FT_STEPS=400]  (= ablation run "both", seed 0)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs}
FT=${2:-400}
export PYTHONPATH=.
python -m onestory train --out "$OUT/base" --policy none --steps 800 --decoupled-steps 0 --threads 1 \
    --ckpt-every 100 --seed 0 --progress false --resume
mkdir -p "$OUT/base_final" && cp "$OUT/base/checkpoint/dit.safetensors" "$OUT/base_final/dit.safetensors"
python -m onestory train --out "$OUT/bundled" --init "$OUT/base_final/dit.safetensors" --policy both \
    --steps "$FT" --decoupled-steps 100 --warmup-lr-steps 40 --threads 1 --ckpt-every 100 --seed 0 --progress false --resume
cp "$OUT/bundled/checkpoint/dit.safetensors" onestory/assets/storyworld_dit.safetensors
cp "$OUT/bundled/checkpoint/adapter.safetensors" onestory/assets/storyworld_adapter.safetensors
ls -l onestory/assets/
