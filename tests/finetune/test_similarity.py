"""Contrastive fine-tuning (the similarity task): the in-batch loss and the retrieval
metrics by hand, SimCSE's dropout noise, and an end-to-end run that learns to
retrieve, exports and reads back as an encoder."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bert_jax
from bert_jax.configs import finetune as configs
from bert_jax.errors import InputError
from bert_jax.finetune import loop as finetune
from bert_jax.finetune.tasks import similarity
from bert_jax.model import bert as model_lib, task_model
from tests import synthetic_tasks as st


def _unit(x):
  x = np.asarray(x, np.float32)
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_in_batch_loss_by_hand():
  # Three rows, the last one padding: it is neither a query nor a candidate.
  texts = _unit([[1, 0], [0.6, 0.8], [0, 1]])
  positives = _unit([[0.8, 0.6], [0, 1], [1, 0]])
  embeddings = jnp.asarray(np.stack([texts, positives], axis=1))
  batch = {"weight": jnp.asarray([1.0, 1.0, 0.0])}
  tau = 0.5
  loss, metrics = similarity.loss(embeddings, batch, temperature=tau)
  expected = []
  for i in range(2):
    logits = [float(texts[i] @ positives[j]) / tau for j in range(2)]
    expected.append(-logits[i] + np.log(np.sum(np.exp(logits))))
  np.testing.assert_allclose(float(loss), np.mean(expected), rtol=1e-6)
  # Row 0: cos 0.8 with its own, 1.0 with row 2's (padding, left out) -> correct.
  # Row 1: cos 0.8 with its own, 0.96 with row 0's -> wrong.
  assert float(metrics["accuracy"]) == pytest.approx(0.5)


def test_hard_negatives_join_every_row_candidates_by_hand():
  # Row 0's hard negative is a candidate for both rows; row 1 has none (weight 0),
  # and padding row 2's is left out too.
  texts = _unit([[1, 0], [0.6, 0.8], [0, 1]])
  positives = _unit([[0.8, 0.6], [0, 1], [1, 0]])
  negatives = _unit([[0.6, 0.8], [1, 0], [1, 0]])
  embeddings = jnp.asarray(np.stack([texts, positives, negatives], axis=1))
  batch = {"weight": jnp.asarray([1.0, 1.0, 0.0]),
           "negative_weight": jnp.asarray([1.0, 0.0, 1.0])}
  tau = 0.5
  loss, metrics = similarity.loss(embeddings, batch, temperature=tau)
  candidates = [positives[0], positives[1], negatives[0]]
  expected = []
  for i in range(2):
    logits = [float(texts[i] @ c) / tau for c in candidates]
    expected.append(-logits[i] + np.log(np.sum(np.exp(logits))))
  np.testing.assert_allclose(float(loss), np.mean(expected), rtol=1e-6)
  # Row 1: cos 0.8 with its own, 1.0 with row 0's hard negative -> wrong.
  assert float(metrics["accuracy"]) == pytest.approx(0.5)


class _CharTokenizer:
  """One token per character: id = its code."""
  pad_id, cls_id, sep_id = 0, 1, 2

  def encode_batch(self, texts):
    return [[ord(c) for c in t] for t in texts]


def test_hard_negatives_read_and_featurized_only_when_given(tmp_path):
  data = configs.get_config("similarity").data
  data.max_seq_length = 8
  plain = st.write_jsonl(tmp_path / "plain.jsonl", [{"text": "ab", "text_pair": "cd"}])
  tok = _CharTokenizer()
  arrays, _, _ = similarity.featurize(similarity.read(plain), tok, None, data)
  assert arrays["input_ids"].shape == (1, 2, 8) and "negative_weight" not in arrays
  mixed = st.write_jsonl(tmp_path / "mixed.jsonl", [
      {"text": "ab", "text_pair": "cd", "negative": "ef"},
      {"text": "gh", "text_pair": "ij"},
      {"text": "kl", "text_pair": "mn", "negative": ""}])
  arrays, _, _ = similarity.featurize(similarity.read(mixed), tok, None, data)
  assert arrays["input_ids"].shape == (3, 3, 8)
  assert arrays["input_ids"][0, 2, :4].tolist() == [1, ord("e"), ord("f"), 2]
  # A blank negative (a CSV's empty cell) is none, not the text itself.
  assert arrays["negative_weight"].tolist() == [1.0, 0.0, 0.0]


def test_ranks_and_metrics_by_hand():
  queries = _unit([[1, 0], [0, 1], [1, 1]])
  candidates = _unit([[0.9, 0.1], [1, 0], [1, 1.05]])
  # query 0: own 0.99, others 1.0 and 0.72 -> rank 2; query 1: own 0, others 0.11
  # and 0.72 -> 3; query 2: own 1.0 (the best) -> 1.
  ranks = similarity.ranks(queries @ candidates.T)
  np.testing.assert_array_equal(ranks, [2, 3, 1])
  m = similarity.retrieval_metrics(ranks)
  assert m["recall_at_1"] == pytest.approx(1 / 3)
  assert m["recall_at_10"] == 1.0
  assert m["mrr"] == pytest.approx((1 / 2 + 1 / 3 + 1) / 3)
  # A tie counts against the query.
  assert similarity.ranks(np.ones((2, 2))).tolist() == [2, 2]


def test_simcse_positives_differ_only_by_dropout():
  cfg = model_lib.BertConfig(vocab_size=32, num_layers=1, hidden_size=16, num_heads=2,
                             intermediate_size=32, max_position_embeddings=16,
                             hidden_dropout=0.1, attention_dropout=0.1)
  model = task_model.BertEmbedder(cfg, pooling="mean")
  ids = jnp.tile(jnp.arange(5, 13)[None, None], (2, 2, 1))  # [B=2, 2 copies, S=8]
  params = model.init(jax.random.key(0), ids)["params"]
  same = model.apply({"params": params}, ids)
  np.testing.assert_allclose(same[:, 0], same[:, 1], atol=1e-6)
  noisy = model.apply({"params": params}, ids, deterministic=False,
                      rngs={"dropout": jax.random.key(1)})
  assert noisy.shape == (2, 2, 16)
  np.testing.assert_allclose(np.linalg.norm(noisy, axis=-1), 1.0, rtol=1e-5)
  assert np.abs(np.asarray(noisy[:, 0] - noisy[:, 1])).max() > 1e-3


@pytest.mark.slow
def test_contrastive_fine_tuning_learns_to_retrieve(tmp_path):
  pretrained = str(tmp_path / "pretrained")
  st.pretrained_tiny(pretrained)
  train = st.write_jsonl(tmp_path / "train.jsonl", st.similarity_rows(640, 1))
  test = st.write_jsonl(tmp_path / "test.jsonl", st.similarity_rows(64, 2))
  config = configs.get_config("similarity")
  config.init_from, config.train_file, config.eval_file = pretrained, train, test
  config.data.max_seq_length = 32
  config.optimizer.learning_rate = 3e-3  # the rate the MRR below was measured at
  config.train.epochs = 8
  workdir = str(tmp_path / "run")
  results = finetune.run(config, workdir)
  first, best = results["epochs"][0], results["best"]
  # 64 candidates: chance MRR is about 0.07; identical key sets tie (and count
  # against the query), so a perfect model stays under 1.
  assert best["mrr"] >= 0.75 and best["recall_at_10"] >= 0.9, results["epochs"]  # 0.885
  assert best["mrr"] > first["mrr"] + 0.1, results["epochs"]
  assert results["new_params"] == {}

  # The workdir's encoder is what from_pretrained and encode read: its mean-pooled
  # embeddings give the same ranking metrics.
  model, params, tok = bert_jax.from_pretrained(workdir)
  with open(test) as f:
    rows_in = [json.loads(line) for line in f]
  q = bert_jax.encode(model, params, tok, [r["text"] for r in rows_in], pooling="mean",
                      max_length=32)
  d = bert_jax.encode(model, params, tok, [r["text_pair"] for r in rows_in],
                      pooling="mean", max_length=32)
  m = similarity.retrieval_metrics(similarity.ranks(q @ d.T))
  assert m["mrr"] == pytest.approx(best["mrr"], abs=1e-3)

  rows = finetune.predict(workdir, test, str(tmp_path / "pred.jsonl"))
  assert len(rows) == 64 and len(rows[0]["embedding"]) == 32
  assert np.mean([r["cosine"] for r in rows]) > 0.5
  # A file with hard negatives predicts the same: a text, its embedding and cosine.
  with_negative = st.write_jsonl(tmp_path / "negative.jsonl",
                                 [{**r, "negative": "w1 w2"} for r in rows_in[:2]])
  assert ([r["cosine"] for r in finetune.predict(workdir, with_negative,
                                                 str(tmp_path / "pred2.jsonl"))]
          == pytest.approx([r["cosine"] for r in rows[:2]], abs=1e-5))

  # An eval file without positives cannot be ranked: refused before training.
  unpaired = st.write_jsonl(tmp_path / "unpaired.jsonl", [{"text": "w1 w2"}])
  config.eval_file = unpaired
  with pytest.raises(InputError, match="unpaired.jsonl:1: an eval row needs a text_pair"):
    finetune.run(config, str(tmp_path / "other"))
