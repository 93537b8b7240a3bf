#!/usr/bin/env bash
# BERT pretraining on a Cloud TPU VM slice: create the VM, install bert_jax on every
# worker, run `bert-jax pretrain --distributed` on all workers at once (each worker is
# one jax process; jax.distributed.initialize() detects the slice), follow the log,
# and, with --relaunch, restart after a crash or a preemption. The job resumes from
# the latest checkpoint in the gs:// workdir, so restarting = running it again.
#
#   launch/tpu_vm.sh create --name NAME --zone ZONE --accelerator-type v4-32 [--spot | --queued]
#   launch/tpu_vm.sh setup  --name NAME --zone ZONE [--repo git+https://github.com/you/bert_jax.git]
#   launch/tpu_vm.sh run    --name NAME --zone ZONE --workdir gs://BUCKET/runs/base \
#       [--config configs/pretrain.py:base] [--relaunch --accelerator-type v4-32 [--spot | --queued]] \
#       [-- --config.model.dtype=bfloat16 ...]
#   launch/tpu_vm.sh logs   --name NAME --zone ZONE [--worker 0]
#   launch/tpu_vm.sh stop   --name NAME --zone ZONE
#   launch/tpu_vm.sh delete --name NAME --zone ZONE [--queued]
#
# Options (environment defaults in brackets); `--opt value` and `--opt=value` both work:
#   --name [TPU_NAME]  --zone [TPU_ZONE]  --accelerator-type [TPU_ACCELERATOR_TYPE]
#   --runtime-version [TPU_RUNTIME_VERSION, else tpu-ubuntu2204-base]
#   --project P        added as --project=P right after --zone=ZONE (else gcloud's default)
#   --spot             create a Spot VM (preemptible; pair it with run --relaunch)
#   --queued           create/delete through `gcloud compute tpus queued-resources`
#                      (node id = NAME); stop is not available for queued resources
#   --workdir [BERT_JAX_WORKDIR]  run only; must be gs://… (every worker reads and
#                      writes it; checkpoints there survive the VM)
#   --config [BERT_JAX_CONFIG, else configs/pretrain.py:base]  a relative path is
#                      resolved inside the installed package (configs/ ships as
#                      bert_jax/configs), so run works from any install
#   --repo [BERT_JAX_REPO, else `git remote get-url origin` of this checkout]  what
#                      setup installs: a git URL (https://, ssh://, git@host:path; turned
#                      into git+URL, add @REV to pin), or any pip spec (git+URL@REV, a
#                      wheel URL, bert_jax==0.1.0)
#   --relaunch         run stays in the foreground and watches the job every
#                      --poll-seconds [60]: a non-zero exit (or a vanished process) runs it
#                      again; a PREEMPTED / TERMINATED / missing VM is deleted, created
#                      again (same flags: needs --accelerator-type), set up again (needs
#                      --repo or an origin remote) and the job restarted; at most
#                      --max-restarts [10] restarts. Exits 0 when the job exits 0.
#                      Without --relaunch (the default) run starts the job and returns.
#   --worker N         logs only: which worker's log to follow [0]
#   --dry-run          print each gcloud command instead of running it, one per line,
#                      prefixed with "+ " and shell-quoted (copy-pasteable after the "+ ");
#                      run --relaunch prints one iteration (start, state check, exit
#                      check, then the recreate commands after a "#" line) and does not loop
# Arguments after `--` go to `bert-jax pretrain` unchanged (run only).
# GCLOUD names the gcloud binary [gcloud]. Commands being run are echoed to stderr
# with the same "+ " format.
#
# On each worker: Python venv ~/bert_jax_venv (jax >= 0.7 needs Python >= 3.11; the
# Ubuntu 22.04 TPU images have 3.10, so setup installs python3.11 with apt), log
# ~/bert_jax.log, exit status ~/bert_jax.exit once the job ends. run first stops a
# bert-jax already running on the VM, so running it twice restarts (and resumes) the job.
# Bad input: a one-line `error: ...` on stderr and exit status 2.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
gcloud_bin=${GCLOUD:-gcloud}

name=${TPU_NAME:-}
zone=${TPU_ZONE:-}
accelerator_type=${TPU_ACCELERATOR_TYPE:-}
runtime_version=${TPU_RUNTIME_VERSION:-tpu-ubuntu2204-base}
project=""
workdir=${BERT_JAX_WORKDIR:-}
config=${BERT_JAX_CONFIG:-configs/pretrain.py:base}
repo=${BERT_JAX_REPO:-}
worker=0
max_restarts=10
poll_seconds=60
spot=0
queued=0
relaunch=0
dry_run=0
sub=""
extra=()

die() {
  echo "error: $*" >&2
  exit 2
}

usage() {
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
}

while [[ $# -gt 0 ]]; do
  if [[ $1 == --*=* ]]; then
    opt=${1%%=*} val=${1#*=} has_val=1
  else
    opt=$1 val="" has_val=0
  fi
  case $opt in
    --)
      shift
      extra=("$@")
      break
      ;;
    --name | --zone | --accelerator-type | --runtime-version | --project | --workdir | \
      --config | --repo | --worker | --max-restarts | --poll-seconds)
      if [[ $has_val == 1 ]]; then
        shift
      else
        [[ $# -ge 2 && $2 != --* ]] || die "$opt needs a value"
        val=$2
        shift 2
      fi
      case $opt in
        --name) name=$val ;;
        --zone) zone=$val ;;
        --accelerator-type) accelerator_type=$val ;;
        --runtime-version) runtime_version=$val ;;
        --project) project=$val ;;
        --workdir) workdir=$val ;;
        --config) config=$val ;;
        --repo) repo=$val ;;
        --worker) worker=$val ;;
        --max-restarts) max_restarts=$val ;;
        --poll-seconds) poll_seconds=$val ;;
      esac
      ;;
    --spot | --queued | --relaunch | --dry-run)
      [[ $has_val == 0 ]] || die "$opt takes no value"
      case $opt in
        --spot) spot=1 ;;
        --queued) queued=1 ;;
        --relaunch) relaunch=1 ;;
        --dry-run) dry_run=1 ;;
      esac
      shift
      ;;
    -h | --help)
      usage
      exit 0
      ;;
    -*) die "unknown option $1 (bert-jax flags go after --)" ;;
    *)
      [[ -z $sub ]] || die "unexpected argument '$1' (bert-jax flags go after --)"
      sub=$1
      shift
      ;;
  esac
done

# --- input checks -------------------------------------------------------------------
case $sub in
  create | setup | run | logs | stop | delete) ;;
  "") die "missing subcommand (create | setup | run | logs | stop | delete)" ;;
  *) die "unknown subcommand '$sub' (create | setup | run | logs | stop | delete)" ;;
esac
[[ -n $name ]] || die "$sub needs --name (or TPU_NAME)"
[[ -n $zone ]] || die "$sub needs --zone (or TPU_ZONE)"
for n in "$worker" "$max_restarts" "$poll_seconds"; do
  [[ $n =~ ^[0-9]+$ ]] || die "--worker, --max-restarts and --poll-seconds take integers, not '$n'"
done
if [[ ${#extra[@]} -gt 0 && $sub != run ]]; then
  die "arguments after -- are bert-jax flags, only for run"
fi
if [[ $sub == stop && $queued == 1 ]]; then
  die "queued-resource TPUs cannot be stopped; use delete"
fi
if [[ $sub == create || ($sub == run && $relaunch == 1) ]]; then
  what=$sub
  [[ $sub == create ]] || what="run --relaunch (to recreate the VM)"
  [[ -n $accelerator_type ]] ||
    die "$what needs --accelerator-type (or TPU_ACCELERATOR_TYPE), e.g. v4-32"
fi
if [[ $sub == run ]]; then
  [[ -n $workdir ]] || die "run needs --workdir gs://BUCKET/PATH (or BERT_JAX_WORKDIR)"
  [[ $workdir == gs://?* ]] || die "run needs a gs:// workdir (every worker must reach it), not '$workdir'"
  [[ -n $config ]] || die "run needs --config, e.g. configs/pretrain.py:base"
fi
if [[ $sub == setup || ($sub == run && $relaunch == 1) ]]; then
  if [[ -z $repo ]]; then
    repo=$(git -C "$here/.." remote get-url origin 2>/dev/null || true)
  fi
  [[ -n $repo ]] ||
    die "$sub needs --repo (a git URL or pip spec); this checkout has no 'origin' remote"
fi

# --- quoting ------------------------------------------------------------------------
safe_word='^[A-Za-z0-9_./:=@%+,-]+$'

# One word, single-quoted when needed, for printing commands.
q() {
  if [[ $1 =~ $safe_word ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

# One word, double-quoted when needed, for the remote shell (keeps the printed
# --command '...' free of '\'' noise).
rq() {
  if [[ $1 =~ $safe_word ]]; then
    printf '%s' "$1"
  else
    local s=${1//\\/\\\\}
    s=${s//\"/\\\"}
    s=${s//\$/\\\$}
    s=${s//\`/\\\`}
    printf '"%s"' "$s"
  fi
}

show() {
  local line="+" w
  for w in "$@"; do
    line+=" $(q "$w")"
  done
  printf '%s\n' "$line"
}

# Runs gcloud with the arguments, or prints the command under --dry-run.
g() {
  if [[ $dry_run == 1 ]]; then
    show "$gcloud_bin" "$@"
    return 0
  fi
  show "$gcloud_bin" "$@" >&2
  "$gcloud_bin" "$@"
}

log() {
  echo "[$(date +%H:%M:%S)] $*" >&2
}

# git URL -> pip spec; anything else is taken as a pip spec already.
pip_spec() {
  local r=$1
  if [[ $r == git+* || $r == *.whl || $r == *.tar.gz || $r == *.zip ]]; then
    printf '%s' "$r"
  elif [[ $r =~ ^(https?|ssh|git|file):// ]]; then
    printf 'git+%s' "$r"
  elif [[ $r =~ ^([A-Za-z0-9._-]+@[A-Za-z0-9.-]+):(.+)$ ]]; then # git@host:path
    printf 'git+ssh://%s/%s' "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]#/}"
  else
    printf '%s' "$r"
  fi
}

# --- gcloud commands ----------------------------------------------------------------
proj=()
[[ -z $project ]] || proj=(--project="$project")
spot_flag=()
[[ $spot == 0 ]] || spot_flag=(--spot)

if [[ $queued == 1 ]]; then
  create_cmd=(compute tpus queued-resources create "$name" --node-id="$name" --zone="$zone"
    "${proj[@]}" --accelerator-type="$accelerator_type" --runtime-version="$runtime_version"
    "${spot_flag[@]}")
  delete_cmd=(compute tpus queued-resources delete "$name" --zone="$zone" "${proj[@]}" --force --quiet)
else
  create_cmd=(compute tpus tpu-vm create "$name" --zone="$zone" "${proj[@]}"
    --accelerator-type="$accelerator_type" --version="$runtime_version" "${spot_flag[@]}")
  delete_cmd=(compute tpus tpu-vm delete "$name" --zone="$zone" "${proj[@]}" --quiet)
fi
stop_cmd=(compute tpus tpu-vm stop "$name" --zone="$zone" "${proj[@]}" --quiet)
describe_cmd=(compute tpus tpu-vm describe "$name" --zone="$zone" "${proj[@]}" --format='value(state)')
queued_state_cmd=(compute tpus queued-resources describe "$name" --zone="$zone" "${proj[@]}"
  --format='value(state.state)')
ssh_all=(compute tpus tpu-vm ssh "$name" --zone="$zone" "${proj[@]}" --worker=all --command)
ssh_one=(compute tpus tpu-vm ssh "$name" --zone="$zone" "${proj[@]}" --worker="$worker" --command)
ssh_0=(compute tpus tpu-vm ssh "$name" --zone="$zone" "${proj[@]}" --worker=0 --command)

# --- remote commands (bash on every worker) -------------------------------------------
venv='~/bert_jax_venv'
# Matches the python process of `bert-jax pretrain` (…/bin/bert-jax pretrain …) but not
# the shells whose command lines spell the pattern itself.
job_pattern='"bin/[b]ert-jax pretrain"'

setup_remote() {
  printf '%s' "set -e; if python3 -c \"import sys; sys.exit(sys.version_info < (3, 11))\"; then py=python3; else sudo apt-get -o DPkg::Lock::Timeout=600 -q update && sudo DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -q -y install python3.11 python3.11-venv; py=python3.11; fi; \$py -m venv $venv; $venv/bin/pip install -q -U pip; $venv/bin/pip uninstall -q -y bert_jax; $venv/bin/pip install -q -U \"jax[tpu]\" $(rq "$(pip_spec "$repo")")"
}

run_remote() {
  local args="bert-jax pretrain --distributed --config $(rq "$config") --workdir $(rq "$workdir")" a
  for a in "${extra[@]}"; do
    args+=" $(rq "$a")"
  done
  printf '%s' "export PATH=\"\$HOME/bert_jax_venv/bin:\$PATH\"; if pkill -f $job_pattern; then sleep 15; pkill -9 -f $job_pattern; sleep 2; fi; rm -f ~/bert_jax.exit; pkg=\$(python -c \"import os, bert_jax; print(os.path.dirname(bert_jax.__file__))\") || exit 1; cd \"\$pkg\"; (trap \"\" HUP; nohup $args > ~/bert_jax.log 2>&1; echo \$? > ~/bert_jax.exit) < /dev/null > /dev/null 2>&1 &"
}

# Prints worker 0's exit status once the job has ended, else running or gone.
probe_remote="if [ -f ~/bert_jax.exit ]; then cat ~/bert_jax.exit; elif pgrep -f $job_pattern > /dev/null; then echo running; else echo gone; fi"

# One line per worker: its host name (TPU VM names end in -w-INDEX), its exit status
# (or running / gone) and the last error line of its log (bert-jax marks the errors
# of processes other than 0 "process N:"): which host failed, and why.
report_remote="echo \"\$(hostname): \$(if [ -f ~/bert_jax.exit ]; then echo exit \$(cat ~/bert_jax.exit); elif pgrep -f $job_pattern > /dev/null; then echo running; else echo gone; fi); \$(grep -a 'error:' ~/bert_jax.log 2>/dev/null | tail -n 1)\""

# --- relaunch -----------------------------------------------------------------------
wait_queued_active() {
  local state
  while true; do
    state=$("$gcloud_bin" "${queued_state_cmd[@]}" 2>/dev/null) || state=""
    case $state in
      ACTIVE) return 0 ;;
      FAILED | SUSPENDED) return 1 ;;
    esac
    sleep "$poll_seconds"
  done
}

recreate_vm() {
  g "${delete_cmd[@]}" || true
  g "${create_cmd[@]}" || return 1
  if [[ $queued == 1 ]]; then
    log "waiting for queued resource $name to become ACTIVE"
    wait_queued_active || return 1
  fi
  g "${ssh_all[@]}" "$(setup_remote)"
}

restarts=0
restart() { # vm | job
  restarts=$((restarts + 1))
  if ((restarts > max_restarts)); then
    echo "error: giving up after $max_restarts restarts" >&2
    exit 1
  fi
  log "restart $restarts of $max_restarts"
  if [[ $1 == vm ]] && ! recreate_vm; then
    log "recreating $name failed; next check in ${poll_seconds}s"
    return 0
  fi
  g "${ssh_all[@]}" "$(run_remote)" || log "starting the job failed; next check in ${poll_seconds}s"
}

watch_job() {
  local state status misses=0
  g "${ssh_all[@]}" "$(run_remote)" || log "starting the job failed; next check in ${poll_seconds}s"
  while true; do
    sleep "$poll_seconds"
    state=$("$gcloud_bin" "${describe_cmd[@]}" 2>/dev/null) || state=""
    if [[ -n $state ]]; then misses=0; else misses=$((misses + 1)); fi
    case $state in
      READY)
        status=$("$gcloud_bin" "${ssh_0[@]}" "$probe_remote" 2>/dev/null | tail -n 1) || continue
        status=${status//[[:space:]]/}
        case $status in
          running) ;;
          0)
            log "job finished (exit 0)"
            return 0
            ;;
          *)
            log "job ended ($status) on worker 0; every worker's status and last error:"
            "$gcloud_bin" "${ssh_all[@]}" "$report_remote" 2>/dev/null | sed 's/^/  /' >&2 || true
            log "running it again"
            restart job
            ;;
        esac
        ;;
      PREEMPTED | TERMINATED)
        log "$name is $state; recreating it"
        restart vm
        ;;
      "")
        if ((misses >= 3)); then
          log "$name not found; recreating it"
          misses=0
          restart vm
        fi
        ;;
      STOPPING | STOPPED)
        echo "error: $name is $state; start it (gcloud compute tpus tpu-vm start) and run again" >&2
        exit 1
        ;;
      *) ;; # CREATING, STARTING, RESTARTING, REPAIRING, ...: wait
    esac
  done
}

# --- subcommands --------------------------------------------------------------------
case $sub in
  create) g "${create_cmd[@]}" ;;
  setup) g "${ssh_all[@]}" "$(setup_remote)" ;;
  run)
    if [[ $relaunch == 0 ]]; then
      g "${ssh_all[@]}" "$(run_remote)"
      [[ $dry_run == 1 ]] || log "started; follow it with: $0 logs --name $name --zone $zone"
    elif [[ $dry_run == 1 ]]; then
      g "${ssh_all[@]}" "$(run_remote)"
      g "${describe_cmd[@]}"
      g "${ssh_0[@]}" "$probe_remote"
      g "${ssh_all[@]}" "$report_remote"
      echo "# checked every ${poll_seconds}s; exit status not 0 or no job: the report above, then the last command again; VM PREEMPTED, TERMINATED or gone: these (at most $max_restarts restarts):"
      g "${delete_cmd[@]}"
      g "${create_cmd[@]}"
      [[ $queued == 0 ]] || g "${queued_state_cmd[@]}"
      g "${ssh_all[@]}" "$(setup_remote)"
      g "${ssh_all[@]}" "$(run_remote)"
    else
      watch_job
    fi
    ;;
  logs) g "${ssh_one[@]}" "tail -f ~/bert_jax.log" ;;
  stop) g "${stop_cmd[@]}" ;;
  delete) g "${delete_cmd[@]}" ;;
esac
