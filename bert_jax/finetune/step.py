"""Fine-tuning's part of the train step: the task model's logits and the weighted
cross-entropy the tasks' losses are made of. The step itself is the runtime's
(bert_jax.runtime.step), as in pretraining."""

import flax.linen as nn
import jax.numpy as jnp
import optax

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


def logits(model: nn.Module, params, batch, rng=None):
  """The head's logits; dropout is on when `rng` is given."""
  return model.apply({"params": params}, *(batch[k] for k in MODEL_KEYS),
                     deterministic=rng is None,
                     rngs=None if rng is None else {"dropout": rng})


def loss(params, batch, rng, *, model: nn.Module, task_loss):
  """The runtime's loss_fn: `task_loss(logits, batch) -> (loss, metrics)`."""
  return task_loss(logits(model, params, batch, rng), batch)
