"""launch/tpu_vm.sh and launch/slurm_gpu.sbatch without gcloud or SLURM.

Dry runs are compared word for word (each printed `+ ` line is shell-split) with the
gcloud / srun / bert-jax commands they stand for; fake gcloud and scontrol scripts
drive the relaunch loop and the per-task part; the remote start command is run by a
local bash against a fake bert-jax. No network, a few seconds.
"""

import json
import os
import pathlib
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import textwrap
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
TPU = ROOT / "launch" / "tpu_vm.sh"
SLURM = ROOT / "launch" / "slurm_gpu.sbatch"

NAME, ZONE = "bert-base", "us-central2-b"
BASE = ["--name", NAME, "--zone", ZONE]
TPU_VM = ["gcloud", "compute", "tpus", "tpu-vm"]
QUEUED = ["gcloud", "compute", "tpus", "queued-resources"]


def _env(**extra):
  """The caller's environment without the scripts' own defaults, plus extra."""
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(("TPU_", "BERT_JAX", "SLURM_", "GCLOUD"))
         and k not in ("DRY_RUN", "ONE_GPU_PER_TASK", "CUDA_VISIBLE_DEVICES")}
  env.update(extra)
  return env


def _run(args, env=None, cwd=ROOT, timeout=30):
  return subprocess.run([str(a) for a in args], capture_output=True, text=True,
                        env=env or _env(), cwd=cwd, timeout=timeout, check=False)


def tpu(*args, env=None):
  return _run(["bash", TPU, *args], env=env)


def commands(stdout):
  """The `+ ` lines of a dry run, each split into words as a shell would."""
  return [shlex.split(line[2:]) for line in stdout.splitlines() if line.startswith("+ ")]


def _executable(path, text):
  path.write_text(textwrap.dedent(text).lstrip())
  path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
  return path


# --- syntax -----------------------------------------------------------------------


@pytest.mark.parametrize("script", [TPU, SLURM], ids=lambda p: p.name)
def test_bash_syntax(script):
  r = _run(["bash", "-n", script])
  assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("script", [TPU, SLURM], ids=lambda p: p.name)
def test_shellcheck(script):
  if shutil.which("shellcheck") is None:
    pytest.skip("shellcheck not installed")
  r = _run(["shellcheck", "-s", "bash", "-e", "SC2088", script])
  assert r.returncode == 0, r.stdout


def test_help_is_the_header():
  r = tpu("--help")
  assert r.returncode == 0
  assert "launch/tpu_vm.sh create --name NAME" in r.stdout
  assert "--dry-run" in r.stdout
  assert "set -euo" not in r.stdout


# --- tpu_vm.sh: the gcloud commands ------------------------------------------------


def test_create():
  r = tpu("create", *BASE, "--accelerator-type", "v4-32", "--dry-run")
  assert r.returncode == 0, r.stderr
  assert r.stdout == (f"+ gcloud compute tpus tpu-vm create {NAME} --zone={ZONE} "
                      "--accelerator-type=v4-32 --version=tpu-ubuntu2204-base\n")


def test_create_spot_project_runtime_version():
  r = tpu("create", "--name=bert-base", "--zone=us-central2-b", "--accelerator-type=v4-32",
          "--spot", "--project", "my-proj", "--runtime-version", "v2-alpha-tpuv5", "--dry-run")
  assert r.returncode == 0, r.stderr
  assert commands(r.stdout) == [
      TPU_VM + ["create", NAME, f"--zone={ZONE}", "--project=my-proj",
                "--accelerator-type=v4-32", "--version=v2-alpha-tpuv5", "--spot"]]


def test_create_queued():
  r = tpu("create", *BASE, "--accelerator-type", "v4-32", "--queued", "--spot", "--dry-run")
  assert r.returncode == 0, r.stderr
  assert commands(r.stdout) == [
      QUEUED + ["create", NAME, f"--node-id={NAME}", f"--zone={ZONE}",
                "--accelerator-type=v4-32", "--runtime-version=tpu-ubuntu2204-base",
                "--spot"]]


def test_environment_defaults():
  env = _env(TPU_NAME=NAME, TPU_ZONE=ZONE, TPU_ACCELERATOR_TYPE="v5p-16",
             TPU_RUNTIME_VERSION="v2-alpha-tpuv5")
  r = tpu("create", "--dry-run", env=env)
  assert r.returncode == 0, r.stderr
  assert commands(r.stdout) == [
      TPU_VM + ["create", NAME, f"--zone={ZONE}", "--accelerator-type=v5p-16",
                "--version=v2-alpha-tpuv5"]]


@pytest.mark.parametrize("queued", [False, True])
def test_delete(queued):
  r = tpu("delete", *BASE, "--dry-run", *(["--queued"] if queued else []))
  assert r.returncode == 0, r.stderr
  if queued:
    assert r.stdout == (f"+ gcloud compute tpus queued-resources delete {NAME} "
                        f"--zone={ZONE} --force --quiet\n")
  else:
    assert r.stdout == f"+ gcloud compute tpus tpu-vm delete {NAME} --zone={ZONE} --quiet\n"


def test_stop_and_logs():
  r = tpu("stop", *BASE, "--dry-run")
  assert commands(r.stdout) == [TPU_VM + ["stop", NAME, f"--zone={ZONE}", "--quiet"]]
  r = tpu("logs", *BASE, "--dry-run")
  assert commands(r.stdout) == [
      TPU_VM + ["ssh", NAME, f"--zone={ZONE}", "--worker=0", "--command",
                "tail -f ~/bert_jax.log"]]
  r = tpu("logs", *BASE, "--worker", "3", "--dry-run")
  assert commands(r.stdout)[0][7] == "--worker=3"


def _start_command(cmd):
  """The remote command of a run: the ssh line on all workers."""
  assert cmd[:8] == TPU_VM + ["ssh", NAME, f"--zone={ZONE}", "--worker=all"]
  assert cmd[8] == "--command" and len(cmd) == 10
  return cmd[9]


def test_run():
  r = tpu("run", *BASE, "--workdir", "gs://bucket/runs/base", "--dry-run")
  assert r.returncode == 0, r.stderr
  [cmd] = commands(r.stdout)
  remote = _start_command(cmd)
  assert ("nohup bert-jax pretrain --distributed --config configs/pretrain.py:base "
          "--workdir gs://bucket/runs/base > ~/bert_jax.log 2>&1;") in remote
  assert remote.endswith("&")


def test_run_passes_config_and_extra_args():
  r = tpu("run", *BASE, "--workdir=gs://b/r", "--config", "configs/pretrain.py:large",
          "--project", "p", "--dry-run", "--",
          "--config.model.dtype=bfloat16", "--config.mesh.shape=(-1,1,1)",
          "--config.data.input=gs://b/corpus/*.txt")
  assert r.returncode == 0, r.stderr
  [cmd] = commands(r.stdout)
  assert cmd[7] == "--project=p"
  remote = cmd[-1]
  # The remote shell sees the extra args as single words, globs and parentheses quoted.
  job = remote[remote.index("nohup ") + len("nohup "):remote.index(" > ~/bert_jax.log")]
  assert shlex.split(job) == [
      "bert-jax", "pretrain", "--distributed", "--config", "configs/pretrain.py:large",
      "--workdir", "gs://b/r", "--config.model.dtype=bfloat16",
      "--config.mesh.shape=(-1,1,1)", "--config.data.input=gs://b/corpus/*.txt"]


def test_run_relaunch_dry_run_prints_one_iteration():
  r = tpu("run", *BASE, "--workdir", "gs://b/r", "--relaunch", "--accelerator-type", "v4-32",
          "--spot", "--repo", "https://github.com/me/bert_jax.git", "--dry-run")
  assert r.returncode == 0, r.stderr
  cmds = commands(r.stdout)
  assert len(cmds) == 8
  assert "nohup bert-jax pretrain --distributed" in _start_command(cmds[0])
  assert cmds[1] == TPU_VM + ["describe", NAME, f"--zone={ZONE}", "--format=value(state)"]
  assert cmds[2][:8] == TPU_VM + ["ssh", NAME, f"--zone={ZONE}", "--worker=0"]
  assert "~/bert_jax.exit" in cmds[2][-1]
  assert cmds[3][:8] == TPU_VM + ["ssh", NAME, f"--zone={ZONE}", "--worker=all"]
  assert "hostname" in cmds[3][-1]  # the report: which worker failed
  assert cmds[4] == TPU_VM + ["delete", NAME, f"--zone={ZONE}", "--quiet"]
  assert cmds[5] == TPU_VM + ["create", NAME, f"--zone={ZONE}", "--accelerator-type=v4-32",
                              "--version=tpu-ubuntu2204-base", "--spot"]
  assert "pip install" in _start_command(cmds[6])
  assert cmds[7] == cmds[0]
  assert sum(line.startswith("#") for line in r.stdout.splitlines()) == 1


def test_run_relaunch_queued_waits_for_active():
  r = tpu("run", *BASE, "--workdir", "gs://b/r", "--relaunch", "--accelerator-type", "v4-32",
          "--queued", "--repo", "git+https://x/y.git", "--dry-run")
  assert r.returncode == 0, r.stderr
  cmds = commands(r.stdout)
  assert cmds[4] == QUEUED + ["delete", NAME, f"--zone={ZONE}", "--force", "--quiet"]
  assert cmds[5][:5] == QUEUED + ["create"]
  assert cmds[6] == QUEUED + ["describe", NAME, f"--zone={ZONE}", "--format=value(state.state)"]


@pytest.mark.parametrize("repo,spec", [
    ("https://github.com/me/bert_jax.git", "git+https://github.com/me/bert_jax.git"),
    ("git@github.com:me/bert_jax.git", "git+ssh://git@github.com/me/bert_jax.git"),
    ("git+https://github.com/me/bert_jax.git@v0.1", "git+https://github.com/me/bert_jax.git@v0.1"),
    ("bert_jax==0.1.0", "bert_jax==0.1.0"),
    ("bert_jax>=0.1", '"bert_jax>=0.1"'),
])
def test_setup_installs_jax_tpu_and_the_repo(repo, spec):
  r = tpu("setup", *BASE, "--repo", repo, "--dry-run")
  assert r.returncode == 0, r.stderr
  [cmd] = commands(r.stdout)
  remote = _start_command(cmd)
  assert remote.endswith(f'~/bert_jax_venv/bin/pip install -q -U "jax[tpu]" {spec}')
  assert "python3.11" in remote


def _copy_of_launch(tmp_path, origin):
  """launch/tpu_vm.sh inside a fresh git checkout with the given origin (or none)."""
  checkout = tmp_path / "checkout"
  (checkout / "launch").mkdir(parents=True)
  shutil.copy(TPU, checkout / "launch" / "tpu_vm.sh")
  subprocess.run(["git", "init", "-q", str(checkout)], check=True)
  if origin:
    subprocess.run(["git", "-C", str(checkout), "remote", "add", "origin", origin], check=True)
  return checkout / "launch" / "tpu_vm.sh"


def test_setup_defaults_to_the_checkouts_origin(tmp_path):
  script = _copy_of_launch(tmp_path, "https://github.com/me/bert_jax.git")
  r = _run(["bash", script, "setup", *BASE, "--dry-run"])
  assert r.returncode == 0, r.stderr
  assert commands(r.stdout)[0][-1].endswith(" git+https://github.com/me/bert_jax.git")


def test_setup_without_origin_needs_repo(tmp_path):
  script = _copy_of_launch(tmp_path, None)
  r = _run(["bash", script, "setup", *BASE, "--dry-run"])
  assert r.returncode == 2
  assert r.stderr.startswith("error:") and "--repo" in r.stderr
  assert r.stdout == ""


# --- tpu_vm.sh: bad input ---------------------------------------------------------


@pytest.mark.parametrize("args,words", [
    (["frobnicate", *BASE], "unknown subcommand"),
    ([*BASE], "missing subcommand"),
    (["create", "--zone", ZONE, "--accelerator-type", "v4-8"], "--name"),
    (["create", "--name", NAME, "--accelerator-type", "v4-8"], "--zone"),
    (["create", *BASE], "--accelerator-type"),
    (["run", *BASE, "--workdir", "/tmp/runs/base"], "gs://"),
    (["run", *BASE, "--workdir", "gs://"], "gs://"),
    (["run", *BASE], "--workdir"),
    (["run", *BASE, "--workdir", "gs://b/r", "--relaunch", "--repo", "x"], "--accelerator-type"),
    (["create", *BASE, "--accelerator-type", "v4-8", "--bogus"], "unknown option"),
    (["delete", *BASE, "--", "--config.x=1"], "only for run"),
    (["stop", *BASE, "--queued"], "delete"),
    (["logs", *BASE, "--worker", "one"], "integers"),
    (["create", *BASE, "--name"], "needs a value"),
])
def test_bad_input_is_one_line_and_exit_2(args, words):
  r = tpu(*args, "--dry-run")
  assert r.returncode == 2, (r.stdout, r.stderr)
  assert r.stderr.startswith("error:") and r.stderr.count("\n") == 1, r.stderr
  assert words in r.stderr
  assert r.stdout == ""


# --- tpu_vm.sh: the remote commands, run by a local bash ----------------------------


@pytest.mark.serial
def test_remote_start_command_runs_the_job_detached_and_records_its_exit(tmp_path):
  """HOME = a fake worker: a venv whose bert-jax prints its cwd and args, waits for
  HOME/release, then exits 3."""
  home = tmp_path / "home"
  venv_bin = home / "bert_jax_venv" / "bin"
  venv_bin.mkdir(parents=True)
  (venv_bin / "python").symlink_to(sys.executable)
  _executable(venv_bin / "bert-jax", """
      #!/usr/bin/env bash
      echo "cwd=$PWD"
      printf 'arg=%s\\n' "$@"
      while [ ! -f "$HOME/release" ]; do sleep 0.05; done
      exit 3
      """)
  package = tmp_path / "site" / "bert_jax"
  (package / "configs").mkdir(parents=True)
  (package / "__init__.py").write_text("")
  (package / "configs" / "pretrain.py").write_text("")
  r = tpu("run", *BASE, "--workdir", "gs://b/r", "--dry-run", "--",
          "--config.data.input=gs://b/c/*.txt", "--config.train.num_steps=5")
  # The job pattern, narrowed to this fake venv: pkill and pgrep must not touch any
  # other bert-jax on this machine.
  pattern = '"bin/[b]ert-jax pretrain"'
  ours = f'"{venv_bin}/[b]ert-jax pretrain"'
  remote = commands(r.stdout)[0][-1]
  assert remote.count(pattern) == 2
  remote = remote.replace(pattern, ours)
  # The relaunch loop's check on worker 0.
  r = tpu("run", *BASE, "--workdir", "gs://b/r", "--relaunch", "--accelerator-type", "v4-8",
          "--repo", "x", "--dry-run")
  probe = commands(r.stdout)[2][-1]
  assert probe.count(pattern) == 1
  probe = probe.replace(pattern, ours)
  report = commands(r.stdout)[3][-1].replace(pattern, ours)
  env = _env(HOME=str(home), PYTHONPATH=str(tmp_path / "site"))
  log, exit_file = home / "bert_jax.log", home / "bert_jax.exit"
  try:
    started = _run(["bash", "-c", remote], env=env, cwd=tmp_path, timeout=20)
    assert started.returncode == 0, started.stderr  # returned with the job still running
    deadline = time.time() + 15
    while ((not log.exists() or log.read_text().count("\n") < 9)
           and time.time() < deadline):
      time.sleep(0.05)
    assert log.read_text().splitlines() == [
        f"cwd={package}", "arg=pretrain", "arg=--distributed",
        "arg=--config", "arg=configs/pretrain.py:base", "arg=--workdir", "arg=gs://b/r",
        "arg=--config.data.input=gs://b/c/*.txt", "arg=--config.train.num_steps=5"]
    assert _run(["bash", "-c", probe], env=env).stdout == "running\n"
  finally:
    (home / "release").touch()
  while not exit_file.exists() and time.time() < deadline:
    time.sleep(0.05)
  time.sleep(0.1)
  assert exit_file.read_text() == "3\n"
  assert _run(["bash", "-c", probe], env=env).stdout == "3\n"
  with open(log, "a") as f:
    f.write("error: process 1: out of device memory\n")
  assert _run(["bash", "-c", report], env=env).stdout == (
      f"{socket.gethostname()}: exit 3; error: process 1: out of device memory\n")
  exit_file.unlink()
  assert _run(["bash", "-c", probe], env=env).stdout == "gone\n"


# --- tpu_vm.sh --relaunch against a fake gcloud -------------------------------------

FAKE_GCLOUD = """
    #!/usr/bin/env python3
    # Logs each call; answers describe and the worker-0 check from scripted lists.
    import json, os, sys
    args = sys.argv[1:]
    state_dir = os.environ["FAKE_GCLOUD_DIR"]
    with open(os.path.join(state_dir, "calls"), "a") as f:
      f.write(json.dumps(args) + "\\n")
    def pop(kind):
      path = os.path.join(state_dir, kind)
      items = json.load(open(path))
      item = items.pop(0) if len(items) > 1 else items[0]
      json.dump(items, open(path, "w"))
      return item
    if args[3] == "describe":
      state = pop("states")
      if state is None:
        sys.exit("ERROR: NOT_FOUND")
      print(state)
    elif args[3] == "ssh" and "--worker=0" in args:
      print(pop("checks"))
    elif args[3] == "ssh" and "hostname" in args[-1]:  # the per-worker report
      print("t1v-n-1-w-0: exit 1; error: process 0: the train step failed")
      print("t1v-n-1-w-1: exit 1; error: process 1: out of device memory")
    """


def _relaunch(tmp_path, states, checks, *extra):
  state_dir = tmp_path / "gcloud"
  state_dir.mkdir()
  (state_dir / "states").write_text(json.dumps(states))
  (state_dir / "checks").write_text(json.dumps(checks))
  gcloud = _executable(tmp_path / "gcloud-fake", FAKE_GCLOUD)
  env = _env(GCLOUD=str(gcloud), FAKE_GCLOUD_DIR=str(state_dir))
  r = tpu("run", *BASE, "--workdir", "gs://b/r", "--relaunch", "--accelerator-type", "v4-32",
          "--spot", "--repo", "https://github.com/me/bert_jax.git", "--poll-seconds", "0",
          *extra, env=env)
  calls = [json.loads(line) for line in (state_dir / "calls").read_text().splitlines()]
  kinds = []
  for c in calls:
    if c[3] == "ssh":
      remote = c[-1]
      kinds.append("check" if "--worker=0" in c else
                   "report" if "hostname" in remote else
                   "setup" if "pip install" in remote else
                   "start" if "nohup bert-jax pretrain" in remote else remote)
    else:
      kinds.append(c[3])
  return r, kinds


def test_relaunch_recreates_after_preemption_and_reruns_after_a_crash(tmp_path):
  r, kinds = _relaunch(
      tmp_path,
      states=["READY", "PREEMPTED", "CREATING", "READY", "READY", "READY"],
      checks=["running", "1", "running", "0"])
  assert r.returncode == 0, r.stderr
  assert kinds == [
      "start",
      "describe", "check",                                  # running
      "describe", "delete", "create", "setup", "start",     # PREEMPTED: a new VM
      "describe",                                           # CREATING: wait
      "describe", "check",                                  # exit 1: run it again
      "report",                                             # after naming the hosts
      "start",
      "describe", "check",                                  # running
      "describe", "check",                                  # exit 0: done
  ]
  assert "job finished" in r.stderr
  assert "  t1v-n-1-w-1: exit 1; error: process 1: out of device memory" in r.stderr


def test_relaunch_recreates_a_vanished_vm_after_three_misses(tmp_path):
  r, kinds = _relaunch(tmp_path, states=[None, None, None, "READY"], checks=["0"])
  assert r.returncode == 0, r.stderr
  assert kinds == ["start", "describe", "describe", "describe", "delete", "create", "setup",
                   "start", "describe", "check"]


def test_relaunch_gives_up_after_max_restarts(tmp_path):
  r, kinds = _relaunch(tmp_path, ["READY"], ["gone"], "--max-restarts", "2")
  assert r.returncode == 1
  assert "giving up after 2 restarts" in r.stderr
  assert kinds.count("start") == 3


# --- slurm_gpu.sbatch ---------------------------------------------------------------


def _fake_scontrol(tmp_path):
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  _executable(bin_dir / "scontrol", """
      #!/bin/sh
      [ "$1 $2" = "show hostnames" ] || exit 1
      printf 'gpu-node-3\\ngpu-node-4\\n'
      """)
  return bin_dir


def _task_env(tmp_path, **extra):
  return _env(PATH=f"{_fake_scontrol(tmp_path)}{os.pathsep}{os.environ['PATH']}",
              BERT_JAX_TASK="1", SLURM_JOB_NODELIST="gpu-node-[3-4]", SLURM_NTASKS="8",
              SLURM_PROCID="5", SLURM_LOCALID="1", **extra)


USER_ARGS = ["--config", "configs/pretrain.py:base", "--workdir", "/shared/runs/base",
             "--config.mesh.shape=(-1,1,1)"]


def test_slurm_task_dry_run(tmp_path):
  r = _run(["bash", SLURM, *USER_ARGS], env=_task_env(tmp_path, DRY_RUN="1"))
  assert r.returncode == 0, r.stderr
  assert r.stdout.startswith("+ CUDA_VISIBLE_DEVICES=1 bert-jax pretrain "
                             "--coordinator_address=gpu-node-3:29500 --num_processes=8 "
                             "--process_id=5 ")
  assert commands(r.stdout) == [
      ["CUDA_VISIBLE_DEVICES=1", "bert-jax", "pretrain",
       "--coordinator_address=gpu-node-3:29500", "--num_processes=8", "--process_id=5",
       *USER_ARGS]]


def test_slurm_task_port_and_one_task_per_node(tmp_path):
  r = _run(["bash", SLURM, *USER_ARGS],
           env=_task_env(tmp_path, DRY_RUN="1", BERT_JAX_PORT="1234", ONE_GPU_PER_TASK="0"))
  assert r.returncode == 0, r.stderr
  [cmd] = commands(r.stdout)
  assert cmd[:5] == ["bert-jax", "pretrain", "--coordinator_address=gpu-node-3:1234",
                     "--num_processes=8", "--process_id=5"]


def test_slurm_task_execs_bert_jax(tmp_path):
  fake = _executable(tmp_path / "bert-jax", """
      #!/usr/bin/env bash
      echo "CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES"
      printf '%s\\n' "$@"
      """)
  r = _run(["bash", SLURM, *USER_ARGS], env=_task_env(tmp_path, BERT_JAX=str(fake)))
  assert r.returncode == 0, r.stderr
  assert r.stdout.splitlines() == [
      "CUDA_VISIBLE_DEVICES=1", "pretrain", "--coordinator_address=gpu-node-3:29500",
      "--num_processes=8", "--process_id=5", *USER_ARGS]


def test_slurm_task_without_slurm_env_is_an_error(tmp_path):
  env = _task_env(tmp_path, DRY_RUN="1")
  del env["SLURM_NTASKS"]
  r = _run(["bash", SLURM, *USER_ARGS], env=env)
  assert r.returncode == 2 and r.stderr.startswith("error:") and "SLURM_NTASKS" in r.stderr


def test_slurm_outer_dry_run_prints_srun():
  r = _run(["bash", SLURM, *USER_ARGS], env=_env(DRY_RUN="1"))
  assert r.returncode == 0, r.stderr
  assert commands(r.stdout) == [
      ["srun", "--kill-on-bad-exit=1", "--label", "--export=ALL,BERT_JAX_TASK=1", "bash", str(SLURM),
       *USER_ARGS]]


def test_slurm_outer_uses_the_submitted_script_path(tmp_path):
  """Under sbatch $0 is a spool copy; srun must run the file that was submitted."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  _executable(bin_dir / "scontrol", f"""
      #!/bin/sh
      echo "JobId=7 JobName=bert-jax"
      echo "   Command={SLURM}"
      echo "   WorkDir={ROOT}"
      """)
  spool = tmp_path / "slurm_script"
  shutil.copy(SLURM, spool)
  env = _env(DRY_RUN="1", SLURM_JOB_ID="7",
             PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
  r = _run(["bash", spool, *USER_ARGS], env=env)
  assert r.returncode == 0, r.stderr
  assert commands(r.stdout)[0][5] == str(SLURM)


def test_slurm_outer_needs_args_and_a_job():
  r = _run(["bash", SLURM], env=_env(DRY_RUN="1"))
  assert r.returncode == 2 and r.stderr.startswith("error:")
  r = _run(["bash", SLURM, *USER_ARGS])
  assert r.returncode == 2 and "sbatch" in r.stderr


def test_sbatch_header():
  lines = SLURM.read_text().splitlines()
  sbatch = [l for l in lines if l.startswith("#SBATCH")]
  assert any("--nodes=" in l for l in sbatch)
  assert any("--ntasks-per-node=" in l for l in sbatch)
  assert any("--gpus-per-node=" in l for l in sbatch)
  assert any("--time=" in l for l in sbatch)
  assert any("--output=" in l for l in sbatch)
  # sbatch reads #SBATCH lines only before the first command.
  first_command = next(i for i, l in enumerate(lines[1:], 1) if l and not l.startswith("#"))
  assert all(lines.index(l) < first_command for l in sbatch)
