#!/usr/bin/env bash
# The bundled demo checkpoint, from seed 0, in one command (CPU; about 17 min on 2 cores: base
# ~850 s + fine-tune ~160 s):
#   1. base DiT pretrained text-only (policy none, standalone captions: every entity described,
#      as the base sees no memory): 8000 steps, 1-latent-frame shots, Wan's init, lr 1e-3,
#      1 training thread + 1 render worker
#   2. OneStory fine-tuning (selector + conditioner, budget 1, K 4, shot inflation, decoupled
#      warm-up 250 steps; the order-aware selector (8 shot-ordinal slots) with 32
#      story-prefix L_sel items per step): FT steps, = the ablation run "both" of
#      `python -m onestory_lab.experiments.ablate --k 4 --sel-shots 8 --sel-story-batch 32`, seed 0
#   3. copy the (dit, adapter) pair into lab/onestory_lab/assets/
# Usage: bash lab/onestory_lab/experiments/ablate_bundled.sh [OUT=runs] [FT_STEPS=1000]   (resumable: re-run after an interruption)
set -euo pipefail
ASSETS="$(cd "$(dirname "$0")/../assets" && pwd)"
OUT=${1:-runs}
FT=${2:-1000}
python -m onestory_lab train --out "$OUT/base" --policy none --steps 8000 --batch-size 16 --pixel-frames 1 \
    --wan-init true --lr 1e-3 --standalone-captions true --threads 1 --workers 1 --ckpt-every 500 --seed 0 \
    --progress false --resume
mkdir -p "$OUT/base_final" && cp "$OUT/base/checkpoint/dit.safetensors" "$OUT/base_final/dit.safetensors"
python -m onestory_lab train --out "$OUT/bundled" --init "$OUT/base_final/dit.safetensors" --policy both \
    --budget 1 --k 4 --sel-shots 8 --sel-story-batch 32 --steps "$FT" --batch-size 16 --decoupled-steps 250 \
    --warmup-lr-steps 50 --threads 1 --workers 1 --ckpt-every 250 --seed 0 --progress false --resume
cp "$OUT/bundled/checkpoint/dit.safetensors" "$ASSETS/storyworld_dit.safetensors"
cp "$OUT/bundled/checkpoint/adapter.safetensors" "$ASSETS/storyworld_adapter.safetensors"
ls -l "$ASSETS"
