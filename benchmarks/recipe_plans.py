"""The reference recipes' `plan` on a given slice: for each preset of
configs/pretrain.py, the fewest microbatches (train.microbatches, a power of 2) with
which the train step fits the devices' memory, found by compiling it for the mesh
(1, N, 1) (FSDP over all N devices) on N emulated CPU devices. One JSON line per
recipe: the plan at that accumulation, and the peak at the next smaller one.

    python benchmarks/recipe_plans.py --devices 16 --hbm_gib 32   # TPU v4-32
    python benchmarks/recipe_plans.py --devices 64 --hbm_gib 16   # TPU v5e-64
    python benchmarks/recipe_plans.py --devices 8 --hbm_gib 80    # 8 x H100 80 GB

XLA:CPU compiles it, so temporaries are an estimate of what the TPU or GPU compiler
will need (fusion and layouts differ); leave headroom.
"""

import json
import os
import sys

from absl import app, flags

_DEVICES = flags.DEFINE_integer("devices", 8, "Devices of the slice (emulated).")
_HBM_GIB = flags.DEFINE_float("hbm_gib", 16.0, "Memory per device, GiB.")
_RECIPES = flags.DEFINE_list("recipes", None, "Presets to plan (default: all but demo).")


def _plan(name: str, microbatches: int) -> dict:
  from bert_jax.tools import plan  # pylint: disable=g-import-not-at-top
  from configs import pretrain  # pylint: disable=g-import-not-at-top
  config = pretrain.get_config(name)
  config.mesh.shape = (1, _DEVICES.value, 1)
  config.train.microbatches = microbatches
  return plan.run(config, _HBM_GIB.value)


def fewest_microbatches(name: str, batch: int) -> dict:
  """Starts at 32 rows per device per microbatch, then halves k while the plan
  fits, or doubles it until it does (or a microbatch is one row per device)."""
  k = 1
  while batch // (k * _DEVICES.value) > 32:
    k *= 2
  result = _plan(name, k)
  if result["fits"]:
    while k > 1 and (half := _plan(name, k // 2))["fits"]:
      k, result = k // 2, half
    other = None if k == 1 else half
  else:
    while not result["fits"] and batch // k > _DEVICES.value:
      k, other = k * 2, result
      result = _plan(name, k)
  return {"recipe": name, **result, "peak_gib_at_half_microbatches":
          None if other is None else round(other["peak_bytes_per_device"] / 2**30, 2)}


def main(_):
  from configs import pretrain  # pylint: disable=g-import-not-at-top
  for name in _RECIPES.value or [n for n in pretrain.PRESETS if n != "demo"]:
    batch = pretrain.get_config(name).train.global_batch_size
    print("RECIPE " + json.dumps(fewest_microbatches(name, batch)), flush=True)


if __name__ == "__main__":
  # Before jax is imported: the devices to compile for.
  count = next((a.split("=")[1] for a in sys.argv if a.startswith("--devices=")), "8")
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + f" --xla_force_host_platform_device_count={count}")
  sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
  app.run(main)
