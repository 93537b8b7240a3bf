"""Packing: rows of several examples that the model keeps apart."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from bert_jax.data import input_pipeline
from bert_jax.model import bert as model_lib
from bert_jax.data import packing
from bert_jax.data import pairs
from bert_jax.data import prepare
from bert_jax.data import tokenizer

SEQ = 32
SPECIAL = tokenizer.SENTENCEPIECE_IDS


def _example(a_len, b_len, first, label=0):
  a = list(range(first, first + a_len))
  b = list(range(first + 100, first + 100 + b_len))
  return pairs.pair_example(a, b, label, SPECIAL)


def test_pack_keeps_every_example_once_within_limits():
  rng = np.random.default_rng(0)
  examples = [_example(int(rng.integers(1, 14)), int(rng.integers(1, 14)), 5 + i, i % 2)
              for i in range(300)]
  lengths = [len(e.input_ids) for e in examples]
  rows = packing.pack_rows(lengths, SEQ, 3)
  assert sorted(i for r in rows for i in r) == list(range(len(examples)))
  assert all(sum(lengths[i] for i in r) <= SEQ and 1 <= len(r) <= 3 for r in rows)
  unpacked = 1 - sum(lengths) / (len(examples) * SEQ)
  packed = 1 - sum(lengths) / (len(rows) * SEQ)
  assert packed < unpacked / 3
  assert packing.pack_rows(lengths, SEQ, 3) == rows  # deterministic
  assert packing.pack_rows(lengths, SEQ, 1) == [[i] for i in range(len(examples))]


def _parsed(rows, max_per_row=3, nsp_weight=1.0):
  records = tf.data.Dataset.from_tensor_slices([prepare.serialize_row(r) for r in rows])
  ds = input_pipeline.masked_batches(
      records, tf.constant([0, 0], tf.int64), batch=len(rows), seq_len=SEQ,
      max_per_row=max_per_row, nsp_weight=nsp_weight, vocab_size=500, mask_prob=0.15,
      max_predictions=5)
  batch = {k: v.copy() for k, v in next(ds.as_numpy_iterator()).items()}
  # Put the masked tokens back: the model tests compare the same tokens.
  rows, cols = np.nonzero(batch["masked_weights"])
  batch["input_ids"][rows, batch["masked_positions"][rows, cols]] = \
      batch["masked_ids"][rows, cols]
  return batch


def test_packed_row_features():
  e1, e2 = _example(3, 4, 10, label=1), _example(5, 2, 20, label=0)
  batch = _parsed([[e1, e2], [e2]])
  n1, n2 = len(e1.input_ids), len(e2.input_ids)  # 10 and 10
  np.testing.assert_array_equal(batch["example_ids"][0],
                                [1] * n1 + [2] * n2 + [0] * (SEQ - n1 - n2))
  np.testing.assert_array_equal(batch["position_ids"][0, :n1 + n2],
                                list(range(n1)) + list(range(n2)))
  np.testing.assert_array_equal(batch["cls_positions"], [[0, n1, 0], [0, 0, 0]])
  np.testing.assert_array_equal(batch["next_sentence_label"], [[1, 0, 0], [0, 0, 0]])
  np.testing.assert_array_equal(batch["next_sentence_weight"], [[1, 1, 0], [1, 0, 0]])
  # Objective "none": no sentence-task weight at all.
  assert _parsed([[e1, e2]], nsp_weight=0.0)["next_sentence_weight"].sum() == 0


@pytest.fixture(scope="module")
def tiny_model():
  cfg = model_lib.BertConfig(vocab_size=500, num_layers=2, hidden_size=64, num_heads=4,
                             intermediate_size=128, max_position_embeddings=64)
  m = model_lib.BertForPreTraining(cfg)
  params = m.init(jax.random.key(0), jnp.zeros((1, SEQ), jnp.int32))["params"]
  return m, jax.tree.map(lambda x: x.unbox() if hasattr(x, "unbox") else x, params)


def _run(m, params, batch, masked):
  keys = ("input_ids", "token_type_ids", "attention_mask", "position_ids")
  extra = {k: jnp.asarray(batch[k]) for k in ("example_ids", "cls_positions") if k in batch}
  return m.apply({"params": params}, *(jnp.asarray(batch[k]) for k in keys),
                 masked_positions=jnp.asarray(masked), **extra)


def test_packed_examples_do_not_see_each_other(tiny_model):
  m, params = tiny_model
  e1, e2 = _example(6, 5, 10, label=1), _example(4, 7, 40)
  n1, n2 = len(e1.input_ids), len(e2.input_ids)
  packed = _parsed([[e1, e2]])
  alone = [_parsed([[e]], max_per_row=1) for e in (e1, e2)]
  # MLM logits at every real position of each example, packed vs alone.
  out = _run(m, params, packed, np.arange(n1 + n2)[None])
  for k, (e, start, n) in enumerate(((e1, 0, n1), (e2, n1, n2))):
    ref = _run(m, params, alone[k], np.arange(n)[None])
    np.testing.assert_allclose(out["mlm_logits"][0, start:start + n],
                               ref["mlm_logits"][0], atol=2e-5)
    np.testing.assert_allclose(out["nsp_logits"][0, k], ref["nsp_logits"][0, 0], atol=2e-5)
  # A changed token in example 2 leaves example 1's outputs as they were.
  changed = {**packed, "input_ids": packed["input_ids"].copy()}
  changed["input_ids"][0, n1 + 2] = 7
  out2 = _run(m, params, changed, np.arange(n1 + n2)[None])
  np.testing.assert_array_equal(out2["mlm_logits"][0, :n1], out["mlm_logits"][0, :n1])
  np.testing.assert_array_equal(out2["nsp_logits"][0, 0], out["nsp_logits"][0, 0])
  assert not np.allclose(out2["mlm_logits"][0, n1:n1 + n2], out["mlm_logits"][0, n1:n1 + n2])


def test_prepare_packs_the_embedded_corpus(tmp_path, tiny_config):
  config = tiny_config.copy_and_resolve_references()
  config.unlock()
  config.data.update(max_documents=300, num_shards=2, max_examples_per_row=3)
  stats = prepare.run(config, str(tmp_path))
  assert stats["rows"] < stats["examples"]
  assert stats["padding_fraction"] < stats["padding_fraction_unpacked"] / 2
