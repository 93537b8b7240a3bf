import pytest

from bert_jax.pretrain import step as pretrain_step
from bert_jax.tools import plan
from bert_jax.configs import pretrain


@pytest.mark.slow
def test_plan_base_fsdp8_splits_params_and_optimizer():
  config = pretrain.get_config("base")
  # Base's width with 2 of its 12 layers: the same sharding, a third of the compile.
  config.model.num_layers = 2
  config.mesh.shape = (1, 8, 1)
  config.train.global_batch_size = 16
  result = plan.run(config, hbm_gib=0.25)
  # BERT-base's 110,106,428 less 10 layers of 7,087,872 (4 768x768 attention
  # projections, 768x3072 and back, their biases, 2 LayerNorms).
  assert result["num_params"] == 110_106_428 - 10 * 7_087_872
  total = result["params_bytes_total"] + result["opt_state_bytes_total"]
  per_device = result["params_bytes_per_device"] + result["opt_state_bytes_per_device"]
  assert per_device <= 1.15 * total / 8, (per_device, total / 8)
  # The compiled step's arguments are exactly that state (+ the small batch and rng).
  assert per_device <= result["argument_bytes_per_device"] <= per_device + 2**20
  assert result["temp_bytes_per_device"] > 0
  # 0.25 GiB per device is not enough at this batch: flagged.
  assert result["fits"] is False
  assert "DOES NOT FIT" in plan.summary(result)


def test_plan_shows_activation_memory_falling_with_microbatches():
  config = pretrain.get_config("tiny")
  config.train.global_batch_size = 256
  temps = []
  for k in (1, 4):
    config.train.microbatches = k
    result = plan.run(config)
    assert result["microbatches"] == k
    temps.append(result["temp_bytes_per_device"])
  # Temporaries are mostly activations (tiny's state is small): a quarter of the
  # rows at a time needs well under half the memory.
  assert temps[1] < 0.5 * temps[0], temps


@pytest.mark.parametrize("name", [n for n in pretrain.PRESETS if n != "demo"])
def test_every_reference_recipe_loads_and_builds_its_step(name):
  """The preset's data, batch, optimizer and accumulation build the step `pretrain`
  and `plan` use (abstract state and shardings; BUILD.md has the real plans)."""
  config = pretrain.get_config(name)
  assert config.model.size in ("base", "large")
  config.train.microbatches = config.train.global_batch_size // 8  # a row per device
  s = pretrain_step.setup(config)
  assert s.abstract_batch["input_ids"].shape == (config.train.global_batch_size,
                                                 config.data.max_seq_length)


def test_plan_runs_on_the_mlperf_recipe():
  """`plan` compiles the preset's step: its model cut to 1 narrow layer here
  (compiling BERT-large takes a minute on CPU)."""
  config = pretrain.get_config("mlperf")
  config.model.update(num_layers=1, hidden_size=64, num_heads=1, intermediate_size=128,
                      vocab_size=1024)
  config.train.microbatches = 32
  result = plan.run(config)
  assert (result["global_batch_size"], result["seq_len"]) == (256, 512)
  assert result["peak_bytes_per_device"] > result["params_bytes_per_device"] > 0
