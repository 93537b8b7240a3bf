"""Stops training after too many non-finite steps in a row.

The train step already skips an update whose loss or gradient is not finite (params
and optimizer state stay as they were) and reports `skipped`. One bad batch is
noise; a long run of them means the model has diverged, and going on only burns
accelerator time. The run of skipped steps is counted on the device and read one
step late, so the host never waits for the step it has just dispatched.
"""

import jax
import jax.numpy as jnp
import numpy as np

from bert_jax.errors import TrainingStopped


@jax.jit
def _update(streak, skipped):
  return jnp.where(skipped > 0, streak + 1, 0)


class Streak:
  """`add(step, skipped)` after every step; raises TrainingStopped once `limit`
  steps in a row were skipped (0: never)."""

  def __init__(self, limit: int):
    self.limit = limit
    self._streak, self._step = None, 0

  def add(self, step: int, skipped: jax.Array) -> None:
    if not self.limit:
      return
    previous, previous_step = self._streak, self._step
    self._streak = skipped if previous is None else _update(previous, skipped)
    self._streak.copy_to_host_async()
    self._step = step
    if previous is not None:
      self._check(previous, previous_step)

  def finish(self) -> None:
    """Checks the last step too."""
    if self.limit and self._streak is not None:
      self._check(self._streak, self._step)

  def _check(self, streak, step: int) -> None:
    # The scalar is replicated: this process's copy is the value.
    count = int(np.asarray(streak.addressable_data(0)))
    if count >= self.limit:
      raise TrainingStopped(
          f"{count} non-finite steps in a row (steps {step - count + 1}-{step}): the "
          f"loss or gradients are NaN/inf. Training stopped; the checkpoints written "
          f"before are intact (skipped steps never changed params). Lower "
          f"optimizer.learning_rate or raise train.max_nonfinite_steps.")
