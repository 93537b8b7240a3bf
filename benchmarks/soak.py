"""kill -9 soak: kill pretraining at random moments (mid-save included), restart,
repeat, and check that nothing half-written is ever picked up and that the final
params equal an uninterrupted run's, bit for bit.

    python benchmarks/soak.py --workdir /tmp/soak --kills 5 [--steps 40]

Each round starts `bert-jax pretrain` on the same workdir and SIGKILLs it either
while an Orbax save is in flight (a temporary checkpoint directory exists) or at a
random time after training started. After every kill the latest checkpoint must
restore (a failure counts as a corrupt checkpoint seen). Finally the run is allowed
to finish and its params are compared with a run that was never interrupted. Prints
one JSON line; exits 1 if a corrupt checkpoint was seen or the params differ.
"""

import argparse
import glob
import json
import os
import random
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _flags(workdir: str, data_dir: str, steps: int) -> list[str]:
  return [f"--config={REPO}/configs/pretrain.py:tiny", f"--workdir={workdir}",
          f"--config.data.prepared_dir={data_dir}", "--config.data.num_shards=4",
          "--config.data.num_streams=4", "--config.train.global_batch_size=16",
          f"--config.train.num_steps={steps}", "--config.train.log_every=1",
          "--config.train.checkpoint_every=2", "--config.train.keep_checkpoints=2",
          "--config.optimizer.warmup_steps=5"]


def _start(flags: list[str], log_path: str) -> subprocess.Popen:
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
         "TF_CPP_MIN_LOG_LEVEL": "2"}
  log = open(log_path, "a")  # pylint: disable=consider-using-with
  return subprocess.Popen([sys.executable, "-m", "bert_jax", "pretrain", *flags],
                          cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def _steps_logged(workdir: str) -> int:
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return 0
  with open(path) as f:
    rows = [json.loads(l) for l in f if l.strip().endswith("}")]
  return max((r["step"] for r in rows), default=0)


def _saving(workdir: str) -> bool:
  return bool(glob.glob(os.path.join(workdir, "checkpoints", "*tmp*")))


def _kill_at_random(proc: subprocess.Popen, workdir: str, rng: random.Random,
                    timeout: float = 300) -> str:
  """SIGKILLs `proc` mid-save or at a random moment of training; returns which."""
  mid_save = rng.random() < 0.5
  start_step = _steps_logged(workdir)
  deadline = time.time() + timeout
  wait_until = None
  while time.time() < deadline and proc.poll() is None:
    if _steps_logged(workdir) > start_step:  # past start-up, training
      if mid_save and _saving(workdir):
        proc.kill()
        return "mid_save"
      if not mid_save:
        wait_until = wait_until or time.time() + rng.uniform(0.0, 3.0)
        if time.time() >= wait_until:
          proc.kill()
          return "random"
    time.sleep(0.005)
  if proc.poll() is None:
    proc.kill()
  return "finished" if proc.returncode == 0 else "timeout"


def _latest_restores(workdir: str) -> bool:
  """The latest checkpoint (if any) restores: params and optimizer state read back."""
  import bert_jax  # pylint: disable=g-import-not-at-top
  from bert_jax.runtime import checkpoints  # pylint: disable=g-import-not-at-top
  mngr = checkpoints.manager(workdir, async_save=False)
  step = mngr.latest_step()
  mngr.close()
  if step is None:
    return True
  try:
    bert_jax.from_pretrained(workdir, step=step)
    return True
  except Exception:  # pylint: disable=broad-except
    return False


def _params(workdir: str):
  import bert_jax  # pylint: disable=g-import-not-at-top
  return bert_jax.from_pretrained(workdir).params


def _prepare(workdir: str) -> str:
  """200 embedded-corpus documents in 4 shards; their directory."""
  from bert_jax.data import prepare  # pylint: disable=g-import-not-at-top
  from bert_jax.configs import pretrain as pretrain_configs  # pylint: disable=g-import-not-at-top
  data_dir = os.path.join(workdir, "data")
  config = pretrain_configs.get_config("tiny")
  config.unlock()
  config.data.max_documents = 200
  config.data.num_shards = 4
  config.data.prepared_dir = data_dir
  prepare.run(config, os.path.join(workdir, "prep"))
  return data_dir


def soak(workdir: str, kills: int, steps: int, seed: int, data_dir: str = "") -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  shutil.rmtree(workdir, ignore_errors=True)
  os.makedirs(workdir)
  data_dir = data_dir or _prepare(workdir)

  start = time.time()
  reference = os.path.join(workdir, "reference")
  proc = _start(_flags(reference, data_dir, steps), os.path.join(workdir, "reference.log"))
  if proc.wait() != 0:
    raise RuntimeError(f"reference run failed; see {workdir}/reference.log")

  rng = random.Random(seed)
  run = os.path.join(workdir, "killed")
  outcomes, corrupt, resumes = [], 0, 0
  while len([o for o in outcomes if o in ("mid_save", "random")]) < kills:
    proc = _start(_flags(run, data_dir, steps), os.path.join(workdir, "killed.log"))
    resumes += 1
    outcome = _kill_at_random(proc, run, rng)
    proc.wait()
    outcomes.append(outcome)
    if outcome in ("finished", "timeout"):
      break
    corrupt += not _latest_restores(run)
  if outcomes[-1] != "finished":  # let it finish
    proc = _start(_flags(run, data_dir, steps), os.path.join(workdir, "killed.log"))
    resumes += 1
    if proc.wait() != 0:
      raise RuntimeError(f"final run failed; see {workdir}/killed.log")
  want, got = _params(reference), _params(run)
  equal = all(jax.tree.leaves(jax.tree.map(
      lambda a, b: bool(np.array_equal(np.asarray(a), np.asarray(b))), want, got)))
  return {
      "kills": sum(o in ("mid_save", "random") for o in outcomes),
      "kills_mid_save": outcomes.count("mid_save"),
      "runs": resumes,
      "corrupt_checkpoints_seen": corrupt,
      "final_params_bitwise_equal": equal,
      "steps": steps,
      "seconds": round(time.time() - start, 1),
  }


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default="/tmp/bert_jax_soak")
  parser.add_argument("--kills", type=int, default=5)
  parser.add_argument("--steps", type=int, default=40)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--data_dir", default="",
                      help="data prepared as _prepare does (4 shards of 200 documents); "
                      "by default prepared afresh in --workdir")
  args = parser.parse_args()
  os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
  result = soak(args.workdir, args.kills, args.steps, args.seed, args.data_dir)
  print(json.dumps(result))
  sys.exit(0 if result["corrupt_checkpoints_seen"] == 0
           and result["final_params_bitwise_equal"] else 1)


if __name__ == "__main__":
  main()
