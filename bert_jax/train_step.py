"""Pure pretraining step: MLM + NSP loss, gradients, LAMB update, metrics."""

import functools
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from bert_jax import model as model_lib, sharding

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
  mlm_correct = (outputs["mlm_logits"].argmax(-1) == batch["masked_ids"]) * weights
  nsp_loss = optax.softmax_cross_entropy_with_integer_labels(
      outputs["nsp_logits"], batch["next_sentence_label"]).mean()
  nsp_correct = outputs["nsp_logits"].argmax(-1) == batch["next_sentence_label"]
  return mlm_loss + nsp_loss, {
      "loss": mlm_loss + nsp_loss,
      "mlm_loss": mlm_loss,
      "nsp_loss": nsp_loss,
      "mlm_accuracy": mlm_correct.sum() / num_masked,
      "nsp_accuracy": nsp_correct.mean(),
  }


def apply_model(model: nn.Module, params, batch, rng=None):
  """Forward pass on a batch; dropout is on when `rng` is given."""
  return model.apply(
      {"params": params}, batch["input_ids"], token_type_ids=batch["token_type_ids"],
      attention_mask=batch["attention_mask"], masked_positions=batch["masked_positions"],
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
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)
  new_state = TrainState(step=state.step + 1, params=keep(params, state.params),
                         opt_state=keep(opt_state, state.opt_state))
  metrics = {**metrics, "grad_norm": grad_norm, "skipped": (~ok).astype(jnp.int32)}
  if lr_fn is not None:
    metrics["learning_rate"] = lr_fn(state.step)
  return new_state, metrics


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
