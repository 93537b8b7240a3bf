"""How long a checkpoint save blocks the training loop, async vs sync.

    python benchmarks/checkpoint_save.py [--size base] [--saves 3]
    XLA_FLAGS=--xla_force_host_platform_device_count=8 \
        python benchmarks/checkpoint_save.py --size tiny --mesh 8,1,1 [--split_all]

Builds the pretraining state of SIZE (params + LAMB state, fp32) the way `pretrain`
does, then saves it with the same `checkpoints.save` into a fresh workdir, once with
Orbax's async checkpointing and once without. Prints one JSON line: the seconds each
save call kept the caller (the loop) waiting, and the seconds until the checkpoint
was complete on disk.
"""

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time

import jax

from bert_jax.runtime import checkpoints
from bert_jax.model import bert as model_lib
from bert_jax.pretrain import step as pretrain_step
from bert_jax.configs import pretrain as pretrain_configs


def measure(state, workdir: str, async_save: bool, saves: int) -> dict:
  mngr = checkpoints.manager(workdir, keep=1, async_save=async_save)
  blocked, complete = [], []
  for i in range(saves):
    state = state.replace(step=state.step + 1)
    start = time.perf_counter()
    checkpoints.save(mngr, state, {"stream_examples": i})
    blocked.append(time.perf_counter() - start)
    mngr.wait_until_finished()
    complete.append(time.perf_counter() - start)
  mngr.close()
  return {"first_blocking_s": round(blocked[0], 3),  # compiles included
          "blocking_s": round(statistics.median(blocked), 3),
          "complete_s": round(statistics.median(complete), 3)}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--size", default="base")
  parser.add_argument("--saves", type=int, default=3)
  parser.add_argument("--dir", default=None, help="where to write (default: a temp dir)")
  parser.add_argument("--mesh", default="1,1,1",
                      help="data,fsdp,tensor; more than 1 data replica makes the "
                      "arrays replicated (emulate devices with XLA_FLAGS)")
  parser.add_argument("--split_all", action="store_true",
                      help="Orbax's default: every replicated array split among its "
                      "replicas, not only parts of >= 1 MiB")
  args = parser.parse_args()
  if args.split_all:
    checkpoints.set_replica_slice_floor(0)
  config = pretrain_configs.get_config(args.size)
  config.unlock()
  config.mesh.shape = tuple(int(n) for n in args.mesh.split(","))
  s = pretrain_step.setup(config)
  state = s.init(0)
  jax.block_until_ready(state)
  size = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))
  root = args.dir or tempfile.mkdtemp(prefix="bert_jax_ckpt_")
  result = {"size": args.size, "mesh": args.mesh, "split_all": args.split_all,
            "params": model_lib.count_params(state.params),
            "checkpoint_gib": round(size / 2**30, 3)}
  for name, async_save in (("async", True), ("sync", False)):
    workdir = os.path.join(root, name)
    result[name] = measure(state, workdir, async_save, args.saves)
    shutil.rmtree(workdir, ignore_errors=True)
  print(json.dumps(result))


if __name__ == "__main__":
  main()
