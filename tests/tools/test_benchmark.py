"""`bert-jax benchmark`, the FLOP count behind MFU, log windows and profiler traces."""

import glob
import json
import math
import os

import jax
import numpy as np
import pytest

from bert_jax.tools import benchmark
from bert_jax.runtime import flops
from bert_jax.data import input_pipeline
from bert_jax.runtime import profiler, writers
from bert_jax.pretrain import step as pretrain_step
from bert_jax.runtime import sharding
from bert_jax.errors import InputError
from bert_jax.model.bert import BertConfig


def test_train_flops_match_a_hand_count_for_tiny(tiny_config):
  cfg = BertConfig.from_dict(tiny_config.model)
  seq, preds = 128, 20
  assert (cfg.num_layers, cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size) == (
      2, 128, 512, 8000)
  # Multiply-adds of one sequence's forward pass, matmul by matmul.
  per_layer = (3 * seq * 128 * 128      # Q, K, V projections
               + seq * 128 * seq        # scores QK^T (2 heads x 64 = 128)
               + seq * seq * 128        # probabilities x V
               + seq * 128 * 128        # output projection
               + seq * 128 * 512        # feed-forward in
               + seq * 512 * 128)       # feed-forward out
  heads = (preds * 128 * 128            # MLM transform at the masked positions
           + preds * 128 * 8000         # tied vocab projection, masked positions only
           + 128 * 128 + 128 * 2)       # pooler + NSP on [CLS]
  macs = 2 * per_layer + heads
  # 2 FLOPs per multiply-add; backward = 2x forward.
  assert flops.train_flops_per_token(cfg, seq, preds) == pytest.approx(6 * macs / seq)
  assert flops.train_flops_per_token(cfg, seq, preds) == pytest.approx(3_728_652, abs=1)


def test_peak_flops_from_table_or_probe():
  class Device:
    platform, process_index = "tpu", 0
    device_kind = "TPU v5 lite"
  peak, source = flops.peak_flops([Device()] * 4)
  assert peak == 4 * 197e12 and "TPU v5 lite" in source
  Device.device_kind = "TPU v5p"
  assert flops.peak_flops([Device()])[0] == 459e12
  Device.device_kind = "mystery chip"
  assert flops.peak_flops([Device()])[0] is None
  # CPU: measured, and the emulated devices of a process share its cores.
  peak, source = flops.peak_flops(jax.devices())
  assert 1e9 < peak < 1e14 and "measured" in source


def _small(tiny_config, **train):
  config = tiny_config.copy_and_resolve_references()
  config.unlock()
  config.train.global_batch_size = 8
  config.data.max_seq_length = 32
  config.data.max_predictions_per_seq = 5
  for key, value in train.items():
    config.train[key] = value
  return config


FIELDS = ("tokens_per_sec", "step_ms", "model_flops_per_token", "achieved_tflops",
          "peak_tflops", "mfu", "device_kind", "device_count", "step_hlo_sha256")


def test_benchmark_prints_every_field_and_times_the_pretrain_step(tiny_config, capsys):
  config = _small(tiny_config)
  result = benchmark.run(config, steps=2, warmup=1)
  printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert printed == result
  for key in FIELDS:
    assert key in result, key
  for key in ("tokens_per_sec", "step_ms", "model_flops_per_token", "achieved_tflops",
              "peak_tflops", "mfu"):
    assert isinstance(result[key], (int, float)) and math.isfinite(result[key]), key
    assert result[key] > 0, key
  assert result["device_count"] == 8 and result["device_kind"] == jax.devices()[0].device_kind
  assert result["tokens_per_sec"] == pytest.approx(8 * 32 / result["step_ms"] * 1e3, rel=1e-3)
  assert result["mfu"] == pytest.approx(result["achieved_tflops"] / result["peak_tflops"],
                                        rel=1e-2)
  # The program timed is the one `pretrain` builds from the same config (same
  # model, optimizer, shardings and batch shapes): the same lowered HLO.
  assert result["step_hlo_sha256"] == benchmark.step_fingerprint(pretrain_step.setup(config))
  # ... and the fingerprint tells steps apart.
  other = _small(tiny_config)
  other.optimizer.clip_norm = 2.0
  assert benchmark.step_fingerprint(pretrain_step.setup(other)) != result["step_hlo_sha256"]


def test_profile_steps_write_a_trace(tiny_config, tmp_path, capsys):
  benchmark.run(_small(tiny_config, profile_steps=(2, 3)), steps=2, warmup=1,
                workdir=str(tmp_path))
  capsys.readouterr()
  traces = glob.glob(str(tmp_path / "tensorboard/plugins/profile/*/*.xplane.pb"))
  assert len(traces) == 1 and os.path.getsize(traces[0]) > 0
  with pytest.raises(InputError, match="profile_steps"):
    profiler.Trace(str(tmp_path), (3, 2))


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


def test_prefetch_to_device_keeps_order_and_places_batches():
  mesh = sharding.make_mesh((-1, 1, 1))
  batch_sh = sharding.batch_sharding(mesh, (("batch", ("data", "fsdp")),))
  host = [{"x": np.full((8, 2), i, np.int32)} for i in range(5)]
  got = list(input_pipeline.prefetch_to_device(iter(host), batch_sh, size=2))
  assert [int(b["x"][0, 0]) for b in got] == [0, 1, 2, 3, 4]
  assert all(b["x"].sharding == batch_sh for b in got)


def test_input_benchmark_prints_every_field(tiny_config, tmp_path, capsys):
  from bert_jax.tools import input_benchmark  # pylint: disable=g-import-not-at-top
  config = tiny_config.copy_and_resolve_references()
  config.unlock()
  config.data.update(max_documents=60, eval_documents=0, num_shards=8)
  result = input_benchmark.run(config, str(tmp_path), seconds=1.0)
  printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert printed == result and result["what"] == "input"
  for key in ("seqs_per_sec", "tokens_per_sec"):
    assert np.isfinite(result[key]) and result[key] > 0, key
  assert 0 <= result["padding_fraction"] < 0.2  # packed rows
  assert result["tokens_per_sec"] == pytest.approx(result["seqs_per_sec"] * 128, rel=1e-3)
  assert result["peer"]["seqs_per_sec"] > 0 and result["ratio_vs_peer"] > 0
