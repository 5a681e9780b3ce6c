#!/usr/bin/env bash
# The bundled demo checkpoint (world v2), from seed 0, in one command. CPU, 2 cores:
#   1. base DiT pretrained text-only (policy none, standalone captions: every entity described,
#      as the base sees no memory): dim 192, 4 layers, 3 heads, Wan's init, lr 1e-3, the first
#      5000 steps of a 10000-step cosine schedule, 1 training thread + 1 render worker
#      (about 20 minutes on idle cores)
#   2. OneStory fine-tuning (selector + conditioner, K 4, budget 2, shot inflation, decoupled
#      warm-up 500 steps, order-aware selector with 8 shot-ordinal slots and 32 story-prefix
#      L_sel items per step, lr 5e-4): 2000 steps, = run both_s0 of experiments/recall_study.sh
#      (about 20 minutes)
#   3. copy the (dit, adapter) pair into lab/onestory_lab/assets/
# Usage: bash lab/onestory_lab/experiments/ablate_bundled.sh [OUT=runs]   (resumable: re-run after an interruption)
set -euo pipefail
ASSETS="$(cd "$(dirname "$0")/../assets" && pwd)"
OUT=${1:-runs}
python -m onestory_lab train --out "$OUT/base_v2" --world v2 --policy none --standalone-captions true \
    --pixel-frames 1 --wan-init true --lr 1e-3 --warmup-lr-steps 200 --dim 192 --layers 4 --heads 3 \
    --ffn-dim 768 --steps 10000 --stop-at 5000 --batch-size 16 --threads 1 --workers 1 --ckpt-every 500 \
    --log-every 50 --seed 0 --progress false --resume
mkdir -p "$OUT/base_v2_5000" && cp "$OUT/base_v2/checkpoint/dit.safetensors" "$OUT/base_v2_5000/dit.safetensors"
bash "$(dirname "$0")/recall_study.sh" "$OUT" train both 0
cp "$OUT/study/both_s0/checkpoint/dit.safetensors" "$ASSETS/storyworld_dit.safetensors"
cp "$OUT/study/both_s0/checkpoint/adapter.safetensors" "$ASSETS/storyworld_adapter.safetensors"
ls -l "$ASSETS"
