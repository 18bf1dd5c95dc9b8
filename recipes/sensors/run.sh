#!/usr/bin/env bash
# Few-label sensor classification with wavssl on the data sets aeon ships (no download).
#
#   bash recipes/sensors/run.sh prepare                              # copy the .ts files to data/sensors
#   bash recipes/sensors/run.sh pretrain JapaneseVowels              # SSL on the training split, no labels
#   bash recipes/sensors/run.sh finetune JapaneseVowels 1 0          # 1 labelled recording per class, draw 0
#   bash recipes/sensors/run.sh evaluate JapaneseVowels 1 0          # accuracy and macro-F1 on the test split
#   bash recipes/sensors/run.sh bench                                # the full protocol vs aeon's MiniRocket, MultiRocket-Hydra, QUANT
#
# K = 0 fine-tunes on every label. Runs go to runs/sensors/ (RUNS=... to change).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
data="${DATA:-data/sensors}"
runs="${RUNS:-runs/sensors}"
stage="${1:?usage: run.sh prepare|pretrain NAME|finetune NAME K SEED|evaluate NAME K SEED|bench [ARGS]}"

case "$stage" in
  prepare)
    python "$here/prepare.py" --out "$data"
    ;;
  pretrain)
    name="${2:?data set name}"
    wavssl pretrain "$data/$name/${name}_TRAIN.ts" --preset sensor-tiny --config "$here/configs/$name.toml" \
      --out "$runs/$name/ssl"
    ;;
  finetune)
    name="${2:?data set name}"; k="${3:-0}"; seed="${4:-0}"
    extra=()  # the data set's fine-tuning settings, if it has any
    [ -f "$here/configs/finetune/$name.toml" ] && extra=(--config "$here/configs/finetune/$name.toml")
    wavssl finetune "$runs/$name/ssl" --task classify --train "$data/$name/${name}_TRAIN.ts" \
      --k-per-class "$k" --seed "$seed" --out "$runs/$name/cls_k${k}_s${seed}" "${extra[@]}"
    ;;
  evaluate)
    name="${2:?data set name}"; k="${3:-0}"; seed="${4:-0}"
    wavssl evaluate "$runs/$name/cls_k${k}_s${seed}" "$data/$name/${name}_TEST.ts"
    ;;
  bench)
    shift
    python "$here/../../benchmarks/sensor_fewlabel.py" "$@"
    ;;
  *)
    echo "unknown stage $stage (prepare, pretrain, finetune, evaluate, bench)" >&2
    exit 2
    ;;
esac
