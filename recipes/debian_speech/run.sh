#!/usr/bin/env bash
# Real recorded speech from Debian packages: prepare -> pretrain -> fine-tune (10 min and 1 h of
# labels, from the pretrained model and from scratch; every run validated on its language's dev
# split, best dev CER kept) -> evaluate. BUDGET=cpu (default; tiny preset, see README for the time
# on 2 cores) or BUDGET=gpu (one GPU, small preset).
#
#   bash recipes/debian_speech/run.sh            # everything: prepare + benchmarks/ssl_benefit.py
#   bash recipes/debian_speech/run.sh all --rows ru_10min,cs_1h:scratch --pretrained RUN   # options
#                                                # after "all" go to benchmarks/ssl_benefit.py
#   bash recipes/debian_speech/run.sh prepare
#   bash recipes/debian_speech/run.sh pretrain
#   bash recipes/debian_speech/run.sh finetune ru_1h [scratch|streaming]
#   bash recipes/debian_speech/run.sh evaluate ru_1h [scratch|streaming]
#   bash recipes/debian_speech/run.sh streaming   # ru_10min with chunked attention -> benchmarks/streaming.py
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
budget="${BUDGET:-cpu}"
data="${DATA:-$root/data/debian_speech}"
work="${RUN:-$root/runs/debian_speech_$budget}"
case "$budget" in cpu) preset=tiny ;; gpu) preset=small ;; *) echo "BUDGET must be cpu or gpu" >&2; exit 2 ;; esac
declare -A lang=([ru_10min]=ru [ru_1h]=ru [cs_10min]=cs [cs_1h]=cs [en_10min]=en)
declare -A tests=([ru]="ru_test ru_test_otherspk" [cs]="cs_test" [en]="en_test")

stage="${1:-all}"
case "$stage" in
  prepare)
    python "$here/prepare.py" --out "$data"
    ;;
  pretrain)
    wavssl pretrain "$data/unlabeled.tsv" --preset "$preset" --config "$here/conf/pretrain_$budget.toml" \
      --out "$work/pretrain" --resume
    ;;
  finetune)
    set_name="${2:?label set: ru_10min, ru_1h, cs_10min, cs_1h or en_10min}"
    l="${lang[$set_name]}"
    extra=(--valid "$data/${l}_dev.tsv")
    if [ "${3:-}" = scratch ]; then
      extra+=(--scratch --set ctc.freeze_updates=0 --set ctc.freeze_feature_encoder=false)
    elif [ "${3:-}" = streaming ]; then  # chunks of 16 frames (0.32 s), 4 chunks of left context
      extra+=(--set model.context.attention_chunk=16 --set model.context.attention_left_chunks=4)
    fi
    wavssl finetune "$work/pretrain" --train "$data/${l}_train_${set_name#*_}.tsv" \
      --config "$here/conf/finetune_$budget.toml" --set "ctc.language=\"$l\"" "${extra[@]}" \
      --out "$work/ft_${set_name}_${3:-pretrained}" --resume
    ;;
  evaluate)
    set_name="${2:?label set}"
    for t in ${tests[${lang[$set_name]}]}; do
      printf '%s\t' "$t"
      wavssl evaluate "$work/ft_${set_name}_${3:-pretrained}" "$data/$t.tsv" --json
    done
    ;;
  streaming)
    [ -f "$work/ft_ru_10min_pretrained/model.safetensors" ] || "$0" finetune ru_10min
    [ -f "$work/ft_ru_10min_streaming/model.safetensors" ] || "$0" finetune ru_10min streaming
    python "$root/benchmarks/streaming.py" --streaming-run "$work/ft_ru_10min_streaming" \
      --offline-run "$work/ft_ru_10min_pretrained" --test "$data/ru_test.tsv"
    ;;
  all)
    [ -f "$data/unlabeled.tsv" ] || python "$here/prepare.py" --out "$data"
    python "$root/benchmarks/ssl_benefit.py" --data "$data" --budget "$budget" --workdir "$work" "${@:2}"
    ;;
  *)
    echo "unknown stage $stage (prepare, pretrain, finetune, evaluate, streaming, all)" >&2
    exit 2
    ;;
esac
