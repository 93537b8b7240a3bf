"""`bert-jax benchmark --what step`: throughput and MFU of the pretraining step.

Times `pretrain.step.setup(config).step_fn` — the very jitted step, shardings and
optimizer that `pretrain` runs — on a synthetic batch of the configured shape, after
warm-up, and prints one JSON line. `step_hlo_sha256` fingerprints the lowered step,
so two runs (or a run and `pretrain`) can be shown to time the same program.
"""

import hashlib
import json
import logging
import statistics
import time
from typing import Any, Callable

import jax
import numpy as np

from bert_jax.model import bert as model_lib
from bert_jax.pretrain import step as pretrain_step
from bert_jax.runtime import flops, profiler, setup as setup_lib, sharding

log = logging.getLogger(__name__)

def synthetic_batch(global_batch: int, seq_len: int, predictions: int, vocab_size: int,
                    seed: int = 0, max_per_row: int = 1) -> dict[str, np.ndarray]:
  """This process's rows of a batch shaped as the input pipeline makes it: full-length
  pairs (segment B from the middle), `predictions` masked positions per row, one
  example per row (the other `max_per_row` - 1 example slots empty)."""
  rows = global_batch // jax.process_count()
  rng = np.random.default_rng(seed + jax.process_index())
  positions = np.sort(np.stack([rng.choice(np.arange(1, seq_len), predictions, False)
                                for _ in range(rows)]), 1)
  return {
      "input_ids": rng.integers(5, vocab_size, (rows, seq_len)).astype(np.int32),
      "token_type_ids": np.broadcast_to(np.arange(seq_len) >= seq_len // 2,
                                        (rows, seq_len)).astype(np.int32),
      "attention_mask": np.ones((rows, seq_len), np.int32),
      "masked_positions": positions.astype(np.int32),
      "masked_ids": rng.integers(5, vocab_size, (rows, predictions)).astype(np.int32),
      "masked_weights": np.ones((rows, predictions), np.float32),
      "position_ids": np.broadcast_to(np.arange(seq_len), (rows, seq_len)).astype(np.int32),
      "cls_positions": np.zeros((rows, max_per_row), np.int32),
      "next_sentence_label": rng.integers(0, 2, (rows, max_per_row)).astype(np.int32),
      "next_sentence_weight": np.eye(1, max_per_row, dtype=np.float32).repeat(rows, 0),
      **({"example_ids": np.ones((rows, seq_len), np.int32)} if max_per_row > 1 else {}),
  }


def step_fingerprint(s: setup_lib.Setup) -> str:
  """sha256 of the step lowered for the setup's abstract state and batch."""
  return hashlib.sha256(s.lower().as_text().encode()).hexdigest()


class StepTimer:
  """The pretrain step on a fixed synthetic batch; `time(n)` runs n steps and returns
  the seconds of each (a device sync after every step)."""

  name = "bert_jax"

  def __init__(self, config):
    self.setup = pretrain_step.setup(config)
    self.config = config
    self.state = self.setup.init(config.train.seed)
    shape = self.setup.abstract_batch["masked_positions"].shape
    self.batch = sharding.to_global(
        synthetic_batch(shape[0], config.data.max_seq_length, shape[1],
                        config.model.vocab_size, config.train.seed,
                        config.data.max_examples_per_row),
        self.setup.batch_sharding)
    self.rng = jax.random.key(config.train.seed + 1)

  def step(self):
    with self.setup.context():
      self.state, out = self.setup.step_fn(self.state, self.batch, self.rng)
    return out

  def time(self, n: int) -> list[float]:
    return time_steps(self.step, n)


def time_steps(step: Callable[[], Any], n: int) -> list[float]:
  """Seconds of each of `n` calls of `step`, each waited for (what it returns is
  blocked on; jax dispatches asynchronously)."""
  times = []
  for _ in range(n):
    start = time.perf_counter()
    jax.block_until_ready(step())
    times.append(time.perf_counter() - start)
  return times


def run(config, steps: int = 10, warmup: int = 2, workdir: str | None = None) -> dict:
  """Benchmarks the step, prints one JSON line and returns it as a dict. With a
  `workdir`, train.profile_steps (counted from the first warm-up step) are traced
  there."""
  timer = StepTimer(config)
  s = timer.setup
  trace = profiler.Trace(workdir or "", config.train.profile_steps if workdir else ())
  start = time.perf_counter()
  for i in range(1, warmup + 1):  # the first compiles
    trace.before(i)
    trace.after(i, timer.step())
  jax.block_until_ready(timer.state)
  warmup_s = time.perf_counter() - start
  times = []
  for i in range(warmup + 1, warmup + steps + 1):
    trace.before(i)
    times += timer.time(1)
    trace.after(i, timer.state)
  step_s = statistics.median(times)

  batch, seq_len = s.abstract_batch["input_ids"].shape
  per_token = flops.train_flops_per_token(
      s.model.cfg, seq_len, s.abstract_batch["masked_positions"].shape[1])
  peak, peak_source = flops.peak_flops(s.mesh.devices.flat, config.model.dtype)
  achieved = per_token * batch * seq_len / step_s
  result = {
      "what": "step",
      "size": config.model.size,
      "global_batch_size": batch,
      "microbatches": config.train.microbatches,
      "seq_len": seq_len,
      "dtype": config.model.dtype,
      "remat": config.model.remat,
      "scan_layers": config.model.scan_layers,
      "mesh": dict(s.mesh.shape),
      "num_params": model_lib.count_params(s.abstract.params),
      "device_kind": jax.devices()[0].device_kind,
      "device_count": jax.device_count(),
      "steps": steps,
      "warmup_s": round(warmup_s, 2),
      "step_ms": round(step_s * 1e3, 2),
      "step_ms_min": round(min(times) * 1e3, 2),
      "tokens_per_sec": round(batch * seq_len / step_s, 1),
      "model_flops_per_token": round(per_token),
      # Four significant digits, not decimals: on a CPU these are ~0.005 TFLOP/s
      # and MFU ~0.03, where four decimals would be off by a percent.
      "achieved_tflops": float(f"{achieved / 1e12:.4g}"),
      "peak_tflops": None if peak is None else float(f"{peak / 1e12:.4g}"),
      "peak_source": peak_source,
      "mfu": None if peak is None else float(f"{achieved / peak:.4g}"),
      "step_hlo_sha256": step_fingerprint(s),
  }
  log.info("benchmark step %s: %.1f ms/step, %.0f tokens/s, MFU %s",
           config.model.size, result["step_ms"], result["tokens_per_sec"], result["mfu"])
  print(json.dumps(result), flush=True)
  return result
