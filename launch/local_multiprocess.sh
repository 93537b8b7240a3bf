#!/usr/bin/env bash
# Runs N bert-jax processes on this machine, joined by jax.distributed (gloo on CPU):
# the multi-host code path (per-process shards, global arrays, collective
# checkpoints) without a cluster.
#
#   launch/local_multiprocess.sh N pretrain --config configs/pretrain.py:tiny --workdir DIR
#
# DEVICES_PER_PROCESS (default 4) emulated CPU devices each; PORT picks the
# coordinator port. Process 0 prints to the terminal, process i to DIR-less
# logs in ${LOG_DIR:-/tmp}/bert_jax.process_i.log.
set -euo pipefail
if [[ $# -lt 2 ]]; then
  echo "usage: $0 N SUBCOMMAND [bert-jax flags...]" >&2
  exit 2
fi
n=$1; shift
port=${PORT:-$((20000 + RANDOM % 20000))}
devices=${DEVICES_PER_PROCESS:-4}
log_dir=${LOG_DIR:-/tmp}
bert_jax=${BERT_JAX:-bert-jax}

pids=()
for ((i = 0; i < n; i++)); do
  args=("$@" "--coordinator_address=127.0.0.1:${port}" "--num_processes=${n}" "--process_id=${i}")
  if [[ $i -eq 0 ]]; then
    XLA_FLAGS="--xla_force_host_platform_device_count=${devices}" $bert_jax "${args[@]}" &
  else
    XLA_FLAGS="--xla_force_host_platform_device_count=${devices}" $bert_jax "${args[@]}" \
      > "${log_dir}/bert_jax.process_${i}.log" 2>&1 &
  fi
  pids+=($!)
done

status=0
for pid in "${pids[@]}"; do
  wait "$pid" || status=$?
done
exit $status
