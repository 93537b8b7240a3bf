"""Time-budget training: the schedule reaches 0 at the budget, evaluation and
checkpoint waits are not training time, and a resume continues the schedule."""

import json

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bert_jax.pretrain import budget as budget_lib, loop as pretrain
from bert_jax.runtime import checkpoints, optimizer


def test_time_schedule_warms_up_by_steps_and_reaches_zero_at_the_budget():
  lr = optimizer.time_schedule(1e-2, warmup_steps=10, time_budget=100.0)
  assert float(lr(0, 0.0)) == 0.0
  assert float(lr(5, 0.0)) == pytest.approx(5e-3)
  assert float(lr(10, 0.0)) == pytest.approx(1e-2)
  assert float(lr(50, 50.0)) == pytest.approx(5e-3)
  assert float(lr(50, 100.0)) == 0.0 and float(lr(50, 250.0)) == 0.0
  squared = optimizer.time_schedule(1e-2, 10, 100.0, power=2.0)
  assert float(squared(50, 50.0)) == pytest.approx(2.5e-3)


def test_scale_by_time_schedule_is_scale_by_learning_rate_at_that_time():
  lr = optimizer.time_schedule(1e-2, 4, 60.0)
  ours = optimizer.scale_by_time_schedule(lr)
  grads = {"w": jnp.arange(3.0)}
  state = ours.init(grads)
  for count in range(6):
    theirs = optax.scale_by_learning_rate(lambda c, t=10.0 * count: lr(c, t))
    want, _ = theirs.update(grads, optax.ScaleByScheduleState(state.count))
    got, state = ours.update(grads, state, train_seconds=10.0 * count)
    np.testing.assert_allclose(got["w"], want["w"], rtol=1e-6)
  assert int(state.count) == 6


def test_clock_excludes_paused_time(monkeypatch):
  now = [100.0]
  monkeypatch.setattr(budget_lib.time, "perf_counter", lambda: now[0])
  clock = budget_lib.Budget(60.0, seconds=5.0, local_rows=2)  # 5 s from a checkpoint
  now[0] += 3.0
  assert clock.now() == 8.0
  with clock.paused():  # an evaluation
    now[0] += 10.0
  now[0] += 1.0
  assert clock.now() == 9.0


def _config(tiny_config, data_dir, budget):
  config = tiny_config.copy_and_resolve_references()
  config.data.update(prepared_dir=data_dir, num_shards=4, num_streams=4)
  config.train.update(global_batch_size=16, num_steps=1_000_000, log_every=1,
                      checkpoint_every=1_000_000, eval_every=0, time_budget=budget)
  config.optimizer.warmup_steps = 2
  return config


def _rows(workdir):
  with open(workdir / "metrics.jsonl") as f:
    return [r for r in map(json.loads, f) if "loss" in r]


@pytest.mark.slow
@pytest.mark.serial
def test_training_stops_at_the_budget_and_a_resume_continues_the_schedule(
    tiny_config, tiny_data_dir, tmp_path):
  # The first step's compilation counts, so a few seconds cover a few steps.
  pretrain.run(_config(tiny_config, tiny_data_dir, 4.0), str(tmp_path))
  rows = _rows(tmp_path)
  assert 2 <= len(rows) < 1_000_000 and rows[-1]["learning_rate"] == 0.0
  assert rows[-2]["train_seconds"] >= 4.0  # spent one step before the stop
  mngr = checkpoints.manager(str(tmp_path), async_save=False)
  step = mngr.latest_step()
  assert step == rows[-1]["step"]
  saved = mngr.restore(step)["data"]["train_seconds"]
  mngr.close()
  assert saved == pytest.approx(rows[-1]["train_seconds"]) and saved >= 4.0

  # A larger budget on the same workdir: the clock goes on from the saved seconds.
  pretrain.run(_config(tiny_config, tiny_data_dir, 2 * saved + 4.0), str(tmp_path))
  resumed = _rows(tmp_path)[len(rows):]
  assert resumed[0]["step"] == step + 1 and resumed[0]["train_seconds"] >= saved
  peak = tiny_config.optimizer.learning_rate
  t, budget = resumed[0]["train_seconds"], 2 * saved + 4.0
  assert resumed[0]["learning_rate"] == pytest.approx(peak * (1 - t / budget), rel=1e-5)
  assert resumed[-1]["learning_rate"] == 0.0


@pytest.mark.slow
def test_training_stops_at_the_target_accuracy_and_logs_the_time_to_it(
    tiny_config, tiny_data_dir, tmp_path):
  config = _config(tiny_config, tiny_data_dir, 0.0)
  # Reached once the model predicts the most frequent tokens: a few dozen steps.
  config.train.update(num_steps=400, eval_every=2, target_mlm_accuracy=0.03)
  config.data.eval_examples = 64
  pretrain.run(config, str(tmp_path))
  with open(tmp_path / "metrics.jsonl") as f:
    evals = [r for r in map(json.loads, f) if "eval_mlm_accuracy" in r]
  assert len(evals) >= 2 and all(r["eval_mlm_accuracy"] < 0.03 for r in evals[:-1])
  last = evals[-1]
  assert last["eval_mlm_accuracy"] >= 0.03 and last["step"] < 400
  assert last["wall_seconds_to_target"] >= last["train_seconds"] > 0
  mngr = checkpoints.manager(str(tmp_path), async_save=False)
  assert mngr.latest_step() == last["step"]  # saved where it stopped
  mngr.close()
