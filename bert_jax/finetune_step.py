"""Pure fine-tuning steps: a task's loss on the head's logits, the AdamW or LAMB
update, and the forward pass for evaluation and prediction."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from bert_jax import optimizer
from bert_jax.train_step import TrainState

# Batch entries the model reads; the rest are the task's targets and row weights.
MODEL_KEYS = ("input_ids", "token_type_ids", "attention_mask")


def weighted_xent(logits, labels, weights):
  """Mean softmax cross-entropy over entries of weight > 0, and its accuracy.
  `labels` < 0 (ignored positions) must carry weight 0."""
  xent = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(labels, 0))
  total = jnp.maximum(weights.sum(), 1.0)
  correct = (logits.argmax(-1) == labels) * weights
  loss = (xent * weights).sum() / total
  return loss, {"loss": loss, "accuracy": correct.sum() / total}


def make_optimizer(opt_config, num_steps: int):
  """AdamW or LAMB (opt_config.name) with linear warm-up over warmup_fraction of the
  steps and linear decay to 0; LayerNorm and biases excluded from weight decay (and
  from LAMB's trust ratio). Returns (tx, learning-rate schedule)."""
  if opt_config.name not in ("adamw", "lamb"):
    raise ValueError(f"optimizer.name={opt_config.name!r}; choose adamw or lamb")
  lr = optimizer.schedule(opt_config.learning_rate,
                          int(opt_config.warmup_fraction * num_steps), num_steps)
  trust = ([optax.masked(optimizer.layerwise_trust_ratio(), optimizer.decay_mask)]
           if opt_config.name == "lamb" else [])
  tx = optax.chain(
      optimizer.clip_by_global_norm(opt_config.clip_norm),
      optax.scale_by_adam(b1=opt_config.b1, b2=opt_config.b2, eps=opt_config.eps),
      optax.add_decayed_weights(opt_config.weight_decay, mask=optimizer.decay_mask),
      *trust,
      optax.scale_by_learning_rate(lr))
  return tx, lr


def logits(model: nn.Module, params, batch, rng=None):
  """The head's logits; dropout is on when `rng` is given."""
  return model.apply({"params": params}, *(batch[k] for k in MODEL_KEYS),
                     deterministic=rng is None,
                     rngs=None if rng is None else {"dropout": rng})


def train_step(state: TrainState, batch, rng, *, model, tx, loss_fn, lr_fn):
  """One update with `loss_fn(logits, batch) -> (loss, metrics)`. A non-finite loss
  or gradient leaves params and optimizer state as they were (`skipped` = 1)."""
  rng = jax.random.fold_in(rng, state.step)
  (loss, metrics), grads = jax.value_and_grad(
      lambda p: loss_fn(logits(model, p, batch, rng), batch), has_aux=True)(state.params)
  grad_norm = optax.tree.norm(grads)
  ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  params, opt_state = optimizer.update_if(ok, tx, grads, state.opt_state, state.params,
                                          grad_norm)
  new = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
  return new, {**metrics, "grad_norm": grad_norm, "learning_rate": lr_fn(state.step),
               "skipped": (~ok).astype(jnp.int32)}


def jit_steps(model, tx, loss_fn, lr_fn, state_shardings, batch_sharding, replicated):
  """(train_step, eval_step) jitted with explicit shardings; the state is donated.
  eval_step(params, batch) -> logits, sharded like the batch."""
  train = jax.jit(
      functools.partial(train_step, model=model, tx=tx, loss_fn=loss_fn, lr_fn=lr_fn),
      in_shardings=(state_shardings, batch_sharding, replicated),
      out_shardings=(state_shardings, replicated), donate_argnums=0)
  evaluate = jax.jit(functools.partial(logits, model),
                     in_shardings=(state_shardings.params, batch_sharding),
                     out_shardings=batch_sharding)
  return train, evaluate
