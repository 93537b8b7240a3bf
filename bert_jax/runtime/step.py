"""The one train-step skeleton: loss -> gradients -> global norm -> non-finite skip ->
update. Pretraining, fine-tuning (and later distillation) bring only their loss."""

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import optax

from bert_jax.runtime import optimizer
from bert_jax.runtime.state import TrainState

# loss_fn(params, batch, rng) -> (loss, metrics); dropout is on when rng is not None.
LossFn = Callable
# Batch entry [B] of a run with a time budget: every process fills its rows with its
# training seconds so far; row 0's (process 0's clock) drives the schedule, the same
# on every process, with no host synchronisation.
TRAIN_SECONDS = "train_seconds"


def train_step(state: TrainState, batch, rng, *, loss_fn: LossFn,
               tx: optax.GradientTransformation, lr_fn: optax.Schedule):
  """One update. A non-finite loss or gradient leaves params and optimizer state as
  they were (the step counter still advances) and is reported as `skipped`."""
  rng = jax.random.fold_in(rng, state.step)
  (loss, metrics), grads = jax.value_and_grad(
      lambda params: loss_fn(params, batch, rng), has_aux=True)(state.params)
  grad_norm = optax.tree.norm(grads)
  ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  clock = {} if TRAIN_SECONDS not in batch else {TRAIN_SECONDS: batch[TRAIN_SECONDS][0]}
  params, opt_state = optimizer.update_if(ok, tx, grads, state.opt_state, state.params,
                                          grad_norm, **clock)
  new_state = TrainState(step=state.step + 1, params=params, opt_state=opt_state)
  metrics = {**metrics, "grad_norm": grad_norm, "skipped": (~ok).astype(jnp.int32)}
  metrics["learning_rate"] = lr_fn(state.step, *clock.values())
  metrics.update(clock)
  return new_state, metrics


def jit_train_step(loss_fn: LossFn, tx, lr_fn, state_shardings, batch_sharding,
                   replicated):
  """train_step jitted with explicit shardings and the state donated."""
  return jax.jit(
      functools.partial(train_step, loss_fn=loss_fn, tx=tx, lr_fn=lr_fn),
      in_shardings=(state_shardings, batch_sharding, replicated),
      out_shardings=(state_shardings, replicated),
      donate_argnums=0)
