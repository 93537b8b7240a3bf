"""`bert_jax.from_pretrained`: a model, its params and tokenizer from any directory
this package reads (pretrain workdir, converted Orbax dir, Hugging Face or Google TF1
directory)."""

import os
from typing import NamedTuple

from etils import epath
import jax

from bert_jax.data import tokenizer as tokenizer_lib
from bert_jax.interop import convert
from bert_jax.model import bert as model_lib
from bert_jax.runtime import checkpoints


class Pretrained(NamedTuple):
  model: model_lib.BertForPreTraining
  params: dict
  tokenizer: tokenizer_lib.Tokenizer | None  # None when the directory has none


def from_pretrained(workdir: str, step: int | None = None) -> Pretrained:
  """(model, params, tokenizer) from a pretrain workdir / converted Orbax dir (latest
  or given step), a Hugging Face directory or a Google TF1 checkpoint directory (the
  last two converted in memory; see bert_jax.interop.convert).

  Params are placed on the first local device; reshard as needed.
  """
  config = (checkpoints.read_config(workdir)
            if epath.Path(workdir, checkpoints.CONFIG_FILE).exists() else {})
  if "model" in config:
    model, params = checkpoints.restore_params(workdir, config, step)
  elif "://" not in workdir and os.path.isdir(workdir) and (
      config or epath.Path(workdir, "bert_config.json").exists()):
    loaded = convert.load(workdir)
    device = jax.local_devices()[0]
    model = model_lib.BertForPreTraining(loaded.cfg)
    params = jax.tree.map(lambda x: jax.device_put(x, device), loaded.params)
  else:
    raise FileNotFoundError(
        f"{workdir} has no {checkpoints.CONFIG_FILE}: not a pretrain workdir")
  return Pretrained(model, params, tokenizer_lib.from_dir(workdir))
