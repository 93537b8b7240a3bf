"""The training clock of a run with a time budget (train.time_budget).

Training seconds are the wall time of the step loop, compilation included, less the
`paused` blocks (evaluation, checkpoint waits); data preparation and set-up come
before the clock starts. Each step's batch carries the clock (runtime.step's
TRAIN_SECONDS: this process's rows filled with its reading), and the step takes row
0's, process 0's, for the schedule and returns it as a replicated metric. Whether
the budget is spent is read from that metric one step late: the host never waits
for the step it just dispatched, and every process stops at the same step.
"""

import contextlib
import time

import numpy as np

from bert_jax.runtime import step as step_lib


class Budget:
  """`budget` seconds (0: none) of training, `seconds` of them spent before this run
  (restored from the checkpoint); `local_rows` rows per process in a batch."""

  def __init__(self, budget: float, seconds: float, local_rows: int):
    self.budget, self._rows = budget, local_rows
    self._base, self._start, self._paused = seconds, time.perf_counter(), 0.0
    self._previous = None

  def now(self) -> float:
    """This process's training seconds."""
    return self._base + time.perf_counter() - self._start - self._paused

  @contextlib.contextmanager
  def paused(self):
    start = time.perf_counter()
    try:
      yield
    finally:
      self._paused += time.perf_counter() - start

  def stamp(self, batch: dict, setup) -> dict:
    """The batch with the clock's reading (no change without a budget)."""
    if not self.budget:
      return batch
    clock = np.full((self._rows,), self.now(), np.float32)
    return {**batch, **setup.global_batch({step_lib.TRAIN_SECONDS: clock})}

  def spent(self, step_metrics: dict) -> bool:
    """True at the step after one that started with the budget spent."""
    if not self.budget:
      return False
    previous, self._previous = self._previous, step_metrics[step_lib.TRAIN_SECONDS]
    self._previous.copy_to_host_async()
    return previous is not None and _value(previous) >= self.budget

  def seconds(self, step_metrics: dict) -> float:
    """Training seconds to checkpoint: with a budget, process 0's (what the schedule
    used at this step; read at save steps only), else this process's clock."""
    if self.budget:
      return _value(step_metrics[step_lib.TRAIN_SECONDS])
    return self.now()


def _value(x) -> float:
  # Replicated: this process's copy is the value (no cross-process read).
  return float(np.asarray(x.addressable_data(0)))
