#!/usr/bin/env bash
# The bundled demo checkpoint, from seed 0, in one command (CPU; measured ~28 min in session 3 and
# 17 min in session 4 (base 850 s + fine-tune 160 s) on the 2-core machine: docs/results.md):
#   1. base DiT pretrained text-only (policy none, standalone captions: every entity described,
#      as the base sees no memory): 8000 steps, 1-latent-frame shots, Wan's init, lr 1e-3,
#      1 training thread + 1 render worker
#   2. OneStory fine-tuning (selector + conditioner, budget 1, K 4, shot inflation, decoupled
#      warm-up 250 steps; since session 5 the order-aware selector (8 shot-ordinal slots) with 32
#      story-prefix L_sel items per step): FT steps, = the ablation run "both" of
#      `bench/ablate.py --k 4 --sel-shots 8 --sel-story-batch 32`, seed 0
#   3. copy the (dit, adapter) pair into onestory/assets/
# Usage: bash bench/ablate_bundled.sh [OUT=runs] [FT_STEPS=1000]   (resumable: re-run after an interruption)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs}
FT=${2:-1000}
export PYTHONPATH=.
python -m onestory_lab train --out "$OUT/base" --policy none --steps 8000 --batch-size 16 --pixel-frames 1 \
    --wan-init true --lr 1e-3 --standalone-captions true --threads 1 --workers 1 --ckpt-every 500 --seed 0 \
    --progress false --resume
mkdir -p "$OUT/base_final" && cp "$OUT/base/checkpoint/dit.safetensors" "$OUT/base_final/dit.safetensors"
python -m onestory_lab train --out "$OUT/bundled" --init "$OUT/base_final/dit.safetensors" --policy both \
    --budget 1 --k 4 --sel-shots 8 --sel-story-batch 32 --steps "$FT" --batch-size 16 --decoupled-steps 250 \
    --warmup-lr-steps 50 --threads 1 --workers 1 --ckpt-every 250 --seed 0 --progress false --resume
cp "$OUT/bundled/checkpoint/dit.safetensors" onestory/assets/storyworld_dit.safetensors
cp "$OUT/bundled/checkpoint/adapter.safetensors" onestory/assets/storyworld_adapter.safetensors
ls -l onestory/assets/
