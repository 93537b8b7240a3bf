import pytest

from bert_jax.tools import plan
from bert_jax.configs import pretrain


@pytest.mark.slow
def test_plan_base_fsdp8_splits_params_and_optimizer():
  config = pretrain.get_config("base")
  config.mesh.shape = (1, 8, 1)
  config.train.global_batch_size = 16
  result = plan.run(config, hbm_gib=0.5)
  assert result["num_params"] == 110_106_428
  total = result["params_bytes_total"] + result["opt_state_bytes_total"]
  per_device = result["params_bytes_per_device"] + result["opt_state_bytes_per_device"]
  assert per_device <= 1.15 * total / 8, (per_device, total / 8)
  # The compiled step's arguments are exactly that state (+ the small batch and rng).
  assert per_device <= result["argument_bytes_per_device"] <= per_device + 2**20
  assert result["temp_bytes_per_device"] > 0
  # 0.5 GiB per device is not enough for base at this batch: flagged.
  assert result["fits"] is False
  assert "DOES NOT FIT" in plan.summary(result)
