"""`bert_jax.from_pretrained`: a model, its params and tokenizer from any directory
this package reads (pretrain workdir, converted Orbax dir, fine-tuned workdir, Hugging
Face or Google TF1 directory)."""

import json
import os
from typing import NamedTuple

from etils import epath
import jax

from bert_jax.data import tokenizer as tokenizer_lib
from bert_jax.errors import InputError
from bert_jax.interop import convert
from bert_jax.model import bert as model_lib
from bert_jax.runtime import checkpoints


class Pretrained(NamedTuple):
  # BertForPreTraining, or the bare BertEncoder of a fine-tuned workdir; either one's
  # `encode` method runs with `params`.
  model: model_lib.BertEncoder
  params: dict
  tokenizer: tokenizer_lib.Tokenizer | None  # None when the directory has none


def from_pretrained(workdir: str, step: int | None = None) -> Pretrained:
  """(model, params, tokenizer) from a pretrain workdir / converted Orbax dir (latest
  or given step), a fine-tuned workdir (its encoder: the task head is left out), a
  Hugging Face directory or a Google TF1 checkpoint directory (the last two converted
  in memory; see bert_jax.interop.convert).

  Params are placed on the first local device; reshard as needed.
  """
  config = (checkpoints.read_config(workdir)
            if epath.Path(workdir, checkpoints.CONFIG_FILE).exists() else {})
  finetuned = epath.Path(workdir, checkpoints.FINETUNE_FILE)
  if "model" in config:
    model, params = checkpoints.restore_params(workdir, config, step)
  elif finetuned.exists():
    cfg = model_lib.BertConfig.from_dict(json.loads(finetuned.read_text())["model"])
    model, params = checkpoints.restore_encoder(workdir, cfg, step)
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


def load(path: str, what: str, step: int | None = None) -> Pretrained:
  """`from_pretrained` for a command: a path that does not exist, holds no model or
  no tokenizer is a one-line InputError naming it as `what` (e.g. "init_from=PATH")."""
  if not epath.Path(path).exists():
    raise InputError(f"{what} does not exist")
  try:
    loaded = from_pretrained(path, step)
  except FileNotFoundError as e:
    raise InputError(f"{what}: {e}") from None
  if loaded.tokenizer is None:
    raise InputError(f"{what} has no tokenizer (tokenizer/spm.model, spm.model or "
                     f"vocab.txt): inputs could not be tokenized as in pretraining")
  return loaded
