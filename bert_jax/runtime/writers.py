"""Metric writers: console, WORKDIR/metrics.jsonl and TensorBoard events (process 0
only), and the log windows that pretraining and fine-tuning summarise without
stalling their loops.

TensorBoard events are written with tensorboard's own event writer, not
tf.summary: TensorFlow is only the input pipeline, and an accelerator image may
lack it.
"""

import json
import logging
import os
import time

from etils import epath
import jax
import numpy as np
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter

logger = logging.getLogger(__name__)


class Writer:
  """Rows of scalars to metrics.jsonl and TensorBoard."""

  def __init__(self, workdir: str):
    self.enabled = jax.process_index() == 0
    if not self.enabled:
      return
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)
    self._jsonl = epath.Path(workdir, "metrics.jsonl").open("a")
    self._tb = EventFileWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, metrics: dict) -> None:
    if not self.enabled:
      return
    row = {"step": int(step), **{k: float(v) for k, v in metrics.items()}}
    self._jsonl.write(json.dumps(row) + "\n")
    self._jsonl.flush()
    summary = summary_pb2.Summary(value=[
        summary_pb2.Summary.Value(tag=k, simple_value=float(v)) for k, v in metrics.items()])
    self._tb.add_event(event_pb2.Event(wall_time=time.time(), step=int(step),
                                       summary=summary))
    self._tb.flush()

  def close(self) -> None:
    if self.enabled:
      self._jsonl.close()
      self._tb.close()


def summarize(window: list[dict], seconds: float, tokens_per_step: int,
              flops_per_step: float = 0.0, peak_flops: float | None = None) -> dict:
  """Means of the per-step metrics of a log window, skipped-step count, throughput
  and, given the devices' peak FLOP/s, MFU (model FLOPs per second / peak).

  tokens_per_sec counts every position of every row, padding included.
  """
  out = {k: float(np.mean([m[k] for m in window])) for k in window[0]}
  out["skipped"] = float(sum(m["skipped"] for m in window))
  out["steps_per_sec"] = len(window) / seconds
  out["tokens_per_sec"] = out["steps_per_sec"] * tokens_per_step
  if peak_flops:
    out["mfu"] = out["steps_per_sec"] * flops_per_step / peak_flops
  return out


class Logger:
  """Collects per-step metrics (device arrays) and writes a summary per log window.

  The loop never waits for the device: at a log step the window's metrics start
  copying to the host, and they are read and written at the next step, after that
  step has been dispatched. `close` writes the last window and returns its summary.
  """

  def __init__(self, workdir: str, num_steps: int, tokens_per_step: int,
               flops_per_step: float = 0.0, peak_flops: float | None = None,
               time_budget: float = 0.0, hide: tuple[str, ...] = ()):
    """`time_budget` (seconds) makes the console's ETA the budget's rest; `hide`
    keeps metrics that mean nothing for this run (NSP without a sentence task) off
    the console (they are still written)."""
    self._writer = Writer(workdir)
    self._num_steps = num_steps
    self._console = dict(time_budget=time_budget, hide=hide)
    self._throughput = dict(tokens_per_step=tokens_per_step,
                            flops_per_step=flops_per_step, peak_flops=peak_flops)
    self._window, self._closed, self._last = [], None, {}
    self._tick = time.time()

  def add(self, step: int, step_metrics: dict, log: bool) -> None:
    self._write_closed()
    self._window.append(step_metrics)
    if log:
      for leaf in jax.tree_util.tree_leaves(self._window):
        leaf.copy_to_host_async()
      now = time.time()
      self._closed = (step, self._window, now - self._tick)
      self._window, self._tick = [], now

  def write_eval(self, step: int, eval_metrics: dict) -> None:
    """Evaluation results: written (their own jsonl row) and logged now."""
    self._writer.write(step, eval_metrics)
    if jax.process_index() == 0:
      logger.info("step %d %s", step,
                  " ".join(f"{k} {v:.4f}" for k, v in eval_metrics.items()))

  def close(self) -> dict:
    self._write_closed()
    self._writer.close()
    return self._last

  def _write_closed(self) -> None:
    if self._closed is None:
      return
    step, window, seconds = self._closed
    self._last = summarize(jax.device_get(window), seconds, **self._throughput)
    self._writer.write(step, self._last)
    log(step, self._num_steps, self._last, **self._console)
    self._closed = None


# Metrics shown on the console, in this order, when a run has them.
_CONSOLE = (("loss", "loss"), ("mlm_accuracy", "mlm_acc"), ("nsp_accuracy", "nsp_acc"),
            ("accuracy", "acc"))


def console_line(step: int, num_steps: int, m: dict, time_budget: float = 0.0,
                 hide: tuple[str, ...] = ()) -> str:
  if time_budget and "train_seconds" in m:
    eta = max(time_budget - m["train_seconds"], 0.0)
  else:
    eta = (num_steps - step) / max(m["steps_per_sec"], 1e-9)
  shown = " ".join(f"{label} {m[k]:.4f}" for k, label in _CONSOLE
                   if k in m and k not in hide)
  return (f"step {step}/{num_steps} {shown} "
          f"lr {m['learning_rate']:.2e} {m['steps_per_sec']:.2f} steps/s "
          f"{m['tokens_per_sec']:.0f} tok/s eta {eta / 60:.1f} min")


def log(step: int, num_steps: int, m: dict, **console) -> None:
  if jax.process_index() == 0:
    logger.info("%s", console_line(step, num_steps, m, **console))
