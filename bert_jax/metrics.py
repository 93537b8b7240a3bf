"""Metric sinks: console, WORKDIR/metrics.jsonl and TensorBoard (process 0 only);
log windows summarised without stalling the loop; profiler traces of chosen steps."""

import json
import logging
import os
import time

import jax
import numpy as np
import tensorflow as tf

from bert_jax.errors import InputError

logger = logging.getLogger(__name__)


class Writer:
  def __init__(self, workdir: str):
    self.enabled = jax.process_index() == 0
    if not self.enabled:
      return
    tf.io.gfile.makedirs(workdir)
    self._jsonl = tf.io.gfile.GFile(os.path.join(workdir, "metrics.jsonl"), "a")
    self._tb = tf.summary.create_file_writer(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, metrics: dict) -> None:
    if not self.enabled:
      return
    row = {"step": int(step), **{k: float(v) for k, v in metrics.items()}}
    self._jsonl.write(json.dumps(row) + "\n")
    self._jsonl.flush()
    with self._tb.as_default(step=int(step)):
      for k, v in metrics.items():
        tf.summary.scalar(k, float(v))
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
               flops_per_step: float = 0.0, peak_flops: float | None = None):
    self._writer = Writer(workdir)
    self._num_steps = num_steps
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
    log(step, self._num_steps, self._last)
    self._closed = None


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


def console_line(step: int, num_steps: int, m: dict) -> str:
  eta = (num_steps - step) / max(m["steps_per_sec"], 1e-9)
  return (f"step {step}/{num_steps} loss {m['loss']:.4f} "
          f"mlm_acc {m['mlm_accuracy']:.4f} nsp_acc {m['nsp_accuracy']:.4f} "
          f"lr {m['learning_rate']:.2e} {m['steps_per_sec']:.2f} steps/s "
          f"{m['tokens_per_sec']:.0f} tok/s eta {eta / 60:.1f} min")


def log(step: int, num_steps: int, m: dict) -> None:
  if jax.process_index() == 0:
    logger.info("%s", console_line(step, num_steps, m))
