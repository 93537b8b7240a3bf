#!/usr/bin/env bash
# Benchmarks the pretrain step on this machine's NVIDIA GPUs: installs jax[cuda12]
# and bert_jax into a venv, then runs `bert-jax benchmark --what step` for base and
# large at seq 128 and 512 in bfloat16, data parallel over all GPUs, and appends one
# JSON line per run to $RESULTS.
#
#   bash benchmarks/gpu.sh                     # from the repo root, on the GPU machine
#   DRY_RUN=1 bash benchmarks/gpu.sh           # print the commands only
#   SKIP_INSTALL=1 VENV=.venv ALLOW_CPU=1 SIZES=tiny SEQS=32 DTYPE=float32 \
#       bash benchmarks/gpu.sh                 # the same path on CPU, as a smoke test
#
# Per-GPU batches fit 40 GB+ cards (A100/H100); lower them with BATCH_<SIZE>_<SEQ>.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
VENV=${VENV:-$REPO/.venv-gpu}
PYTHON=${PYTHON:-python3}
RESULTS=${RESULTS:-$REPO/benchmarks/gpu_results.jsonl}
SIZES=${SIZES:-"base large"}
SEQS=${SEQS:-"128 512"}
DTYPE=${DTYPE:-bfloat16}
STEPS=${STEPS:-20}
DRY_RUN=${DRY_RUN:-0}

run() {
  if [[ $DRY_RUN == 1 ]]; then echo "+ $*"; else "$@"; fi
}

# Sequences per GPU, by size and sequence length.
per_gpu_batch() {
  local var="BATCH_${1^^}_$2"
  if [[ -n ${!var:-} ]]; then echo "${!var}"; return; fi
  case "$1:$2" in
    base:128) echo 128 ;; base:512) echo 32 ;;
    large:128) echo 64 ;; large:512) echo 16 ;;
    *) echo 8 ;;
  esac
}

if command -v nvidia-smi > /dev/null; then
  NUM_GPUS=$(nvidia-smi -L | grep -c '^GPU ')
elif [[ $DRY_RUN == 1 || ${ALLOW_CPU:-0} == 1 ]]; then
  NUM_GPUS=1
else
  echo "error: nvidia-smi not found; this script benchmarks GPUs (ALLOW_CPU=1 to run anyway)" >&2
  exit 2
fi

if [[ ${SKIP_INSTALL:-0} != 1 ]]; then
  run "$PYTHON" -m venv "$VENV"
  run "$VENV/bin/pip" install -q --upgrade pip
  run "$VENV/bin/pip" install -q -e "$REPO[gpu]"
fi

for size in $SIZES; do
  for seq in $SEQS; do
    batch=$(( $(per_gpu_batch "$size" "$seq") * NUM_GPUS ))
    # BERT's recipe: 20 predictions at seq 128, 80 at seq 512; else 15 %, rounded up.
    case $seq in 128) preds=20 ;; 512) preds=80 ;; *) preds=$(( (seq * 15 + 99) / 100 )) ;; esac
    cmd=("$VENV/bin/bert-jax" benchmark --what step
         "--config=$REPO/configs/pretrain.py:$size" "--steps=$STEPS"
         "--config.model.dtype=$DTYPE" "--config.data.max_seq_length=$seq"
         "--config.data.max_predictions_per_seq=$preds"
         "--config.train.global_batch_size=$batch")
    if [[ $DRY_RUN == 1 ]]; then
      echo "+ ${cmd[*]} >> $RESULTS"
    else
      "${cmd[@]}" | grep '^{' >> "$RESULTS"
      tail -n 1 "$RESULTS"
    fi
  done
done
