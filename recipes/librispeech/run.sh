#!/usr/bin/env bash
# wav2vec 2.0 BASE on LibriSpeech with wavssl.
#
#   bash recipes/librispeech/run.sh prepare  LIBRISPEECH_DIR [LIBRI_LIGHT_DIR]
#   bash recipes/librispeech/run.sh pretrain              # all GPUs of this node
#   NNODES=4 NODE_RANK=0 MASTER=host0 bash recipes/librispeech/run.sh pretrain   # on every node
#   bash recipes/librispeech/run.sh finetune 10m|1h|10h|100h   # CTC on Libri-light / train-clean-100
#   bash recipes/librispeech/run.sh evaluate 10m|1h|10h|100h   # WER on dev/test clean/other
#
# Multi-node rendezvous (torchrun, c10d backend): every node runs the same command with the same
# MASTER (a host all nodes reach; port RDZV_PORT, default 29400) and RDZV_ID (a job id); NODE_RANK
# is not needed by c10d rendezvous but kept for schedulers that set it. --max-restarts lets torchrun
# restart failed or preempted workers; they continue from the newest checkpoint (--resume), which
# is written every 5000 updates and every 30 minutes of wall time.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
data="${DATA:-data/librispeech}"
run="${RUN:-runs/librispeech_base}"
stage="${1:?usage: run.sh prepare|pretrain|finetune|evaluate ...}"
gpus="${GPUS:-$(python -c 'import torch; print(max(torch.cuda.device_count(), 1))')}"
nnodes="${NNODES:-1}"
total=$((gpus * nnodes))
common=(--nproc-per-node="$gpus" --max-restarts="${MAX_RESTARTS:-3}")
if [ "$nnodes" -gt 1 ]; then
  launch=(torchrun --nnodes="$nnodes" --rdzv-backend=c10d --rdzv-endpoint="${MASTER:?set MASTER}:${RDZV_PORT:-29400}"
          --rdzv-id="${RDZV_ID:-wavssl_base}" "${common[@]}")
else
  launch=(torchrun --standalone "${common[@]}")
fi
declare -A labels=([10m]=train_10m [1h]=train_1h [10h]=train_10h [100h]=train-clean-100)

case "$stage" in
  prepare)
    python "$here/prepare.py" "${2:?LIBRISPEECH_DIR}" --out "$data" ${3:+--libri-light "$3"}
    ;;
  pretrain)
    accum=$(( (64 + total - 1) / total ))   # effective batch ~64 x 1.4M samples = 1.56 h
    "${launch[@]}" -m wavssl pretrain "$data/pretrain.tsv" --preset base --config "$here/conf/pretrain_base.toml" \
      --set "optim.accumulate=$accum" --out "$run" --resume
    ;;
  finetune)
    split="${2:?split: 10m, 1h, 10h or 100h}"
    accum=$(( (8 + total - 1) / total ))    # effective batch ~8 x 3.2M samples, as fairseq's 8-GPU runs
    "${launch[@]}" -m wavssl finetune "$run" --train "$data/${labels[$split]}.tsv" --valid "$data/dev-other.tsv" \
      --config "$here/conf/finetune_$split.toml" --set "optim.accumulate=$accum" --out "${run}_ft_$split" --resume
    ;;
  evaluate)
    split="${2:?split: 10m, 1h, 10h or 100h}"
    for subset in dev-clean dev-other test-clean test-other; do
      printf '%s\t' "$subset"
      python -m wavssl evaluate "${run}_ft_$split" "$data/$subset.tsv" --json
    done | tee "${run}_ft_$split/wer.tsv"
    ;;
  *)
    echo "unknown stage $stage (prepare, pretrain, finetune, evaluate)" >&2
    exit 2
    ;;
esac
