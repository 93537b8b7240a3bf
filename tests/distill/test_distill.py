"""Distillation: the losses by hand, the student's start from teacher layers, a
student copied from its teacher, a frozen teacher, bitwise resume, vocabularies,
and task distillation end to end."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bert_jax
from bert_jax.configs import distill as configs, finetune as finetune_configs
from bert_jax.configs import pretrain as pretrain_configs
from bert_jax.data import tokenizer
from bert_jax.distill import losses, pretrain as distill, student as student_lib
from bert_jax.distill import teacher as teacher_lib
from bert_jax.errors import InputError
from bert_jax.finetune import loop as finetune
from bert_jax.model import bert as model_lib
from bert_jax.pretrain import loop as pretrain
from tests import synthetic_tasks as st


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def test_soft_kl_by_hand():
  student = np.array([[1.0, 0.0, -1.0], [0.5, 0.5, 2.0]])
  teacher = np.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
  weights, temperature = np.array([1.0, 0.5]), 2.0
  p, q = _softmax(teacher / temperature), _softmax(student / temperature)
  kl = (p * np.log(p / q)).sum(-1)
  want = temperature ** 2 * (kl * weights).sum() / 1.5
  got = losses.soft_kl(jnp.array(student), jnp.array(teacher), temperature,
                       jnp.array(weights), 1.5)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  assert float(losses.soft_kl(jnp.array(teacher), jnp.array(teacher), 3.0,
                              jnp.ones(2), 2.0)) == pytest.approx(0.0, abs=1e-7)


def test_layer_maps():
  assert losses.layer_map(2, 4) == [1, 3]  # TinyBERT: the last to the last
  assert losses.layer_map(4, 4) == [0, 1, 2, 3]
  assert losses.init_layers(2, 4) == [0, 2]  # DistilBERT: every other from the first
  assert losses.init_layers(6, 12) == [0, 2, 4, 6, 8, 10]
  with pytest.raises(ValueError, match="does not map evenly"):
    losses.layer_map(3, 4)


def _bert_params(cfg, seed=0):
  model = model_lib.BertForPreTraining(cfg)
  return jax.jit(lambda r: model.init(r, jnp.zeros((1, 8), jnp.int32)))(
      jax.random.key(seed))["params"]


def _cfg(**kw):
  base = dict(vocab_size=64, num_layers=4, hidden_size=32, num_heads=2,
              intermediate_size=64, max_position_embeddings=32)
  return model_lib.BertConfig(**{**base, **kw})


@pytest.mark.parametrize("scan", [False, True])
def test_the_student_starts_from_every_other_teacher_layer_bit_for_bit(scan):
  teacher_cfg = _cfg()
  teacher = jax.tree.map(np.asarray, _bert_params(teacher_cfg))
  student_cfg = _cfg(num_layers=2, scan_layers=scan)
  params = student_lib.from_teacher_layers(teacher, teacher_cfg, student_cfg)
  if scan:
    params = model_lib.unstack_layers(params)
  assert sorted(params) == sorted(_bert_params(_cfg(num_layers=2)))
  same = lambda a, b: all(jax.tree.leaves(jax.tree.map(np.array_equal, a, b)))
  assert same(params["layer_0"], teacher["layer_0"])
  assert same(params["layer_1"], teacher["layer_2"])
  assert not same(params["layer_1"], teacher["layer_1"])
  for group in student_lib.SHARED_GROUPS:
    assert same(params[group], teacher[group]), group
  with pytest.raises(InputError, match=r"needs the teacher's width: its model.hidden_size"):
    student_lib.from_teacher_layers(teacher, teacher_cfg, _cfg(num_layers=2, hidden_size=16,
                                                               intermediate_size=32))


def test_the_projection_exists_only_where_widths_differ():
  narrow = student_lib.Student(_cfg(num_layers=1, hidden_size=16), teacher_width=32)
  params = model_lib.abstract_params(narrow)
  assert params["hidden_projection"]["kernel"].shape == (16, 32)
  assert "hidden_projection" not in model_lib.abstract_params(
      student_lib.Student(_cfg(num_layers=1), teacher_width=32))


@pytest.fixture(scope="module")
def synthetic_teacher(tmp_path_factory):
  """A pretrain workdir: 2 layers, 32 wide, 128 tokens (random weights)."""
  workdir = str(tmp_path_factory.mktemp("teacher"))
  st.pretrained_tiny(workdir)
  return workdir


def _batch(rng, rows, seq, predictions, vocab):
  ids = rng.integers(5, vocab, (rows, seq))
  return {"input_ids": ids, "token_type_ids": np.zeros_like(ids),
          "attention_mask": (np.arange(seq) < rng.integers(seq // 2, seq + 1, (rows, 1))),
          "position_ids": np.broadcast_to(np.arange(seq), ids.shape),
          "masked_positions": rng.integers(1, seq // 2, (rows, predictions)),
          "masked_ids": rng.integers(5, vocab, (rows, predictions)),
          "masked_weights": np.ones((rows, predictions), np.float32),
          "cls_positions": np.zeros((rows, 1), np.int32),
          "next_sentence_label": rng.integers(0, 2, (rows, 1)),
          "next_sentence_weight": np.ones((rows, 1), np.float32)}


def test_a_copy_of_the_teacher_matches_it_and_the_teacher_stays_frozen(synthetic_teacher):
  loaded = bert_jax.from_pretrained(synthetic_teacher)
  config = configs.get_config("tiny")
  config.teacher = synthetic_teacher
  config.model.update({k: getattr(loaded.model.cfg, k) for k in (
      "vocab_size", "num_layers", "hidden_size", "num_heads", "intermediate_size",
      "max_position_embeddings")})
  config.model.update(hidden_dropout=0.0, attention_dropout=0.0)
  config.data.update(max_seq_length=16, max_predictions_per_seq=3)
  config.train.global_batch_size = 8
  config.optimizer.warmup_steps = 0
  config.distill.update(hidden_weight=1.0, attention_weight=1.0, init_from_teacher=True)
  teacher, params, _ = distill.load_teacher(config, "/nonexistent")
  s = distill.setup(config, teacher)
  frozen = teacher_lib.place(params, teacher, s, 16)
  before = jax.tree.map(np.array, frozen)
  state = student_lib.replace_params(s.init(0), student_lib.from_teacher_layers(
      params, teacher.cfg, s.model.cfg), s)
  batch = s.global_batch(_batch(np.random.default_rng(0), 8, 16, 3, 128))
  with s.context():
    state, metrics = s.step_fn(state, batch, jax.random.key(0), frozen)
    state, metrics2 = s.step_fn(state, batch, jax.random.key(0), frozen)
  assert float(metrics["kl_loss"]) < 1e-6
  assert float(metrics["hidden_loss"]) < 1e-10
  assert float(metrics["attention_loss"]) < 1e-10
  assert float(metrics["loss"]) == pytest.approx(float(metrics["hard_loss"]), rel=1e-6)
  assert float(metrics2["kl_loss"]) > 1e-6  # the student moved; the teacher did not
  assert all(jax.tree.leaves(jax.tree.map(
      lambda a, b: np.array_equal(a, np.asarray(b)), before, frozen)))


def _distill_config(data_dir, teacher, steps):
  c = configs.get_config("tiny")
  c.teacher = teacher
  c.data.update(max_documents=200, num_shards=4, num_streams=4, prepared_dir=data_dir)
  c.model.update(num_layers=1, hidden_size=16, num_heads=2, intermediate_size=32)
  c.train.update(global_batch_size=8, num_steps=steps, log_every=1, checkpoint_every=2,
                 eval_every=0)
  c.optimizer.warmup_steps = 1
  c.distill.update(hidden_weight=1.0, attention_weight=1.0)
  return c


@pytest.mark.slow
def test_distillation_resumes_bitwise_and_checks_vocabularies(tiny_data_dir, tmp_path,
                                                              synthetic_teacher):
  # A teacher on the shared prepared data (its 8,000-piece tokenizer beside it).
  teacher = str(tmp_path / "teacher")
  t = pretrain_configs.get_config("tiny")
  t.data.update(max_documents=200, num_shards=4, num_streams=4, prepared_dir=tiny_data_dir)
  t.model.update(num_layers=2, hidden_size=32, num_heads=2, intermediate_size=64)
  t.train.update(global_batch_size=8, num_steps=2, eval_every=0)
  pretrain.run(t, teacher)
  spm = tokenizer.find(os.path.join(os.path.dirname(tiny_data_dir), "prep"))
  tokenizer.copy_into(spm, teacher)

  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  distill.run(_distill_config(tiny_data_dir, teacher, 4), straight)
  distill.run(_distill_config(tiny_data_dir, teacher, 2), resumed)
  distill.run(_distill_config(tiny_data_dir, teacher, 4), resumed)
  a, b = (bert_jax.from_pretrained(w) for w in (straight, resumed))
  assert "hidden_projection" not in a.params  # read back as a plain BERT
  assert all(jax.tree.leaves(jax.tree.map(np.array_equal, a.params, b.params)))
  rows = [json.loads(l) for l in open(os.path.join(resumed, "metrics.jsonl"))]
  assert [r["step"] for r in rows if "kl_loss" in r] == [1, 2, 3, 4]
  assert all(r["kl_loss"] > 0 and r["hidden_loss"] > 0 for r in rows if "kl_loss" in r)
  # The student took the teacher's tokenizer.
  assert tokenizer.find(resumed) and open(tokenizer.find(resumed), "rb").read() == open(
      spm, "rb").read()

  other = _distill_config(tiny_data_dir, teacher, 1)
  other.model.vocab_size = 4000
  with pytest.raises(InputError, match=r"teacher=.* has a vocabulary of 8000 tokens, the "
                                       r"student 4000"):
    distill.run(other, str(tmp_path / "other"))
  # A workdir already holding another tokenizer (the synthetic one).
  tokenizer.copy_into(tokenizer.find(synthetic_teacher), str(tmp_path / "other2"))
  with pytest.raises(InputError, match=r"is another vocabulary than teacher="):
    distill.run(_distill_config(tiny_data_dir, teacher, 1), str(tmp_path / "other2"))


@pytest.mark.slow
def test_task_distillation_learns_from_the_teacher(synthetic_teacher, tmp_path):
  rows = lambda n, seed: st.classification_rows(n, seed, colors=("red", "blue"))
  train = st.write_jsonl(tmp_path / "train.jsonl", rows(640, 1))
  test = st.write_jsonl(tmp_path / "test.jsonl", rows(128, 2))
  ft = finetune_configs.get_config("classification")
  ft.init_from, ft.train_file, ft.eval_file = synthetic_teacher, train, test
  ft.data.max_seq_length = 32
  ft.optimizer.learning_rate = 3e-3
  ft.train.epochs = 6
  teacher = str(tmp_path / "teacher")
  teacher_result = finetune.run(ft, teacher)

  c = configs.get_config("classification")
  c.init_from, c.teacher = synthetic_teacher, teacher
  c.train_file, c.eval_file = train, test
  c.data.max_seq_length = 32
  c.optimizer.learning_rate = 3e-3
  c.train.update(epochs=6, log_every=1)
  c.distill.hard_weight = 0.0  # the teacher's logits alone
  student = str(tmp_path / "student")
  result = finetune.run(c, student)
  assert result["teacher"] == teacher
  # Measured: the teacher and its student both reach 1.0 at epoch 3.
  assert teacher_result["best"]["accuracy"] >= 0.95, teacher_result["epochs"]
  assert result["best"]["accuracy"] >= 0.95, result["epochs"]
  rows = [json.loads(l) for l in open(os.path.join(student, "metrics.jsonl"))]
  kl = [r["kl_loss"] for r in rows if "kl_loss" in r]
  assert kl[-1] < kl[0] / 2, kl
  assert len(finetune.predict(student, test, str(tmp_path / "pred.jsonl"))) == 128

  tagging = configs.get_config("tagging")
  tagging.init_from, tagging.teacher = synthetic_teacher, teacher
  tagging.train_file = tagging.eval_file = st.write_conll(
      tmp_path / "tags.conll", st.tagging_sentences(8, 0))
  with pytest.raises(InputError, match="was fine-tuned for classification, not task=tagging"):
    finetune.run(tagging, str(tmp_path / "tagging"))
  c.teacher = synthetic_teacher
  with pytest.raises(InputError, match="holds no fine-tuned model"):
    finetune.run(c, str(tmp_path / "student2"))
  # Pretraining distillation needs the MLM head a fine-tuned teacher no longer has.
  pre = configs.get_config("tiny")
  pre.teacher = teacher
  with pytest.raises(InputError, match="fine-tuned workdir, whose MLM head is gone"):
    distill.run(pre, str(tmp_path / "pretraining"))
