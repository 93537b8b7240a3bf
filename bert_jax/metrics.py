"""Metric sinks: console, WORKDIR/metrics.jsonl and TensorBoard. Process 0 only."""

import json
import logging
import os

import jax
import numpy as np
import tensorflow as tf

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


def summarize(window: list[dict], seconds: float, tokens_per_step: int) -> dict:
  """Means of the per-step metrics of a log window, skipped-step count, throughput.

  tokens_per_sec counts every position of every row, padding included.
  """
  out = {k: float(np.mean([m[k] for m in window])) for k in window[0]}
  out["skipped"] = float(sum(m["skipped"] for m in window))
  out["steps_per_sec"] = len(window) / seconds
  out["tokens_per_sec"] = out["steps_per_sec"] * tokens_per_step
  return out


def console_line(step: int, num_steps: int, m: dict) -> str:
  eta = (num_steps - step) / max(m["steps_per_sec"], 1e-9)
  return (f"step {step}/{num_steps} loss {m['loss']:.4f} "
          f"mlm_acc {m['mlm_accuracy']:.4f} nsp_acc {m['nsp_accuracy']:.4f} "
          f"lr {m['learning_rate']:.2e} {m['steps_per_sec']:.2f} steps/s "
          f"{m['tokens_per_sec']:.0f} tok/s eta {eta / 60:.1f} min")


def log(step: int, num_steps: int, m: dict) -> None:
  if jax.process_index() == 0:
    logger.info("%s", console_line(step, num_steps, m))
