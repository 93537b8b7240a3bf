"""Log windows, metrics.jsonl and TensorBoard events."""

import json

import jax
import pytest
from tensorboard.backend.event_processing import event_accumulator

from bert_jax.runtime import writers


def test_logger_writes_windows_one_step_late_with_mfu(tmp_path):
  logger = writers.Logger(str(tmp_path), num_steps=5, tokens_per_step=100,
                          flops_per_step=1e9, peak_flops=1e12)
  step_metrics = lambda i: {"loss": jax.numpy.float32(i), "skipped": jax.numpy.int32(0),
                            "mlm_accuracy": 0.0, "nsp_accuracy": 0.0,
                            "learning_rate": 0.0}
  rows = lambda: [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  for step in range(1, 6):
    logger.add(step, jax.tree.map(jax.numpy.asarray, step_metrics(step)),
               log=step in (1, 4, 5))
    if step == 4:  # step 4's window is written at step 5, after it is dispatched
      assert [r["step"] for r in rows()] == [1]
  last = logger.close()
  assert [r["step"] for r in rows()] == [1, 4, 5]
  assert [r["loss"] for r in rows()] == [1.0, 3.0, 5.0]  # means of the windows
  assert last["mfu"] == pytest.approx(last["steps_per_sec"] * 1e9 / 1e12)
  assert last["tokens_per_sec"] == pytest.approx(last["steps_per_sec"] * 100)
  # TensorBoard reads the same scalars from the events (tensorboard's writer, no TF).
  events = event_accumulator.EventAccumulator(str(tmp_path / "tensorboard"))
  events.Reload()
  assert [(e.step, e.value) for e in events.Scalars("loss")] == [(1, 1.0), (4, 3.0), (5, 5.0)]


def test_console_line_shows_the_metrics_a_run_has():
  m = {"loss": 1.5, "learning_rate": 1e-3, "steps_per_sec": 2.0, "tokens_per_sec": 10.0}
  assert "mlm_acc" not in writers.console_line(1, 10, {**m, "accuracy": 0.5})
  assert " acc 0.5000 " in writers.console_line(1, 10, {**m, "accuracy": 0.5})
  line = writers.console_line(1, 10, {**m, "mlm_accuracy": 0.25, "nsp_accuracy": 0.5})
  assert "loss 1.5000 mlm_acc 0.2500 nsp_acc 0.5000 lr 1.00e-03" in line
  assert line.endswith("eta 0.1 min")  # 9 steps at 2 steps/s
  line = writers.console_line(1, 10, {**m, "nsp_accuracy": 0.0, "train_seconds": 30.0},
                              time_budget=150.0, hide=("nsp_accuracy",))
  assert "nsp_acc" not in line and line.endswith("eta 2.0 min")  # the budget's rest
