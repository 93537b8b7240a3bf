"""Pretraining's part of the train step: the MLM + NSP loss, the batch it reads, and
`setup(config)`, the jitted step of the shared runtime (bert_jax.runtime.setup).

Imports no TensorFlow: `bert-jax benchmark --what step` and `plan` run from here on
machines without it."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from bert_jax.configs import validate
from bert_jax.model import bert as model_lib
from bert_jax.runtime import optimizer, setup as setup_lib, step as step_lib

BATCH_KEYS = ("input_ids", "token_type_ids", "attention_mask", "masked_positions",
              "masked_ids", "masked_weights", "next_sentence_label")


def _nsp_weights(batch):
  labels = batch["next_sentence_label"]
  return batch.get("next_sentence_weight", jnp.ones(labels.shape, jnp.float32))


def totals(batch) -> dict:
  """What the losses' means divide by: the batch's masked positions and weighted
  NSP/SOP labels (at least 1). Gradient accumulation computes them once for the
  whole batch and hands them to every microbatch's `losses`."""
  return {"masked": jnp.maximum(batch["masked_weights"].sum(), 1.0),
          "nsp": jnp.maximum(_nsp_weights(batch).sum(), 1.0)}


def losses(outputs, batch, totals_: dict | None = None):
  """Weighted MLM cross-entropy over masked positions and NSP cross-entropy, each
  a sum over the batch divided by `totals_` (default: totals(batch)), as are the
  accuracies."""
  totals_ = totals(batch) if totals_ is None else totals_
  weights = batch["masked_weights"]
  mlm_xent = optax.softmax_cross_entropy_with_integer_labels(
      outputs["mlm_logits"], batch["masked_ids"])
  num_masked = totals_["masked"]
  mlm_loss = (mlm_xent * weights).sum() / num_masked
  # Correct where the label's logit is the largest: argmax over the vocabulary is a
  # slow two-operand reduce on CPU, and the max is the one the softmax takes anyway.
  logits = outputs["mlm_logits"]
  label_logit = jnp.take_along_axis(logits, batch["masked_ids"][..., None], -1)[..., 0]
  mlm_correct = (label_logit >= logits.max(-1)) * weights
  # One NSP/SOP label per example ([B], or [B, K] for packed rows), weighted: 0 for
  # a row's missing examples and for data without a sentence task.
  labels = batch["next_sentence_label"]
  nsp_weights = _nsp_weights(batch)
  num_nsp = totals_["nsp"]
  nsp_loss = (optax.softmax_cross_entropy_with_integer_labels(
      outputs["nsp_logits"], labels) * nsp_weights).sum() / num_nsp
  nsp_correct = (outputs["nsp_logits"].argmax(-1) == labels) * nsp_weights
  return mlm_loss + nsp_loss, {
      "loss": mlm_loss + nsp_loss,
      "mlm_loss": mlm_loss,
      "nsp_loss": nsp_loss,
      "mlm_accuracy": mlm_correct.sum() / num_masked,
      "nsp_accuracy": nsp_correct.sum() / num_nsp,
  }


def apply_model(model: nn.Module, params, batch, rng=None, **apply_kwargs):
  """Forward pass on a batch; dropout is on when `rng` is given. `apply_kwargs` go
  to model.apply (distillation's `mutable=` collections: then (outputs, them))."""
  return model.apply(
      {"params": params}, batch["input_ids"], token_type_ids=batch["token_type_ids"],
      attention_mask=batch["attention_mask"], masked_positions=batch["masked_positions"],
      # Packed rows (see packing.py): per-example positions, attention and [CLS].
      position_ids=batch.get("position_ids"), example_ids=batch.get("example_ids"),
      cls_positions=batch.get("cls_positions"),
      deterministic=rng is None, rngs=None if rng is None else {"dropout": rng},
      **apply_kwargs)


def abstract_batch(global_batch: int, seq_len: int, predictions: int,
                   batch_sharding=None, max_per_row: int = 1,
                   timed: bool = False) -> dict:
  """ShapeDtypeStructs of a global batch as the input pipeline makes it (rows of up
  to `max_per_row` packed examples); `timed`: with the training seconds of a run
  with a time budget (runtime.step.TRAIN_SECONDS)."""
  spec = lambda shape, dtype=jnp.int32: jax.ShapeDtypeStruct(
      shape, dtype, sharding=batch_sharding)
  rows, preds = (global_batch, seq_len), (global_batch, predictions)
  examples = (global_batch, max_per_row)
  batch = {"input_ids": spec(rows), "token_type_ids": spec(rows),
           "attention_mask": spec(rows), "position_ids": spec(rows),
           "masked_positions": spec(preds), "masked_ids": spec(preds),
           "masked_weights": spec(preds, jnp.float32), "cls_positions": spec(examples),
           "next_sentence_label": spec(examples),
           "next_sentence_weight": spec(examples, jnp.float32)}
  if max_per_row > 1:
    batch["example_ids"] = spec(rows)
  if timed:
    batch[step_lib.TRAIN_SECONDS] = spec((global_batch,), jnp.float32)
  return batch


def loss(params, batch, rng, totals=None, *, model: nn.Module):
  """The runtime's loss_fn for pretraining (its totals_fn: `totals`)."""
  return losses(apply_model(model, params, batch, rng), batch, totals)


def setup(config) -> setup_lib.Setup:
  """Mesh, model, LAMB, abstract state, shardings and the jitted pretraining step."""
  validate.check(config)
  model = model_lib.BertForPreTraining(model_lib.BertConfig.from_dict(config.model))
  tx, lr_fn = optimizer.make(config.optimizer, config.train.num_steps,
                             config.train.time_budget)
  d = config.data
  return setup_lib.build(
      config.mesh, model, tx, lr_fn, functools.partial(loss, model=model),
      seq_len=d.max_seq_length,
      batch_sizes={"train.global_batch_size": config.train.global_batch_size},
      microbatches=config.train.microbatches, totals_fn=totals,
      batch_spec=lambda sharding: abstract_batch(
          config.train.global_batch_size, d.max_seq_length, d.max_predictions_per_seq,
          sharding, d.max_examples_per_row, timed=config.train.time_budget > 0))
