"""Sentence embeddings: `encode(model, params, tokenizer, texts)` -> L2-normalised
float32 rows, one per text.

Each text becomes [CLS] text [SEP] (cut to max_length), padded to max_length; the
rows go through the encoder in batches of one fixed shape (the last one padded), so
one program is compiled whatever the number of texts, and a row's embedding does not
depend on the batch it sits in. Every device holds the whole model and a share of
each batch's rows (a mesh with every device on "data").
"""

import functools

import flax.linen as nn
import jax
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np
import tqdm

from bert_jax.errors import InputError
from bert_jax.finetune import features
from bert_jax.model import task_model
from bert_jax.runtime import sharding

POOLINGS = task_model.POOLINGS
# Activations' logical "batch" axis on the mesh's "data" axis; the rest unsharded.
_RULES = (("batch", "data"),)


@functools.lru_cache(maxsize=None)
def data_parallel() -> tuple[NamedSharding, NamedSharding]:
  """(rows, replicated): shardings on a mesh of every device along "data", rows of
  an array split over it and an array copied to each."""
  mesh = sharding.make_mesh((-1, 1, 1))
  return NamedSharding(mesh, P("data")), sharding.replicated(mesh)


@functools.lru_cache(maxsize=None)
def _forward(model: nn.Module, pooling: str):
  """The jitted params, batch -> embeddings of one (model, pooling): cached, so
  every call of `encode` with them reuses one compiled program."""
  rows, replicated = data_parallel()

  def forward(params, batch):
    sequence, _ = model.apply(
        {"params": params}, batch["input_ids"], batch["token_type_ids"],
        batch["attention_mask"], deterministic=True, method="encode")
    return task_model.pool(sequence, batch["attention_mask"], pooling)

  return jax.jit(forward, in_shardings=(replicated, rows), out_shardings=replicated)


def _bar_disabled(progress: bool | None, num_batches: int) -> bool | None:
  """tqdm's `disable`: None lets tqdm show the bar only on a terminal."""
  if jax.process_index() or progress is False or (progress is None and num_batches < 2):
    return True
  return None if progress is None else False


def check_pooling(pooling: str) -> None:
  if pooling not in POOLINGS:
    raise InputError(f"unknown pooling {pooling!r}; choose one of {list(POOLINGS)}")


def featurize(tokenizer, texts, max_length: int) -> dict[str, np.ndarray]:
  """[CLS] text [SEP] rows, cut to and padded to max_length (int32 [N, max_length])."""
  rows = []
  for ids in tokenizer.encode_batch(list(texts)):
    ids, types, _ = features.join_segments(tokenizer, ids, None, max_length)
    rows.append({"input_ids": ids, "token_type_ids": types})
  return features.to_arrays(rows, max_length, tokenizer.pad_id)


def encode(model: nn.Module, params, tokenizer, texts, pooling: str = "cls",
           max_length: int = 128, batch_size: int = 64,
           progress: bool | None = None) -> np.ndarray:
  """L2-normalised embeddings [len(texts), hidden] (float32) of `texts` with the
  encoder of `model` (anything from `bert_jax.from_pretrained`).

  pooling: "cls" (the final hidden state at [CLS]) or "mean" (over the text's
  tokens, [CLS] and [SEP] included, padding not). batch_size: rows per forward pass,
  rounded up to a multiple of the device count and capped at the texts' count.
  progress: a tqdm bar (None: on a terminal, when there is more than one batch).
  """
  check_pooling(pooling)
  texts = list(texts)
  if not texts:
    raise InputError("no texts to encode")
  if not 3 <= max_length <= model.cfg.max_position_embeddings:
    raise InputError(f"max_length={max_length} must be in [3, "
                     f"{model.cfg.max_position_embeddings}] (the model's positions; "
                     f"[CLS] and [SEP] take two)")
  if batch_size < 1:
    raise InputError(f"batch_size={batch_size} must be at least 1")
  rows, replicated = data_parallel()
  devices = rows.mesh.size
  batch_size = -(-min(batch_size, len(texts)) // devices) * devices
  arrays = featurize(tokenizer, texts, max_length)
  forward = _forward(model, pooling)
  params = jax.device_put(params, replicated)
  num_batches = -(-len(texts) // batch_size)
  batches = features.batches(arrays, batch_size, None, jax.process_index(),
                             jax.process_count())
  bar = tqdm.tqdm(batches, total=num_batches, desc="embedding", unit="batch",
                  disable=_bar_disabled(progress, num_batches))
  out = []
  # Traced under the mesh and rules, so the model's activation constraints apply.
  with jax.set_mesh(rows.mesh), nn.logical_axis_rules(_RULES):
    for batch in bar:
      del batch["weight"]  # padding rows are cut off below instead
      out.append(np.asarray(forward(params, sharding.to_global(batch, rows))))
  return np.concatenate(out)[:len(texts)]
