"""jax.profiler traces of chosen steps, for TensorBoard's profile tab."""

import os

import jax

from bert_jax.errors import InputError


class Trace:
  """A jax.profiler trace of steps FIRST..LAST (`steps` = (FIRST, LAST); () = none),
  written under WORKDIR/tensorboard/plugins/profile for TensorBoard's profile tab.
  A run that ends inside the range stops the trace at its last step."""

  def __init__(self, workdir: str, steps=(), last_step: int | None = None):
    if steps and (len(steps) != 2 or not 0 < steps[0] <= steps[1]):
      raise InputError(f"train.profile_steps={tuple(steps)} must be (FIRST, LAST) "
                       "with 0 < FIRST <= LAST")
    self._first, self._last = steps or (0, 0)
    if last_step is not None:
      self._last = min(self._last, last_step)
    self._dir = os.path.join(workdir, "tensorboard")
    self._active = False

  def before(self, step: int) -> None:
    if step == self._first and self._first <= self._last:
      jax.profiler.start_trace(self._dir)
      self._active = True

  def after(self, step: int, outputs) -> None:
    if self._active and step == self._last:
      jax.block_until_ready(outputs)  # the traced steps' device work, complete
      jax.profiler.stop_trace()
      self._active = False
