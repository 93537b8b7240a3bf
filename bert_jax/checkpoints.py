"""Orbax checkpoints of a pretraining workdir, and `from_pretrained`.

Layout: WORKDIR/checkpoints/<step>/{params,opt_state}. Params and optimizer state are
separate items so fine-tuning and export can restore params alone. Restores go into
abstract targets that carry the *current* shardings, so a checkpoint restores onto
any mesh.
"""

import json
import os
from typing import NamedTuple

import jax
import orbax.checkpoint as ocp
import tensorflow as tf

from bert_jax import model as model_lib, tokenizer as tokenizer_lib

CONFIG_FILE = "config.json"


def manager(workdir: str, keep: int = 3, async_save: bool = True) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      # Orbax wants absolute local paths; gs:// paths pass through.
      os.path.join(workdir if "://" in workdir else os.path.abspath(workdir),
                   "checkpoints"),
      options=ocp.CheckpointManagerOptions(
          max_to_keep=keep, create=True, enable_async_checkpointing=async_save))


def save(mngr: ocp.CheckpointManager, state) -> None:
  """Starts an (async) save of `state` at state.step."""
  mngr.save(int(state.step), args=ocp.args.Composite(
      params=ocp.args.StandardSave(state.params),
      opt_state=ocp.args.StandardSave(state.opt_state)))


def restore(mngr: ocp.CheckpointManager, step: int, abstract_state):
  """Restores the full state; `abstract_state` leaves carry the target shardings."""
  restored = mngr.restore(step, args=ocp.args.Composite(
      params=ocp.args.StandardRestore(abstract_state.params),
      opt_state=ocp.args.StandardRestore(abstract_state.opt_state)))
  return abstract_state.replace(step=jax.numpy.asarray(step, jax.numpy.int32),
                                params=restored["params"],
                                opt_state=restored["opt_state"])


def with_shardings(abstract_tree, shardings):
  """ShapeDtypeStructs carrying `shardings`: the restore target for another mesh."""
  return jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
      abstract_tree, shardings)


def write_config(workdir: str, config) -> None:
  tf.io.gfile.makedirs(workdir)
  with tf.io.gfile.GFile(os.path.join(workdir, CONFIG_FILE), "w") as f:
    f.write(config.to_json_best_effort(indent=2))


def read_config(workdir: str) -> dict:
  with tf.io.gfile.GFile(os.path.join(workdir, CONFIG_FILE)) as f:
    return json.load(f)


class Pretrained(NamedTuple):
  model: model_lib.BertForPreTraining
  params: dict
  tokenizer: tokenizer_lib.Tokenizer | None  # None when the directory has none


def from_pretrained(workdir: str, step: int | None = None) -> Pretrained:
  """(model, params, tokenizer) from a pretrain workdir / converted Orbax dir (latest
  or given step), a Hugging Face directory or a Google TF1 checkpoint directory (the
  last two converted in memory; see bert_jax.convert).

  Params are placed on the first local device; reshard as needed.
  """
  config = (read_config(workdir)
            if tf.io.gfile.exists(os.path.join(workdir, CONFIG_FILE)) else {})
  if "model" in config:
    model, params = restore_params(workdir, config, step)
  elif "://" not in workdir and os.path.isdir(workdir) and (
      config or tf.io.gfile.exists(os.path.join(workdir, "bert_config.json"))):
    from bert_jax import convert  # pylint: disable=g-import-not-at-top
    loaded = convert.load(workdir)
    device = jax.local_devices()[0]
    model = model_lib.BertForPreTraining(loaded.cfg)
    params = jax.tree.map(lambda x: jax.device_put(x, device), loaded.params)
  else:
    raise FileNotFoundError(f"{workdir} has no {CONFIG_FILE}: not a pretrain workdir")
  return Pretrained(model, params, tokenizer_lib.from_dir(workdir))


def restore_params(workdir: str, config: dict, step: int | None = None):
  """(model, params) of a pretrain workdir's checkpoint, on the first local device."""
  model = model_lib.BertForPreTraining(model_lib.BertConfig.from_dict(config["model"]))
  mngr = manager(workdir, async_save=False)
  step = mngr.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"no checkpoint in {workdir}/checkpoints")
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device),
      model_lib.abstract_params(model))
  params = mngr.restore(step, args=ocp.args.Composite(
      params=ocp.args.StandardRestore(abstract)))["params"]
  mngr.close()
  return model, params
