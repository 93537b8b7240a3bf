"""Pure pretraining step: MLM + NSP loss, gradients, LAMB update, metrics."""

import functools
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from bert_jax import model as model_lib, optimizer, sharding

BATCH_KEYS = ("input_ids", "token_type_ids", "attention_mask", "masked_positions",
              "masked_ids", "masked_weights", "next_sentence_label")


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any


def losses(outputs, batch):
  """Weighted MLM cross-entropy over masked positions and NSP cross-entropy."""
  weights = batch["masked_weights"]
  mlm_xent = optax.softmax_cross_entropy_with_integer_labels(
      outputs["mlm_logits"], batch["masked_ids"])
  num_masked = jnp.maximum(weights.sum(), 1.0)
  mlm_loss = (mlm_xent * weights).sum() / num_masked
  # Correct where the label's logit is the largest: argmax over the vocabulary is a
  # slow two-operand reduce on CPU, and the max is the one the softmax takes anyway.
  logits = outputs["mlm_logits"]
  label_logit = jnp.take_along_axis(logits, batch["masked_ids"][..., None], -1)[..., 0]
  mlm_correct = (label_logit >= logits.max(-1)) * weights
  # One NSP/SOP label per example ([B], or [B, K] for packed rows), weighted: 0 for
  # a row's missing examples and for data without a sentence task.
  labels = batch["next_sentence_label"]
  nsp_weights = batch.get("next_sentence_weight", jnp.ones(labels.shape, jnp.float32))
  num_nsp = jnp.maximum(nsp_weights.sum(), 1.0)
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


def apply_model(model: nn.Module, params, batch, rng=None):
  """Forward pass on a batch; dropout is on when `rng` is given."""
  return model.apply(
      {"params": params}, batch["input_ids"], token_type_ids=batch["token_type_ids"],
      attention_mask=batch["attention_mask"], masked_positions=batch["masked_positions"],
      # Packed rows (see packing.py): per-example positions, attention and [CLS].
      position_ids=batch.get("position_ids"), example_ids=batch.get("example_ids"),
      cls_positions=batch.get("cls_positions"),
      deterministic=rng is None, rngs=None if rng is None else {"dropout": rng})


def train_step(state: TrainState, batch, rng, *, model: nn.Module,
               tx: optax.GradientTransformation, lr_fn=None):
  """One update. A non-finite loss or gradient leaves params and optimizer unchanged
  (the step counter still advances) and is reported as `skipped`."""
  rng = jax.random.fold_in(rng, state.step)

  def loss_fn(params):
    return losses(apply_model(model, params, batch, rng), batch)

  (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  grad_norm = optax.tree.norm(grads)
  ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  params, opt_state = optimizer.update_if(ok, tx, grads, state.opt_state, state.params,
                                          grad_norm)
  new_state = TrainState(step=state.step + 1, params=params, opt_state=opt_state)
  metrics = {**metrics, "grad_norm": grad_norm, "skipped": (~ok).astype(jnp.int32)}
  if lr_fn is not None:
    metrics["learning_rate"] = lr_fn(state.step)
  return new_state, metrics


def abstract_batch(global_batch: int, seq_len: int, predictions: int,
                   batch_sharding=None, max_per_row: int = 1) -> dict:
  """ShapeDtypeStructs of a global batch as the input pipeline makes it (rows of up
  to `max_per_row` packed examples)."""
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
  return batch


def jit_train_step(model, tx, state_shardings, batch_sharding, replicated, lr_fn=None):
  """train_step jitted with explicit shardings and the state donated."""
  return jax.jit(
      functools.partial(train_step, model=model, tx=tx, lr_fn=lr_fn),
      in_shardings=(state_shardings, batch_sharding, replicated),
      out_shardings=(state_shardings, replicated),
      donate_argnums=0)


def init_state(model: nn.Module, tx: optax.GradientTransformation, rng,
               seq_len: int) -> TrainState:
  """Fresh state; jit it with out_shardings so params are born sharded."""
  ids = jnp.zeros((1, seq_len), jnp.int32)
  params = nn.meta.unbox(model.init(rng, ids)["params"])
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=tx.init(params))


def abstract_state(model, tx, mesh, rules, seq_len: int):
  """(abstract TrainState, its shardings) without materialising any parameter.

  Param shardings come from the logical axes of the boxed params; optimizer-state
  leaves shaped like params inherit them, the rest (counts, ...) are replicated.
  """
  boxed = model_lib.abstract_params(model, seq_len, boxed=True)
  param_sh = sharding.logical_shardings(boxed, mesh, rules)
  abstract = jax.eval_shape(
      lambda: init_state(model, tx, jax.random.key(0), seq_len))
  opt_sh = optax.tree_map_params(
      tx, lambda _, s: s, abstract.opt_state, param_sh,
      transform_non_params=lambda _: sharding.replicated(mesh),
      is_leaf=lambda x: isinstance(x, jax.sharding.NamedSharding))
  shardings = TrainState(step=sharding.replicated(mesh), params=param_sh,
                         opt_state=opt_sh)
  return abstract, shardings
