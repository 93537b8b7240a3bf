"""The FLOP count behind MFU, and the devices' peak FLOP/s."""

import jax
import pytest

from bert_jax.model.bert import BertConfig
from bert_jax.runtime import flops


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
