"""Checkpoint conversion against transformers' FlaxBertForPreTraining.

Imports (HF PyTorch-layout safetensors, Google TF1 checkpoints) must give our model
the logits of the HF Flax reference run on the same weights; an export must load into
the HF Flax model (through transformers' own PyTorch->Flax converter) and give our
logits. The test files are written from HF's Flax tree with small independent name
rules, not with bert_jax.interop.convert, so the tests are not circular; the PyTorch-layout
writer is itself checked against transformers' reader.
"""

import dataclasses
import json
import logging
import os
import subprocess
import sys

import flax
import flax.linen as nn
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

transformers = pytest.importorskip("transformers")

import bert_jax  # noqa: E402
from bert_jax.runtime import checkpoints  # noqa: E402
from bert_jax.interop import convert  # noqa: E402
from bert_jax.model import bert as model  # noqa: E402
from bert_jax.data import tokenizer  # noqa: E402
from bert_jax.errors import InputError  # noqa: E402
from tests.data import helpers  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOL = 1e-4
VOCAB = 211
MAX_POS = 32
SEQ = 17
# (num_layers, hidden, heads, intermediate): odd head count / odd intermediate included.
SHAPES = [(2, 96, 3, 200), (1, 64, 2, 128), (3, 48, 4, 100)]


def _hf_config(layers, hidden, heads, inter):
  return transformers.BertConfig(
      vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=layers,
      num_attention_heads=heads, intermediate_size=inter, max_position_embeddings=MAX_POS,
      type_vocab_size=2, hidden_act="gelu", initializer_range=0.2,
      tie_word_embeddings=True)


def _hf_model(hf_cfg):
  return transformers.FlaxBertForPreTraining(hf_cfg, seed=0, _do_init=False)


def _random_hf_params(hf, seed):
  """HF's full Flax tree (shapes from its own init) with random, non-trivial values."""
  shapes = jax.eval_shape(lambda k: hf.init_weights(k, (1, SEQ)), jax.random.key(0))
  rng = np.random.default_rng(seed)
  out = {}
  for path, x in sorted(flax.traverse_util.flatten_dict(shapes).items()):
    if path[-1] == "scale":
      v = 1.0 + 0.2 * rng.standard_normal(x.shape)
    elif path[-1] == "bias":
      v = 0.1 * rng.standard_normal(x.shape)
    else:
      v = 0.2 * rng.standard_normal(x.shape)
    out[path] = v.astype(np.float32)
  return flax.traverse_util.unflatten_dict(out)


def _pt_state_dict(hf_params):
  """HF Flax tree -> PyTorch names/layout (HF's rule: kernel = weight^T)."""
  sd = {}
  for path, x in flax.traverse_util.flatten_dict(hf_params).items():
    leaf = {"kernel": "weight", "embedding": "weight", "scale": "weight"}.get(
        path[-1], path[-1])
    sd[".".join(path[:-1] + (leaf,))] = np.ascontiguousarray(
        x.T if path[-1] == "kernel" else x)
  sd["cls.predictions.decoder.weight"] = sd["bert.embeddings.word_embeddings.weight"].copy()
  sd["cls.predictions.decoder.bias"] = sd["cls.predictions.bias"].copy()
  return sd


def _write_hf_dir(path, hf_cfg, sd, vocab=VOCAB):
  from safetensors.numpy import save_file
  os.makedirs(path)
  hf_cfg.save_pretrained(path)
  save_file(sd, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
  with open(os.path.join(path, "vocab.txt"), "w") as f:
    f.write(_vocab_lines(vocab))


def _vocab_lines(size):
  specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
  return "".join(f"{t}\n" for t in specials + [f"tok{i}" for i in range(size - 5)])


def _inputs(seed, batch=3):
  rng = np.random.default_rng(seed)
  ids = rng.integers(0, VOCAB, size=(batch, SEQ), dtype=np.int32)
  pos = np.arange(SEQ)[None, :]
  mask = (pos < np.array([SEQ, 11, 5])[:, None]).astype(np.int32)  # real padding
  types = ((pos >= np.array([8, 6, 2])[:, None]) & (mask == 1)).astype(np.int32)
  return np.where(mask == 1, ids, 0).astype(np.int32), types, mask


def _ours(m, params, inputs):
  ids, types, mask = inputs
  out = jax.jit(lambda p: m.apply({"params": p}, ids, token_type_ids=types,
                                  attention_mask=mask))(params)
  return np.asarray(out["mlm_logits"]), np.asarray(out["nsp_logits"])


def _ref(hf, hf_params, inputs):
  ids, types, mask = inputs
  out = jax.jit(lambda p: hf(ids, attention_mask=mask, token_type_ids=types, params=p,
                             train=False))(hf_params)
  return np.asarray(out.prediction_logits), np.asarray(out.seq_relationship_logits)


def _assert_close(ours, ref):
  (mlm, nsp), (ref_mlm, ref_nsp) = ours, ref
  assert mlm.shape == ref_mlm.shape and nsp.shape == ref_nsp.shape
  assert mlm.std() > 100 * TOL and np.abs(nsp).max() > 100 * TOL  # not vacuous
  np.testing.assert_allclose(mlm, ref_mlm, rtol=0, atol=TOL)
  np.testing.assert_allclose(nsp, ref_nsp, rtol=0, atol=TOL)


def test_pt_writer_agrees_with_transformers(tmp_path):
  """The tests' PyTorch-layout writer is what transformers' own reader expects."""
  hf_cfg = _hf_config(*SHAPES[1])
  hf_params = _random_hf_params(_hf_model(hf_cfg), seed=1)
  _write_hf_dir(tmp_path / "hf", hf_cfg, _pt_state_dict(hf_params))
  loaded = transformers.FlaxBertForPreTraining.from_pretrained(tmp_path / "hf")
  flat, got = (flax.traverse_util.flatten_dict(t) for t in (hf_params, loaded.params))
  assert flat.keys() == got.keys()
  for k in flat:
    np.testing.assert_array_equal(flat[k], np.asarray(got[k]))


@pytest.mark.parametrize("layers,hidden,heads,inter", SHAPES)
def test_hf_import_matches_reference(tmp_path, layers, hidden, heads, inter):
  hf_cfg = _hf_config(layers, hidden, heads, inter)
  hf = _hf_model(hf_cfg)
  hf_params = _random_hf_params(hf, seed=hidden + layers)
  _write_hf_dir(tmp_path / "hf", hf_cfg, _pt_state_dict(hf_params))
  inputs = _inputs(seed=hidden)

  with jax.default_matmul_precision("highest"):
    ref = _ref(hf, hf_params, inputs)
    # To Orbax, then back through the same from_pretrained pretraining uses.
    loaded = convert.convert(str(tmp_path / "hf"), "hf", str(tmp_path / "out"), "orbax")
    assert loaded.missing_heads == []
    assert sorted(os.listdir(tmp_path / "out" / "tokenizer")) == ["vocab.txt"]
    assert checkpoints.read_config(str(tmp_path / "out"))["model"]["num_heads"] == heads
    m, params, tok = bert_jax.from_pretrained(str(tmp_path / "out"))
    assert m.cfg.intermediate_size == inter
    assert isinstance(tok, tokenizer.WordPieceTokenizer) and tok.vocab_size == VOCAB
    assert tok.special == tokenizer.SpecialIds(0, 1, 2, 3, 4)
    _assert_close(_ours(m, params, inputs), ref)
    if layers == 2:  # an HF dir straight into from_pretrained (in-memory conversion)
      m2, params2, tok2 = bert_jax.from_pretrained(str(tmp_path / "hf"))
      assert tok2.encode("tok7 tok12") == [12, 17]
      _assert_close(_ours(m2, params2, inputs), ref)


def test_bert_model_layout_reports_missing_heads(tmp_path, caplog):
  hf_cfg = _hf_config(*SHAPES[1])
  hf_params = _random_hf_params(_hf_model(hf_cfg), seed=3)
  full = _pt_state_dict(hf_params)
  # BertModel: no `bert.` prefix, no cls.*; old-style LayerNorm gamma/beta names.
  base = {}
  for k, v in full.items():
    if k.startswith("bert."):
      k = k[len("bert."):].replace("LayerNorm.weight", "LayerNorm.gamma").replace(
          "LayerNorm.bias", "LayerNorm.beta")
      base[k] = v
  _write_hf_dir(tmp_path / "full", hf_cfg, full)
  _write_hf_dir(tmp_path / "base", hf_cfg, base)
  with caplog.at_level(logging.WARNING, logger="bert_jax"):
    loaded = convert.load(str(tmp_path / "base"), "hf")
  assert loaded.missing_heads == ["mlm_head", "nsp_head"]
  assert "mlm_head" in caplog.text and "nsp_head" in caplog.text
  ref = convert.load(str(tmp_path / "full"), "hf").params
  for name in ["embeddings", "pooler"] + [f"layer_{i}" for i in range(SHAPES[1][0])]:
    jax.tree.map(np.testing.assert_array_equal, loaded.params[name], ref[name])
  # The heads come from our init (zero biases, unit LayerNorm), not random garbage.
  np.testing.assert_array_equal(loaded.params["mlm_output_bias"], 0)
  np.testing.assert_array_equal(loaded.params["mlm_layer_norm"]["scale"], 1)
  convert.save_orbax(loaded, str(tmp_path / "out"))
  cfg = checkpoints.read_config(str(tmp_path / "out"))
  assert cfg["initialised_heads"] == ["mlm_head", "nsp_head"]


def _tf1_variables(hf_params):
  """HF Flax tree -> Google's TF1 BERT names (kernels [in, out] as in Flax)."""
  out = {}
  for path, x in flax.traverse_util.flatten_dict(hf_params).items():
    p = list(path)
    if p[:2] == ["cls", "seq_relationship"]:
      out["cls/seq_relationship/" + ("output_weights" if p[-1] == "kernel"
                                     else "output_bias")] = x.T if p[-1] == "kernel" else x
      continue
    if p == ["cls", "predictions", "bias"]:
      out["cls/predictions/output_bias"] = x
      continue
    if p[-1] == "embedding":
      p = p[:-1]
    elif p[-2] == "LayerNorm":
      p[-1] = {"scale": "gamma", "bias": "beta"}[p[-1]]
    name = "/".join(p).replace("encoder/layer/", "encoder/layer_")
    out[name] = x
  return out


def _write_tf1_dir(path, hf_cfg, variables):
  import tensorflow as tf
  os.makedirs(path)
  g = tf.Graph()
  with g.as_default():
    vs = [tf.compat.v1.Variable(v, name=k) for k, v in variables.items()]
    # Optimizer slots and the step, as in Google's released pretraining checkpoints.
    vs.append(tf.compat.v1.Variable(np.zeros((3,), np.float32),
                                    name="bert/pooler/dense/bias/adam_m"))
    vs.append(tf.compat.v1.Variable(np.int64(7), name="global_step"))
    saver = tf.compat.v1.train.Saver(vs)
    with tf.compat.v1.Session(graph=g) as sess:
      sess.run(tf.compat.v1.global_variables_initializer())
      saver.save(sess, os.path.join(path, "bert_model.ckpt"))
  cfg = {k: v for k, v in hf_cfg.to_dict().items() if k in (
      "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
      "intermediate_size", "hidden_act", "hidden_dropout_prob",
      "attention_probs_dropout_prob", "max_position_embeddings", "type_vocab_size",
      "initializer_range")}
  with open(os.path.join(path, "bert_config.json"), "w") as f:
    json.dump(cfg, f)
  with open(os.path.join(path, "vocab.txt"), "w") as f:
    f.write(_vocab_lines(VOCAB))


def test_tf1_import_matches_reference(tmp_path):
  hf_cfg = _hf_config(*SHAPES[0])
  hf = _hf_model(hf_cfg)
  hf_params = _random_hf_params(hf, seed=5)
  _write_tf1_dir(tmp_path / "tf1", hf_cfg, _tf1_variables(hf_params))
  inputs = _inputs(seed=5)
  with jax.default_matmul_precision("highest"):
    ref = _ref(hf, hf_params, inputs)
    convert.convert(str(tmp_path / "tf1"), "tf1", str(tmp_path / "out"), "orbax")
    m, params, _ = bert_jax.from_pretrained(str(tmp_path / "out"))
    _assert_close(_ours(m, params, inputs), ref)
    m2, params2, _ = bert_jax.from_pretrained(str(tmp_path / "tf1"))  # in memory
    _assert_close(_ours(m2, params2, inputs), ref)
  assert os.listdir(tmp_path / "out" / "tokenizer") == ["vocab.txt"]


def _write_workdir(path, cfg, seed):
  """A pretrain-style workdir: config.json + checkpoints/<step>/params + spm.model."""
  m = model.BertForPreTraining(cfg)
  abstract = nn.meta.unbox(jax.eval_shape(
      m.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 8), np.int32))["params"])
  rng = np.random.default_rng(seed)
  flat = {}
  for p, x in flax.traverse_util.flatten_dict(abstract).items():
    scale, shift = {"scale": (0.2, 1.0), "bias": (0.1, 0.0)}.get(p[-1], (0.2, 0.0))
    flat[p] = (shift + scale * rng.standard_normal(x.shape)).astype(np.float32)
  params = flax.traverse_util.unflatten_dict(flat)
  checkpoints.write_config(str(path), ml_collections.ConfigDict(
      {"model": dict(dataclasses.asdict(cfg), size="custom")}))
  mngr = checkpoints.manager(str(path), async_save=False)
  mngr.save(5, args=ocp.args.Composite(params=ocp.args.StandardSave(params)))
  mngr.wait_until_finished()
  mngr.close()
  os.makedirs(path / "tokenizer")
  (path / "tokenizer" / "spm.model").write_bytes(b"\x00spm-bytes\x01")
  return m, params


def test_export_loads_in_transformers(tmp_path):
  layers, hidden, heads, inter = SHAPES[0]
  cfg = model.BertConfig(vocab_size=VOCAB, num_layers=layers, hidden_size=hidden,
                         num_heads=heads, intermediate_size=inter,
                         max_position_embeddings=MAX_POS)
  m, params = _write_workdir(tmp_path / "work", cfg, seed=9)
  inputs = _inputs(seed=9)
  # Through the CLI, as a user would.
  run = subprocess.run(
      [sys.executable, "-m", "bert_jax", "convert", "--from", "orbax",
       str(tmp_path / "work"), "--to", "hf", str(tmp_path / "hf")],
      cwd=REPO, capture_output=True, text=True, timeout=120,
      preexec_fn=lambda: os.umask(0o022))
  assert run.returncode == 0, run.stderr
  out = tmp_path / "hf"
  assert sorted(os.listdir(out)) == ["config.json", "model.safetensors", "spm.model"]
  # The user's umask, not the private temporary directory's 0700.
  assert out.stat().st_mode & 0o777 == 0o755
  assert all((out / f).stat().st_mode & 0o777 == 0o644 for f in os.listdir(out))
  assert (out / "spm.model").read_bytes() == b"\x00spm-bytes\x01"
  from safetensors.numpy import load_file
  sd = load_file(str(out / "model.safetensors"))
  np.testing.assert_array_equal(sd["cls.predictions.decoder.weight"],
                                sd["bert.embeddings.word_embeddings.weight"])
  assert sd["bert.encoder.layer.0.intermediate.dense.weight"].shape == (inter, hidden)
  hf_cfg = json.loads((out / "config.json").read_text())
  assert hf_cfg["architectures"] == ["BertForPreTraining"]
  # transformers' own reader (PyTorch-layout safetensors -> Flax, no torch needed).
  hf = transformers.FlaxBertForPreTraining.from_pretrained(str(out))
  with jax.default_matmul_precision("highest"):
    _assert_close(_ours(m, params, inputs), _ref(hf, hf.params, inputs))


@pytest.fixture(name="good_hf")
def _good_hf(tmp_path):
  hf_cfg = _hf_config(*SHAPES[1])
  return hf_cfg, _pt_state_dict(_random_hf_params(_hf_model(hf_cfg), seed=11))


def _expect_error(tmp_path, src, *names):
  dst = tmp_path / "dst"
  with pytest.raises(InputError) as e:
    convert.convert(str(src), "hf", str(dst), "orbax")
  for n in names:
    assert n in str(e.value)
  assert not dst.exists()
  assert [p for p in os.listdir(tmp_path) if p.startswith(".dst")] == []
  return str(e.value)


def test_missing_tensor(tmp_path, good_hf):
  hf_cfg, sd = good_hf
  del sd["bert.encoder.layer.0.attention.self.key.weight"]
  del sd["cls.predictions.transform.dense.bias"]  # a head present only in part
  _write_hf_dir(tmp_path / "src", hf_cfg, sd)
  _expect_error(tmp_path, tmp_path / "src", "missing",
                "bert.encoder.layer.0.attention.self.key.weight (64, 64)",
                "cls.predictions.transform.dense.bias (64,)")


def test_shape_mismatch(tmp_path, good_hf):
  hf_cfg, sd = good_hf
  sd["bert.encoder.layer.0.intermediate.dense.weight"] = np.zeros((64, 128), np.float32)
  _write_hf_dir(tmp_path / "src", hf_cfg, sd)
  _expect_error(tmp_path, tmp_path / "src",
                "bert.encoder.layer.0.intermediate.dense.weight: checkpoint (64, 128), "
                "expected (128, 64)")


def test_vocab_mismatch(tmp_path, good_hf):
  hf_cfg, sd = good_hf
  _write_hf_dir(tmp_path / "src", hf_cfg, sd, vocab=VOCAB - 1)
  _expect_error(tmp_path, tmp_path / "src", f"vocab_size {VOCAB}", f"({VOCAB - 1} lines)")


def test_cli_bad_input_is_one_line(tmp_path, good_hf):
  hf_cfg, sd = good_hf
  del sd["bert.pooler.dense.bias"]
  _write_hf_dir(tmp_path / "src", hf_cfg, sd)
  run = subprocess.run(
      [sys.executable, "-m", "bert_jax", "convert", "--from", "hf", str(tmp_path / "src"),
       "--to", "orbax", str(tmp_path / "dst")],
      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert run.returncode == 2
  assert "error: checkpoint does not fit the config: missing: bert.pooler.dense.bias" in (
      run.stderr)
  assert not (tmp_path / "dst").exists()


@pytest.mark.skipif(not hasattr(model, "stack_layers"), reason="no scan_layers")
def test_export_of_scanned_workdir(tmp_path):
  """A workdir trained with scan_layers (one stacked `layers` subtree) exports the
  same tensors as its unscanned twin."""
  layers, hidden, heads, inter = SHAPES[2]
  cfg = model.BertConfig(vocab_size=VOCAB, num_layers=layers, hidden_size=hidden,
                         num_heads=heads, intermediate_size=inter,
                         max_position_embeddings=MAX_POS)
  _, params = _write_workdir(tmp_path / "plain", cfg, seed=13)
  scanned = dataclasses.replace(cfg, scan_layers=True)
  path = tmp_path / "scanned"
  checkpoints.write_config(str(path), ml_collections.ConfigDict(
      {"model": dataclasses.asdict(scanned)}))
  mngr = checkpoints.manager(str(path), async_save=False)
  mngr.save(1, args=ocp.args.Composite(params=ocp.args.StandardSave(
      model.stack_layers(params, layers))))
  mngr.wait_until_finished()
  mngr.close()
  from safetensors.numpy import load_file
  sds = []
  for name in ("plain", "scanned"):
    convert.convert(str(tmp_path / name), "orbax", str(tmp_path / f"{name}_hf"), "hf")
    sds.append(load_file(str(tmp_path / f"{name}_hf" / "model.safetensors")))
  assert sds[0].keys() == sds[1].keys()
  for k in sds[0]:
    np.testing.assert_array_equal(sds[0][k], sds[1][k])


@pytest.mark.slow
def test_continued_pretraining_from_a_wordpiece_checkpoint(tmp_path, tiny_config):
  """A Google-layout vocab ([UNK]=100 .. [MASK]=103) travels with an HF checkpoint
  into continued pretraining: prepare tokenizes with it, pairs and masks use its ids."""
  from bert_jax.data import input_pipeline  # pylint: disable=g-import-not-at-top
  from bert_jax.pretrain import loop as pretrain  # pylint: disable=g-import-not-at-top
  docs = helpers.documents("", 30)
  chars = sorted({c for d in docs for s in d for c in s if not c.isspace()})
  vocab = (["[PAD]"] + [f"[unused{i}]" for i in range(99)]
           + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars + ["##" + c for c in chars])
  hf_cfg = transformers.BertConfig(
      vocab_size=len(vocab), hidden_size=64, num_hidden_layers=1, num_attention_heads=2,
      intermediate_size=128, max_position_embeddings=64, tie_word_embeddings=True)
  sd = _pt_state_dict(_random_hf_params(_hf_model(hf_cfg), seed=3))
  _write_hf_dir(tmp_path / "hf", hf_cfg, sd, vocab=len(vocab))
  (tmp_path / "hf" / "vocab.txt").write_text("\n".join(vocab) + "\n")

  config = tiny_config.copy_and_resolve_references()
  config.unlock()
  config.model.update(vocab_size=len(vocab), num_layers=1, hidden_size=64, num_heads=2,
                      intermediate_size=128, max_position_embeddings=64)
  config.data.update(max_documents=30, max_seq_length=64, num_shards=2, num_streams=2,
                     eval_documents=0, max_examples_per_row=1)
  config.train.update(global_batch_size=8, num_steps=3, log_every=1)
  config.init_from = str(tmp_path / "hf")
  work = tmp_path / "work"
  pretrain.run(config, str(work))

  assert (work / "tokenizer" / "vocab.txt").read_text() == "\n".join(vocab) + "\n"
  stats = json.loads((work / "data" / "stats.json").read_text())
  assert stats["special_ids"] == {"pad": 0, "unk": 100, "cls": 101, "sep": 102, "mask": 103}
  assert stats["unk_rate"] < 0.01 and stats["vocab_size"] == len(vocab)
  files, stats = pretrain.ensure_data(config, str(work))
  batch = next(input_pipeline.make_dataset(
      files, global_batch=8, num_streams=2, seq_len=64, vocab_size=len(vocab),
      mask_prob=0.15, max_predictions=10, seed=0,
      special=pretrain.special_ids(stats)).as_numpy_iterator())
  ids = batch["input_ids"]
  assert (ids[:, 0] == 101).all() and ((ids == 102).sum(1) == 2).all()
  assert (ids == 103).any()  # [MASK] is the vocab's, not SentencePiece's 4
  assert not ((ids > 0) & (ids < 101)).any()  # no [unused*] or [UNK] drawn as noise
  rows = [json.loads(l) for l in (work / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows] == [1, 2, 3] and all(np.isfinite(r["loss"]) for r in rows)
