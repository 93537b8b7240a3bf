"""Embeddings, exact search and the embed -> search round trip on a tiny random-init
model: normalised, batch-size independent rows, CLS vs mean pooling, search equal to
a brute-force numpy top-k, a fine-tuned workdir read as its encoder, and bad input."""

import json
import re

import jax
import numpy as np
import pytest

import bert_jax
from bert_jax.configs import finetune as configs
from bert_jax.errors import InputError
from bert_jax.finetune import loop as finetune
from bert_jax.inference import encode as encode_lib, index, search
from bert_jax.model import task_model
from tests import synthetic_tasks as st
from tests.test_main import run_cli

# Lengths 2 ... 11 words: rows padded by different amounts.
TEXTS = [" ".join(st.FILLER[(i * 7 + j) % 12] for j in range(i % 10 + 1)) + " red"
         for i in range(20)]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("pretrained"))
  st.pretrained_tiny(path)
  return path


@pytest.fixture(scope="module")
def loaded(workdir):
  return bert_jax.from_pretrained(workdir)


def test_embeddings_are_normalised_and_batch_size_independent(loaded, capsys):
  # One jitted function per (model, pooling) for the process: other tests may have
  # compiled shapes of it before, so count what these calls add.
  forward = encode_lib._forward(loaded.model, "cls")  # pylint: disable=protected-access
  compiled = forward._cache_size()
  by_size = {b: bert_jax.encode(*loaded, TEXTS, batch_size=b) for b in (64, 3, 1)}
  emb = by_size[64]
  assert emb.shape == (20, 32) and emb.dtype == np.float32
  np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-6)
  for b in (3, 1):
    np.testing.assert_allclose(by_size[b], emb, atol=1e-5)
  # 8 devices: batches of 24 (one, padded) and of 8 (three, the last padded): at
  # most one compile per batch shape, however many batches and texts.
  assert forward._cache_size() - compiled <= 2
  assert len({tuple(r) for r in emb.round(4)}) == 20  # every text its own row

  bert_jax.encode(*loaded, TEXTS, batch_size=8, progress=True)
  assert "embedding: 100%" in capsys.readouterr().err


def test_cls_and_mean_differ_and_mean_ignores_padding(loaded):
  cls = bert_jax.encode(*loaded, TEXTS, pooling="cls", max_length=32)
  mean = bert_jax.encode(*loaded, TEXTS, pooling="mean", max_length=32)
  assert np.abs(cls - mean).max() > 0.1
  np.testing.assert_allclose(np.linalg.norm(mean, axis=1), 1.0, atol=1e-6)
  # More padding after every text (32 -> 96 positions) leaves the mean as it was.
  np.testing.assert_allclose(
      bert_jax.encode(*loaded, TEXTS, pooling="mean", max_length=96), mean, atol=1e-5)
  # Padding positions hold hidden states too; the mean leaves them out.
  rng = np.random.default_rng(0)
  sequence = rng.normal(size=(2, 6, 4)).astype(np.float32)
  mask = np.array([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]])
  pooled = np.asarray(task_model.pool(sequence, mask, "mean"))
  want = sequence[0, :3].mean(0)
  np.testing.assert_allclose(pooled[0], want / np.linalg.norm(want), rtol=1e-5)
  with pytest.raises(InputError, match=r"pooling 'max'; choose one of \['cls', 'mean'\]"):
    bert_jax.encode(*loaded, TEXTS, pooling="max")
  with pytest.raises(InputError, match=r"max_length=200 must be in \[3, 128\]"):
    bert_jax.encode(*loaded, TEXTS, max_length=200)


def test_top_k_is_the_brute_force_top_k():
  rng = np.random.default_rng(0)
  # 1000 rows in chunks of 128 (the last one 104 rows and padding), unnormalised.
  idx = rng.normal(size=(1000, 16)).astype(np.float32) * rng.uniform(0.5, 2, (1000, 1))
  queries = rng.normal(size=(5, 16)).astype(np.float32)
  unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
  cosine = unit(queries).astype(np.float64) @ unit(idx).T.astype(np.float64)
  want = np.argsort(-cosine, axis=1)[:, :10]
  gaps = np.diff(-np.sort(-cosine, axis=1)[:, :11], axis=1)
  assert np.abs(gaps).min() > 1e-5  # no near-ties the f32 ranking could swap
  scores, ids = search.top_k(idx, queries, 10, chunk_size=128)
  np.testing.assert_array_equal(ids, want)
  np.testing.assert_allclose(scores, np.take_along_axis(cosine, want, 1), atol=1e-6)
  # One query as a vector; k up to every row; one chunk.
  scores, ids = search.top_k(idx[:9], queries[0], 9)
  np.testing.assert_array_equal(ids[0], np.argsort(-cosine[0, :9]))
  with pytest.raises(InputError, match=r"k=10 must be in \[1, 9\]"):
    search.top_k(idx[:9], queries, 10)
  with pytest.raises(InputError, match="queries"):
    search.top_k(idx, queries[:, :8], 3)


class _NoLogger:
  """Stands in for the fine-tuning loop's metric writers (TensorBoard's import alone
  takes seconds); what is tested here is the checkpoint it leaves."""

  def __init__(self, *args, **kwargs):
    pass

  def add(self, *args, **kwargs):
    pass

  write_eval = close = add


@pytest.fixture(scope="module")
def tuned(workdir, tmp_path_factory):
  """A classifier fine-tuned from `workdir` for one step by `finetune.run`."""
  root = tmp_path_factory.mktemp("tuned")
  rows = st.write_jsonl(root / "train.jsonl", st.classification_rows(32, 0))
  config = configs.get_config("classification")
  config.init_from, config.train_file, config.eval_file = workdir, str(rows), str(rows)
  config.data.max_seq_length, config.train.epochs = 16, 1
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(finetune.writers, "Logger", _NoLogger)
    finetune.run(config, str(root / "run"))
  return str(root / "run")


def test_a_fine_tuned_workdir_reads_as_its_encoder(tuned, loaded):
  model, params, tok = bert_jax.from_pretrained(tuned)
  assert type(model).__name__ == "BertEncoder" and tok is not None
  assert sorted(params) == ["embeddings", "layer_0", "layer_1", "pooler"]
  _, _, s, full, _, _ = finetune.restore(tuned)  # the whole task model, head too
  for name in params:
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(params[name]),
                 jax.device_get(full[name]))
  # `encode` runs on the bare encoder and on the task model with its own params alike.
  emb = bert_jax.encode(model, params, tok, TEXTS)
  np.testing.assert_allclose(bert_jax.encode(s.model, full, tok, TEXTS), emb, atol=1e-6)
  assert isinstance(s.model, task_model.BertWithHead)
  # Fine-tuning moved the encoder: other embeddings and another fingerprint.
  assert np.abs(emb - bert_jax.encode(*loaded, TEXTS)).max() > 1e-4
  assert index.fingerprint(params) != index.fingerprint(
      {k: v for k, v in loaded.params.items() if task_model.is_encoder(k)})


def test_embed_then_search_through_the_cli(workdir, tmp_path, capsys):
  texts = tmp_path / "texts.txt"
  texts.write_text("\n".join(TEXTS[:10]) + "\n\n" + "\n".join(TEXTS[10:]) + "\n")
  out = tmp_path / "emb.npy"
  code, err = run_cli("embed", "--workdir", workdir, "--input", str(texts), "--output",
                      str(out), "--pooling", "mean", "--max_length", "24", capsys=capsys)
  assert code == 0, err
  emb = np.load(out)
  meta = json.loads((tmp_path / "emb.npy.json").read_text())
  assert meta["model"]["workdir"] == workdir and meta["model"]["step"] == 0
  assert (meta["pooling"], meta["max_length"], meta["count"], meta["dim"]) == (
      "mean", 24, 20, 32)  # the blank line skipped
  np.testing.assert_allclose(emb, bert_jax.encode(*bert_jax.from_pretrained(workdir),
                                                  TEXTS, pooling="mean", max_length=24),
                             atol=1e-6)

  code, err, printed = run_cli("search", "--workdir", workdir, "--index", str(out),
                               "--texts", str(texts), "--query", TEXTS[13], "-k", "3",
                               capsys=capsys, with_stdout=True)
  assert code == 0, err
  lines = printed.splitlines()
  assert len(lines) == 3 and lines[0] == f"1 1.0000 {TEXTS[13]}", printed
  # The same from Python, with the index's pooling and max length for the query.
  results = search.search(workdir, str(out), str(texts), TEXTS[13], k=3)
  assert [f"{r} {s:.4f} {t}" for r, s, t in results] == lines
  scores, ids = search.top_k(emb, emb[13], 3)
  assert [TEXTS[i] for i in ids[0]] == [t for _, _, t in results]


def test_bad_input(workdir, tuned, tmp_path):
  (tmp_path / "empty.txt").write_text("\n  \n")
  with pytest.raises(InputError, match="empty.txt holds no text"):
    index.embed(workdir, str(tmp_path / "empty.txt"), str(tmp_path / "e.npy"))
  with pytest.raises(InputError, match="unknown pooling 'max'"):
    index.embed(workdir, str(tmp_path / "empty.txt"), str(tmp_path / "e.npy"), "max")
  texts = tmp_path / "texts.txt"
  texts.write_text("\n".join(TEXTS[:4]) + "\n")
  index.embed(workdir, str(texts), str(tmp_path / "e.npy"), max_length=16)
  (tmp_path / "more.txt").write_text("\n".join(TEXTS[:5]) + "\n")
  with pytest.raises(InputError, match="more.txt has 5 texts, --index .* 4 rows"):
    search.search(workdir, str(tmp_path / "e.npy"), str(tmp_path / "more.txt"), "red")
  (tmp_path / "other.txt").write_text("\n".join(TEXTS[4:8]) + "\n")
  with pytest.raises(InputError, match="other.txt is not the text the index was made"):
    search.search(workdir, str(tmp_path / "e.npy"), str(tmp_path / "other.txt"), "red")
  # Another model (the same one fine-tuned) refuses the index.
  made_by = re.escape(f"was made by another model ({workdir} step 0")
  with pytest.raises(InputError, match=made_by):
    search.search(tuned, str(tmp_path / "e.npy"), str(texts), "red")
  with pytest.raises(InputError, match="has no e.npy.json beside it"):
    (tmp_path / "e.npy.json").rename(tmp_path / "moved.json")
    search.search(workdir, str(tmp_path / "e.npy"), str(texts), "red")
