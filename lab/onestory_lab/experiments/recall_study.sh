#!/usr/bin/env bash
# The world-v2 recall study (docs/results.md): fine-tune the v2 base with the full method and
# with last-frame-only context, 3 seeds each, then evaluate every run on the study's fresh stories.
#   bash lab/onestory_lab/experiments/recall_study.sh OUT train CONFIG SEED   # one run (both | last_frame)
#   bash lab/onestory_lab/experiments/recall_study.sh OUT all                  # the 6 runs + evaluation + table
# Needs OUT/base_v2_5000/dit.safetensors (ablate_bundled.sh step 1). Resumable.
set -euo pipefail
OUT=${1:?OUT}
STUDY_OFFSET=1074790400     # storyworld/splits.py STUDY_OFFSET = 2**30 + 2**20 (fresh range)
train_one() {   # CONFIG SEED
    local extra=""
    if [ "$1" = both ]; then extra="--sel-shots 8 --sel-story-batch 32 --decoupled-steps 500"; fi
    python -m onestory_lab train --out "$OUT/study/$1_s$2" --init "$OUT/base_v2_5000/dit.safetensors" \
        --world v2 --policy "$1" --budget 2 --k 4 $extra --steps 2000 --batch-size 16 --lr 5e-4 \
        --warmup-lr-steps 100 --pixel-frames 1 --threads 1 --workers 0 --log-every 50 --ckpt-every 500 \
        --seed "$2" --progress false --resume
}
case "${2:-all}" in
    train) train_one "$3" "$4" ;;
    all)
        for seed in 0 1 2; do train_one both "$seed"; train_one last_frame "$seed"; done
        python -m onestory_lab.experiments.recall_study --runs "$OUT/study" --out "$OUT/study_results" \
            --variants method last_frame --patterns insert_recall consistency composition \
            --story-offset "$STUDY_OFFSET" --per-pattern 200
        python -m onestory_lab.experiments.recall_study --runs "$OUT/study" --out "$OUT/study_results" \
            --only both_s0 --variants conditioner selector budget1 budget3 oracle \
            --story-offset "$STUDY_OFFSET" --per-pattern 200
        python -m onestory_lab.experiments.recall_study --out "$OUT/study_results" --report ;;
    *) echo "usage: $0 OUT train CONFIG SEED | $0 OUT all" >&2; exit 2 ;;
esac
