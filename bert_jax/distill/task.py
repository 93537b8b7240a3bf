"""Task distillation: fine-tuning a student encoder on a classification or tagging
file against a fine-tuned teacher's logits, inside the fine-tuning loop (its
metrics, best-epoch checkpoint and predict).

Loss = hard_weight * the task's cross-entropy + kl_weight * T^2 KL(teacher ||
student) over the same rows (classification) or labelled tokens (tagging).
"""

from typing import NamedTuple

from bert_jax.distill import losses


class Teacher(NamedTuple):
  model: object  # the teacher's task model, in distill.teacher_dtype
  params: dict  # as restored from its best epoch
  labels: list  # its label list, which the student takes


def loss(params, batch, rng, *, frozen, logits, model, teacher, task_loss,
         task_weights, weights):
  """The runtime's loss_fn; `frozen`: the teacher's params; `logits(model, params,
  batch, rng)`: fine-tuning's forward pass; `task_weights(batch)`: the weight of
  each row (or token) the task's loss averages over."""
  student_logits = logits(model, params, batch, rng)
  teacher_logits = logits(teacher, frozen, batch, None)
  hard, metrics = task_loss(student_logits, batch)
  w = task_weights(batch)
  kl = losses.soft_kl(student_logits, teacher_logits, weights.temperature, w,
                      w.sum().clip(min=1.0))
  total = weights.hard_weight * hard + weights.kl_weight * kl
  return total, {**metrics, "hard_loss": hard, "kl_loss": kl, "loss": total}
