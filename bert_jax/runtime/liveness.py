"""Naming the process that stopped: a check-in on the distributed runtime's
key-value store before the train step's collectives.

A process that hangs (a stuck read, a deadlocked thread, a stopped VM) leaves the
others waiting inside a device collective: forever on TPUs and GPUs, or until gloo's
30 s deadline on CPU with an error that names no one. So every few steps each
process checks in (key `.../STEP/INDEX`) before it dispatches the step; process 0
waits for all of them, with a timeout, and posts a verdict that the others wait for.
A missing check-in ends every process with an error naming the missing processes,
not a silent hang. Each process also posts the last step it reached, so a
collective that fails first (gloo) is reported with who was behind.

Cost: one key write and one read per process per check (O(processes) on the
coordinator), every train.log_every steps.
"""

import logging
import time

import jax

from bert_jax.errors import TrainingStopped

log = logging.getLogger(__name__)

_PREFIX = "bert_jax/liveness"


def _client():
  from jax._src import distributed  # pylint: disable=g-import-not-at-top
  return distributed.global_state.client


def _timed_out(e: Exception) -> bool:
  """A key-value wait that ran out of time (the runtime's DEADLINE_EXCEEDED)."""
  return "DEADLINE_EXCEEDED" in str(e) or "timed out" in str(e).lower()


class Liveness:
  """Check-ins of this process (`index` of `count`) with `timeout_s` to wait."""

  def __init__(self, timeout_s: float, client=None, index: int | None = None,
               count: int | None = None):
    self.count = jax.process_count() if count is None else count
    self.index = jax.process_index() if index is None else index
    self.timeout_ms = int(timeout_s * 1000)
    self._client = client if client is not None or self.count == 1 else _client()
    self._last = None

  def check(self, step: int) -> None:
    """Returns once every process has reached `step`; raises TrainingStopped naming
    the ones that did not within the timeout."""
    if self.count == 1:
      return
    c = self._client
    c.key_value_set(f"{_PREFIX}/progress/{self.index}", str(step), allow_overwrite=True)
    c.key_value_set(f"{_PREFIX}/{step}/{self.index}", "here")
    verdict_key = f"{_PREFIX}/{step}/verdict"
    if self.index == 0:
      verdict = self._collect(step)
      c.key_value_set(verdict_key, verdict)
      if self._last is not None:  # everyone is past the previous check
        c.key_value_delete(f"{_PREFIX}/{self._last}/")
    else:
      try:  # process 0 waits timeout_ms for the rest; then posts the verdict
        verdict = c.blocking_key_value_get(verdict_key, 2 * self.timeout_ms + 10_000)
      except Exception as e:  # pylint: disable=broad-except
        if not _timed_out(e):
          raise
        verdict = self._missing(step, [0])
    self._last = step
    if verdict != "ok":
      raise TrainingStopped(verdict)

  def _collect(self, step: int) -> str:
    deadline = time.monotonic() + self.timeout_ms / 1000
    for other in range(1, self.count):
      left = max(int((deadline - time.monotonic()) * 1000), 1)
      try:
        self._client.blocking_key_value_get(f"{_PREFIX}/{step}/{other}", left)
      except Exception as e:  # pylint: disable=broad-except
        if not _timed_out(e):
          raise
        here = {k.rsplit("/", 1)[-1] for k, _ in
                self._client.key_value_dir_get(f"{_PREFIX}/{step}/")}
        return self._missing(step, [p for p in range(self.count) if str(p) not in here])
    return "ok"

  def _missing(self, step: int, missing: list[int]) -> str:
    names = ", ".join(map(str, missing))
    return (f"process{'es' if len(missing) > 1 else ''} {names} of {self.count} did not "
            f"reach step {step} within {self.timeout_ms / 1000:.0f} s "
            f"(train.liveness_timeout): hung or dead; {self.behind()}")

  def behind(self) -> str:
    """The last step each process checked in at (for an error that names who lagged)."""
    if self.count == 1:
      return ""
    try:
      reached = dict(self._client.key_value_dir_get(f"{_PREFIX}/progress/"))
    except Exception:  # pylint: disable=broad-except
      return "last steps unknown"
    steps = {int(k.rsplit("/", 1)[-1]): v for k, v in reached.items()}
    return "last step reached: " + ", ".join(
        f"process {p} {steps.get(p, 'none')}" for p in range(self.count))
