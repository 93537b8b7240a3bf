"""`bert-jax plan`: per-device memory of the train step, before renting chips.

Compiles the real train step (same model, optimizer, shardings and batch as
`pretrain`) for the configured mesh on emulated CPU devices, then reports per device:
parameter and optimizer-state bytes (from the shardings: each leaf's shard shape) and
XLA's compiled memory analysis (arguments, outputs, temporaries).
"""

import json
import logging
import math

import jax
import jax.numpy as jnp

from bert_jax.model import bert as model_lib
from bert_jax.pretrain import step as pretrain_step

log = logging.getLogger(__name__)

GIB = 2**30


def _bytes_per_device(abstract_tree, shardings) -> int:
  """Bytes one device holds of a sharded tree (a shard of each leaf)."""
  def leaf(a, s):
    return jnp.dtype(a.dtype).itemsize * math.prod(s.shard_shape(a.shape))
  return sum(jax.tree_util.tree_leaves(jax.tree.map(leaf, abstract_tree, shardings)))


def _total_bytes(abstract_tree) -> int:
  return sum(jnp.dtype(a.dtype).itemsize * math.prod(a.shape)
             for a in jax.tree_util.tree_leaves(abstract_tree))


def run(config, hbm_gib: float = 0.0) -> dict:
  """Returns (and logs) the memory plan; `hbm_gib` > 0 flags a plan that does not fit."""
  s = pretrain_step.setup(config)  # the step `pretrain` runs
  compiled = s.lower().compile()
  abstract, mesh, shardings = s.abstract, s.mesh, s.shardings
  batch, seq = s.abstract_batch["input_ids"].shape
  memory = compiled.memory_analysis()

  params = _bytes_per_device(abstract.params, shardings.params)
  opt = _bytes_per_device(abstract.opt_state, shardings.opt_state)
  plan = {
      "size": config.model.size,
      "mesh": dict(mesh.shape),
      "global_batch_size": batch,
      # Gradient accumulation: temporaries hold one microbatch's activations.
      "microbatches": config.train.microbatches,
      "seq_len": seq,
      "dtype": config.model.dtype,
      "num_params": model_lib.count_params(abstract.params),
      "params_bytes_total": _total_bytes(abstract.params),
      "opt_state_bytes_total": _total_bytes(abstract.opt_state),
      "params_bytes_per_device": params,
      "opt_state_bytes_per_device": opt,
      "argument_bytes_per_device": memory.argument_size_in_bytes,
      "output_bytes_per_device": memory.output_size_in_bytes,
      "alias_bytes_per_device": memory.alias_size_in_bytes,
      "temp_bytes_per_device": memory.temp_size_in_bytes,
  }
  # Donated state aliases its outputs, so the peak is arguments + temporaries + the
  # outputs that do not reuse an argument buffer.
  plan["peak_bytes_per_device"] = (memory.argument_size_in_bytes
                                   + memory.temp_size_in_bytes
                                   + memory.output_size_in_bytes
                                   - memory.alias_size_in_bytes)
  if hbm_gib > 0:
    plan["hbm_bytes_per_device"] = int(hbm_gib * GIB)
    plan["fits"] = plan["peak_bytes_per_device"] <= plan["hbm_bytes_per_device"]
  log.info("%s", summary(plan))
  print(json.dumps(plan))
  return plan


def summary(plan: dict) -> str:
  g = lambda key: plan[key] / GIB
  line = (f"plan {plan['size']} mesh {plan['mesh']} batch {plan['global_batch_size']} "
          f"seq {plan['seq_len']} microbatches {plan['microbatches']}: per device params {g('params_bytes_per_device'):.3f} GiB, "
          f"optimizer {g('opt_state_bytes_per_device'):.3f} GiB, "
          f"temporaries {g('temp_bytes_per_device'):.3f} GiB, "
          f"peak {g('peak_bytes_per_device'):.3f} GiB")
  if "fits" in plan:
    line += (f" — {'fits' if plan['fits'] else 'DOES NOT FIT'} in "
             f"{g('hbm_bytes_per_device'):.1f} GiB")
  return line
