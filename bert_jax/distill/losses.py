"""Distillation losses: pure functions of student and teacher outputs.

Every loss is a weighted sum over positions divided by a given total, like
pretraining's, so gradient accumulation's microbatch values add up to the batch's.
"""

import jax
import jax.numpy as jnp


def soft_kl(student_logits, teacher_logits, temperature: float, weights, total):
  """T^2 * KL(softmax(teacher / T) || softmax(student / T)) per position (last axis
  = classes), weighted and summed, divided by `total`. The T^2 keeps the gradient's
  scale independent of T (Hinton et al. 2015), so the weight beside the hard loss
  means the same at any temperature."""
  t = jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / temperature)
  s = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature)
  kl = (jnp.exp(t) * (t - s)).sum(-1)
  return temperature ** 2 * (kl * weights).sum() / total


def hidden_mse(student_states, teacher_states, token_weights, total):
  """Mean over the layer pairs of the squared error of hidden states [B, S, H],
  averaged over H, summed over the weighted tokens, divided by `total` (TinyBERT's
  hidden-state loss; the student's states already projected to the teacher's width)."""
  per_layer = [
      (jnp.square(s.astype(jnp.float32) - t.astype(jnp.float32)).mean(-1)
       * token_weights).sum() / total
      for s, t in zip(student_states, teacher_states)]
  return sum(per_layer) / len(per_layer)


def attention_mse(student_maps, teacher_maps, token_weights, total):
  """Mean over the layer pairs of the squared error of attention probabilities
  [B, heads, S, S]: summed over keys, averaged over heads, summed over the weighted
  query tokens, divided by `total` (TinyBERT's attention loss, on probabilities,
  which stay finite where padding masks the scores)."""
  per_layer = [
      (jnp.square(s.astype(jnp.float32) - t.astype(jnp.float32)).sum(-1).mean(1)
       * token_weights).sum() / total
      for s, t in zip(student_maps, teacher_maps)]
  return sum(per_layer) / len(per_layer)


def layer_map(student_layers: int, teacher_layers: int) -> list[int]:
  """The teacher layer whose output student layer i learns: TinyBERT's uniform
  mapping, the last student layer to the last teacher layer (2 of 4: [1, 3])."""
  if teacher_layers % student_layers:
    raise ValueError(f"a student of {student_layers} layers does not map evenly onto "
                     f"a teacher of {teacher_layers}")
  step = teacher_layers // student_layers
  return [(i + 1) * step - 1 for i in range(student_layers)]


def init_layers(student_layers: int, teacher_layers: int) -> list[int]:
  """The teacher layer student layer i starts from: every other one from the first
  (DistilBERT: 2 of 4 -> [0, 2]; 6 of 12 -> [0, 2, ..., 10])."""
  if teacher_layers % student_layers:
    raise ValueError(f"a student of {student_layers} layers does not map evenly onto "
                     f"a teacher of {teacher_layers}")
  step = teacher_layers // student_layers
  return [i * step for i in range(student_layers)]
