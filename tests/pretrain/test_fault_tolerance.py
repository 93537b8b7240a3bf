"""Restarts must be boring: bit-exact resume after kill -9, SIGTERM saves and exits 0,
restore onto other meshes and device counts, non-finite steps skipped and bounded,
phase 1 -> phase 2, and the bad-input cases of a workdir."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

import bert_jax
from bert_jax.runtime import checkpoints
from bert_jax.runtime import optimizer
from bert_jax.pretrain import loop as pretrain
from bert_jax.pretrain import step as pretrain_step
from bert_jax.data import input_pipeline
from bert_jax.errors import InputError, TrainingStopped

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def data_dir(tiny_data_dir):
  return tiny_data_dir


def _config(tiny_config, num_steps, data_dir, **train):
  config = tiny_config.copy_and_resolve_references()
  config.unlock()
  config.data.update(max_documents=200, num_shards=4, num_streams=4,
                     prepared_dir=data_dir)
  # No held-out evaluation: these tests are about the training state (test_evaluate
  # covers evaluation), and each would compile and run it once more.
  config.train.update({"global_batch_size": 16, "num_steps": num_steps, "log_every": 1,
                       "checkpoint_every": 10, "keep_checkpoints": 2, "eval_every": 0,
                       **train})
  config.optimizer.warmup_steps = 5
  return config


def _flags(config, workdir):
  t = config.train
  return [f"--config={REPO}/configs/pretrain.py:tiny", f"--workdir={workdir}",
          f"--config.data.prepared_dir={config.data.prepared_dir}",
          "--config.data.max_documents=200", "--config.data.num_shards=4",
          "--config.data.num_streams=4", f"--config.train.global_batch_size={t.global_batch_size}",
          f"--config.train.num_steps={t.num_steps}", f"--config.train.log_every={t.log_every}",
          f"--config.train.checkpoint_every={t.checkpoint_every}",
          f"--config.train.keep_checkpoints={t.keep_checkpoints}",
          f"--config.train.eval_every={t.eval_every}",
          "--config.optimizer.warmup_steps=5", *[f"--config.mesh.shape={config.mesh.shape}"]]


def _start(config, workdir, devices=8):
  env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
  return subprocess.Popen([sys.executable, "-m", "bert_jax", "pretrain",
                           *_flags(config, workdir)], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _logged_steps(workdir):
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    rows = [json.loads(l) for l in f if l.strip().endswith("}")]
  return [r for r in rows if "loss" in r]  # training rows, not evaluations


def _wait_for(predicate, proc, timeout=300):
  deadline = time.time() + timeout
  while not predicate():
    assert proc.poll() is None, proc.stdout.read()[-3000:]
    assert time.time() < deadline, "timed out"
    time.sleep(0.01)


def _equal(a, b):
  return all(jax.tree.leaves(jax.tree.map(
      lambda x, y: bool(np.array_equal(np.asarray(x), np.asarray(y))), a, b)))


@pytest.mark.slow
@pytest.mark.serial
def test_sigterm_saves_the_step_reached_and_exits_0(tmp_path, tiny_config, data_dir):
  config = _config(tiny_config, 100_000, data_dir, checkpoint_every=100_000)
  proc = _start(config, tmp_path)
  _wait_for(lambda: len(_logged_steps(tmp_path)) >= 3, proc)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 0, out[-3000:]
  assert "SIGTERM received" in out and "checkpoint saved" in out
  mngr = checkpoints.manager(str(tmp_path), async_save=False)
  reached = _logged_steps(tmp_path)[-1]["step"]
  assert mngr.latest_step() == reached >= 3


@pytest.mark.slow
def test_restore_onto_other_meshes_and_device_counts(tmp_path, tiny_config, data_dir):
  config = _config(tiny_config, 4, data_dir, checkpoint_every=4)
  config.mesh.shape = (2, 4, 1)
  pretrain.run(config, str(tmp_path))
  saved = bert_jax.from_pretrained(str(tmp_path)).params
  # Another mesh in this process: restores the same values, sharded on it (training
  # on from a restore is the fresh process's part below).
  config.mesh.shape = (8, 1, 1)
  s = pretrain_step.setup(config)
  mngr = checkpoints.manager(str(tmp_path), async_save=False)
  state, position = checkpoints.restore(
      mngr, 4, s.restore_target())
  mngr.close()
  assert _equal(state.params, saved) and position["stream_examples"] == 16
  assert state.params["embeddings"]["word_embeddings"]["embedding"].sharding.mesh.shape \
      == {"data": 8, "fsdp": 1, "tensor": 1}
  # One device, in a fresh process: restores and trains on.
  config.mesh.shape = (1, 1, 1)
  config.train.num_steps = 6
  proc = _start(config, tmp_path, devices=1)
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 0, out[-3000:]
  assert [r["step"] for r in _logged_steps(tmp_path)] == [1, 2, 3, 4, 5, 6]  # from 4


def _poison(monkeypatch, steps):
  """The batches of `steps` (of a fresh run) get NaN loss weights: the loop's input
  is wrapped here, so the product carries no test hook."""
  prefetch = input_pipeline.prefetch_to_device

  def poisoned(batches, batch_sharding, **kwargs):
    def numbered():
      for step, batch in enumerate(batches, 1):
        if step in steps:
          batch = {**batch, "masked_weights": batch["masked_weights"] * np.nan}
        yield batch
    return prefetch(numbered(), batch_sharding, **kwargs)

  monkeypatch.setattr(input_pipeline, "prefetch_to_device", poisoned)


@pytest.mark.slow
def test_nonfinite_steps_are_skipped_then_stop_training(tmp_path, tiny_config, data_dir,
                                                        monkeypatch):
  config = _config(tiny_config, 8, data_dir, checkpoint_every=2)
  _poison(monkeypatch, (3,))
  pretrain.run(config, str(tmp_path / "one"))
  rows = {r["step"]: r for r in _logged_steps(tmp_path / "one")}
  assert rows[3]["skipped"] == 1 and not np.isfinite(rows[3]["loss"])
  assert all(rows[s]["skipped"] == 0 and np.isfinite(rows[s]["loss"])
             for s in rows if s != 3)
  # Three in a row with a limit of 3: a clear stop, the last checkpoints intact.
  config = _config(tiny_config, 20, data_dir, max_nonfinite_steps=3, checkpoint_every=2)
  _poison(monkeypatch, (5, 6, 7, 8))
  with pytest.raises(TrainingStopped, match=r"3 non-finite steps in a row \(steps 5-7\)"):
    pretrain.run(config, str(tmp_path / "many"))
  mngr = checkpoints.manager(str(tmp_path / "many"), async_save=False)
  assert mngr.latest_step() in (6, 8)
  params = bert_jax.from_pretrained(str(tmp_path / "many"), step=mngr.latest_step()).params
  good = bert_jax.from_pretrained(str(tmp_path / "many"), step=4).params
  assert _equal(params, good)  # skipped steps never touched the params


@pytest.mark.slow
def test_phase_1_to_phase_2(tmp_path, tiny_config, data_dir):
  phase1 = _config(tiny_config, 6, data_dir, checkpoint_every=6)
  phase1.data.max_seq_length = 64
  phase1.data.prepared_dir = ""
  phase1.data.max_documents = 60
  phase1.data.eval_documents = 0
  pretrain.run(phase1, str(tmp_path / "p1"))
  phase2 = _config(tiny_config, 4, data_dir, global_batch_size=8, checkpoint_every=4)
  phase2.init_from = str(tmp_path / "p1")
  s = pretrain_step.setup(phase2)
  state = pretrain._init_from(  # pylint: disable=protected-access
      phase2, s.restore_target(), s)
  mngr = checkpoints.manager(str(tmp_path / "p1"), async_save=False)
  p1, _ = checkpoints.restore(mngr, 6, s.restore_target())
  mngr.close()
  assert _equal(state.params, p1.params) and _equal(state.opt_state[1], p1.opt_state[1])
  assert int(state.step) == 0 and float(jax.numpy.abs(state.opt_state[1].mu[
      "embeddings"]["word_embeddings"]["embedding"]).max()) > 0
  kinds = (optax.ScaleByAdamState, optax.ScaleByScheduleState)
  counts = {type(x).__name__: int(x.count) for x in jax.tree.leaves(
      state.opt_state, is_leaf=lambda x: isinstance(x, kinds)) if isinstance(x, kinds)}
  assert counts == {"ScaleByAdamState": 6, "ScaleByScheduleState": 0}
  pretrain.run(phase2, str(tmp_path / "p2"))
  rows = _logged_steps(tmp_path / "p2")
  assert [r["step"] for r in rows] == [1, 2, 3, 4]
  lr = optimizer.schedule(phase2.optimizer.learning_rate, 5, 4)
  assert rows[1]["learning_rate"] == pytest.approx(float(lr(1)))


@pytest.mark.slow
def test_workdir_bad_input(tmp_path, tiny_config, data_dir, monkeypatch):
  config = _config(tiny_config, 2, data_dir, checkpoint_every=2)
  pretrain.run(config, str(tmp_path / "w"))
  other = _config(tiny_config, 4, data_dir)
  other.model.intermediate_size = 256
  with pytest.raises(InputError, match=r"holds a run with model.intermediate_size=512"):
    pretrain.run(other, str(tmp_path / "w"))
  # Without its config.json (made by hand, or by an older version) the checkpoint's
  # shapes still refuse it, naming every parameter that does not fit.
  (tmp_path / "w" / "config.json").unlink()
  with pytest.raises(InputError, match=r"layer_0.*intermediate.*\(128, 512\) vs model "
                                       r"\(128, 256\)"):
    pretrain.run(other, str(tmp_path / "w"))
  (tmp_path / "file").write_text("")
  with pytest.raises(InputError, match="cannot write checkpoints"):
    pretrain.run(config, str(tmp_path / "file" / "w"))
  monkeypatch.setattr(checkpoints, "free_bytes", lambda _: 1000)
  with pytest.raises(InputError, match=r"GiB free; one checkpoint .* needs"):
    pretrain.run(config, str(tmp_path / "full"))
  monkeypatch.undo()
  # The disk fills up at the second save: a clear stop, the first checkpoint intact.
  save = ocp.CheckpointManager.save

  def full_disk(self, step, *args, **kwargs):
    if step == 4:
      raise OSError(28, "No space left on device")
    return save(self, step, *args, **kwargs)

  monkeypatch.setattr(ocp.CheckpointManager, "save", full_disk)
  filling = _config(tiny_config, 4, data_dir, checkpoint_every=2)
  with pytest.raises(TrainingStopped, match=r"saving step 4 .*No space left on device.*"
                                            r"checkpoints \[2\] are intact"):
    pretrain.run(filling, str(tmp_path / "filling"))
  monkeypatch.undo()
  assert bert_jax.from_pretrained(str(tmp_path / "filling")).params
  config.init_from = str(tmp_path / "nothing")
  with pytest.raises(InputError, match="does not exist"):
    pretrain.run(config, str(tmp_path / "x"))


@pytest.mark.slow
@pytest.mark.serial
def test_kill_9_soak(tmp_path, data_dir):
  """One kill here (the suite's time), on the session's data (prepared as the soak
  does); the long soak is `benchmarks/soak.py --kills 5`."""
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
  result = subprocess.run(
      [sys.executable, f"{REPO}/benchmarks/soak.py", f"--workdir={tmp_path}",
       "--kills=1", "--steps=16", "--seed=1", f"--data_dir={data_dir}"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert result.returncode == 0, (report, result.stderr[-3000:])
  assert report["kills"] == 1 and report["corrupt_checkpoints_seen"] == 0
  assert report["final_params_bitwise_equal"]
