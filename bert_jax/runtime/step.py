"""The one train-step skeleton: loss -> gradients (accumulated over microbatches) ->
global norm -> non-finite skip -> update. Pretraining, fine-tuning and distillation
bring only their loss."""

import functools
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from bert_jax.model import dropout
from bert_jax.runtime import optimizer
from bert_jax.runtime.state import TrainState

# loss_fn(params, batch, rng[, totals]) -> (loss, metrics); dropout is on when rng
# is not None. With a TotalsFn, the step passes `totals` = totals_fn(global batch)
# (the counts its means divide by, e.g. masked positions), and the loss and every
# metric must be sums over the batch's rows divided by those totals: then the values
# of the microbatches add up to the whole batch's. A step built with frozen params
# (distillation's teacher) passes them as `frozen=`: an input of the step, sharded
# like any param, never differentiated and never updated.
LossFn = Callable
TotalsFn = Callable
# Batch entry [B] of a run with a time budget: every process fills its rows with its
# training seconds so far; row 0's (process 0's clock) drives the schedule, the same
# on every process, with no host synchronisation.
TRAIN_SECONDS = "train_seconds"


def split_microbatches(tree, k: int):
  """[B, ...] leaves -> [k, B/k, ...]: microbatch j holds rows j, j+k, j+2k, ... so
  that, with the batch split over devices in blocks of rows, every device keeps
  its own rows in every microbatch (no data moves)."""
  def split(x):
    x = x.reshape(-1, k, *x.shape[1:]).swapaxes(0, 1)
    # Said, not left to propagation: the rows of a microbatch stay split like the
    # batch's (a no-op without logical-axis rules).
    return nn.with_logical_constraint(x, (None, "batch") + (None,) * (x.ndim - 2))
  return jax.tree.map(split, tree)


def gradients(params, batch, rng, loss_fn: LossFn, totals_fn: TotalsFn | None,
               microbatches: int, frozen=None):
  """((loss, metrics), grads) of the global batch, the microbatches' summed in f32
  by a lax.scan that holds one microbatch's activations at a time."""
  kwargs = {} if totals_fn is None else {"totals": totals_fn(batch)}
  if frozen is not None:
    kwargs["frozen"] = jax.lax.stop_gradient(frozen)
  grad_fn = jax.value_and_grad(lambda p, b: loss_fn(p, b, rng, **kwargs), has_aux=True)
  if microbatches == 1:
    return grad_fn(params, batch)
  rows = jax.lax.iota(jnp.uint32, jax.tree.leaves(batch)[0].shape[0])

  def add(acc, xs):
    micro, micro_rows = xs
    with dropout.global_rows(micro_rows):  # the masks of these rows, as unsplit
      out = grad_fn(params, micro)
    return jax.tree.map(lambda a, o: a + o.astype(a.dtype), acc, out), None

  zeros = jax.tree.map(
      lambda x: jnp.zeros(x.shape, jnp.promote_types(x.dtype, jnp.float32)),
      jax.eval_shape(grad_fn, params, jax.tree.map(lambda x: x[0], split_microbatches(
          batch, microbatches))))
  out, _ = jax.lax.scan(add, zeros, split_microbatches((batch, rows), microbatches))
  return out


def train_step(state: TrainState, batch, rng, frozen=None, *, loss_fn: LossFn,
               tx: optax.GradientTransformation, lr_fn: optax.Schedule,
               microbatches: int = 1, totals_fn: TotalsFn | None = None):
  """One update from the gradient of the whole batch, summed over `microbatches`
  (one clip and one optimizer update either way). A non-finite loss or gradient
  leaves params and optimizer state as they were (the step counter still
  advances) and is reported as `skipped`."""
  if microbatches > 1 and totals_fn is None:
    raise ValueError("gradient accumulation needs the loss's totals_fn")
  rng = jax.random.fold_in(rng, state.step)
  clock = {} if TRAIN_SECONDS not in batch else {TRAIN_SECONDS: batch[TRAIN_SECONDS][0]}
  inputs = {k: v for k, v in batch.items() if k != TRAIN_SECONDS}
  (loss, metrics), grads = gradients(state.params, inputs, rng, loss_fn, totals_fn,
                                      microbatches, frozen)
  grad_norm = optax.tree.norm(grads)
  ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  params, opt_state = optimizer.update_if(ok, tx, grads, state.opt_state, state.params,
                                          grad_norm, **clock)
  new_state = TrainState(step=state.step + 1, params=params, opt_state=opt_state)
  metrics = {**metrics, "grad_norm": grad_norm, "skipped": (~ok).astype(jnp.int32)}
  metrics["learning_rate"] = lr_fn(state.step, *clock.values())
  metrics.update(clock)
  return new_state, metrics


def jit_train_step(loss_fn: LossFn, tx, lr_fn, state_shardings, batch_sharding,
                   replicated, microbatches: int = 1, totals_fn: TotalsFn | None = None,
                   frozen_shardings=None):
  """train_step jitted with explicit shardings and the state donated; with
  `frozen_shardings` it takes the frozen params as a fourth argument."""
  frozen = () if frozen_shardings is None else (frozen_shardings,)
  return jax.jit(
      functools.partial(train_step, loss_fn=loss_fn, tx=tx, lr_fn=lr_fn,
                        microbatches=microbatches, totals_fn=totals_fn),
      in_shardings=(state_shardings, batch_sharding, replicated, *frozen),
      out_shardings=(state_shardings, replicated),
      donate_argnums=0)
