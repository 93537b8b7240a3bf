"""Stop requests at step boundaries: preemption notices, SIGTERM and Ctrl-C.

A TPU VM is preempted or sent to maintenance with a SIGTERM and some seconds of
grace; SLURM sends SIGTERM before SIGKILL. The loop asks `StopRequest` once per step;
when it says stop, the loop saves a checkpoint at that step, waits for it, and exits
with status 0 so a relaunch resumes exactly there.

With several processes every one must stop at the same step, or the save (a
collective) hangs. jax.distributed's preemption sync manager handles that: it catches
SIGTERM on any process and `reached_preemption_sync_point` turns true on all of them
at the same step. A single process handles the signals itself.
"""

import logging
import signal
import threading

import jax
from jax.experimental import multihost_utils

log = logging.getLogger(__name__)


class StopRequest:
  """`stop(step)` -> True once a stop was asked for; call it at every step."""

  def __init__(self):
    self.signal = None
    # jax.distributed's sync manager installs its own SIGTERM handler; leave it be.
    self._multiprocess = jax.process_count() > 1
    self._previous = {}
    if self._multiprocess or threading.current_thread() is not threading.main_thread():
      return  # signal handlers can only be installed from the main thread
    for sig in (signal.SIGTERM, signal.SIGINT):
      self._previous[sig] = signal.signal(sig, self._handle)

  def _handle(self, signum, _frame) -> None:
    if self.signal is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt  # a second Ctrl-C: stop now, without the save
    self.signal = signal.Signals(signum).name
    log.warning("%s received: saving at the end of this step, then exiting",
                self.signal)

  def __call__(self, step: int) -> bool:
    if self._multiprocess:
      if multihost_utils.reached_preemption_sync_point(step):
        self.signal = self.signal or "preemption notice"
        return True
      return False
    return self.signal is not None

  def close(self) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous = {}
