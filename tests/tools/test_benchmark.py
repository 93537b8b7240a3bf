"""`bert-jax benchmark --what step` and `--what input`, and profiler traces."""

import glob
import json
import math
import os

import jax
import numpy as np
import pytest

from bert_jax.errors import InputError
from bert_jax.pretrain import step as pretrain_step
from bert_jax.runtime import profiler
from bert_jax.tools import benchmark


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


def test_inference_benchmark_times_ours_and_the_flax_peer(tiny_config, capsys):
  from bert_jax.tools import inference_benchmark  # pylint: disable=g-import-not-at-top
  config = tiny_config.copy_and_resolve_references()
  config.data.max_seq_length = 16
  result = inference_benchmark.run(config, rounds=1, calls=2, batch=4,
                                   peers=("hf_flax",))
  printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert printed == result and result["what"] == "inference"
  assert result["sentences_per_sec"] > 0 and result["latency_ms_batch1"] > 0
  assert set(result["peers"]) == {"hf_flax"} and result["peers"]["hf_flax"] > 0
  # The ratio is printed to 2 decimals.
  assert result["throughput_ratio"]["hf_flax"] == pytest.approx(
      result["sentences_per_sec"] / result["peers"]["hf_flax"], abs=0.01)
  assert result["timed_calls"] == 2 and result["missing_peers"] == []


def test_inference_benchmark_models_agree_on_the_same_weights():
  """The runners time the same computation: the HF Flax classifier with our
  weights (converted) gives our logits, so the comparison is like for like."""
  # pylint: disable=g-import-not-at-top
  from bert_jax.interop import convert
  from bert_jax.model import bert as model_lib
  from bert_jax.tools import inference_benchmark as ib
  cfg = model_lib.BertConfig(vocab_size=64, num_layers=2, hidden_size=32, num_heads=2,
                             intermediate_size=64, max_position_embeddings=32)
  ours, peer = ib.Ours(cfg), ib.HFFlax(cfg)
  batch = ib.inputs(3, 16, cfg.vocab_size)
  # to_hf_params maps a pretraining tree: the heads we lack are placeholders.
  dense = {"kernel": 0, "bias": 0}
  hf = convert.to_hf_params({**ours.params, "mlm_output_bias": 0, "nsp": dense,
                             "mlm_transform": dense,
                             "mlm_layer_norm": {"scale": 0, "bias": 0}}, cfg)
  peer.model.params = {"bert": hf["bert"], "classifier": ours.params["classifier"]}
  np.testing.assert_allclose(np.asarray(peer.prepare(batch)()),
                             np.asarray(ours.prepare(batch)()), atol=1e-4)
