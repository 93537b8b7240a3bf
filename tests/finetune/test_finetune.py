"""Fine-tuning end to end on a tiny pretrained model: the encoder restored bit for bit,
each task learning a synthetic rule, best checkpoint, eval_results.json, predict, CLI
and bad input."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax.finetune import loop as finetune
from bert_jax.finetune.tasks import classification
from bert_jax.runtime import optimizer
from bert_jax.model import task_model
from bert_jax.configs import finetune as configs
from bert_jax.errors import InputError
from tests import synthetic_tasks as st

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
  """A pretrain workdir (tokenizer + checkpoint) of a 2-layer, 32-wide BERT."""
  workdir = str(tmp_path_factory.mktemp("pretrained"))
  st.pretrained_tiny(workdir)
  return workdir


def _config(task, pretrained, train_file, eval_file, **data):
  c = configs.get_config(task)
  c.init_from = pretrained
  c.train_file, c.eval_file = str(train_file), str(eval_file)
  c.data.update({"max_seq_length": 32, **data})
  c.optimizer.learning_rate = 3e-3
  c.train.batch_size = 32
  c.train.log_every = 100
  return c


def test_restoring_leaves_the_encoder_bit_identical(pretrained, tmp_path):
  config = _config("classification", pretrained, "", "")
  config.mesh.shape = (2, 2, 2)  # the encoder is resharded over fsdp and tensor too
  cfg, params, _ = finetune.load_pretrained(pretrained)
  model = task_model.BertWithHead(cfg, num_outputs=3)
  s = finetune.setup(config, model, classification, 10)
  state = finetune.initial_state(config, s, params)
  for name in params:
    if task_model.is_encoder(name):
      jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.params[name]),
                   jax.device_get(params[name]))
  assert sorted(k for k in state.params if not task_model.is_encoder(k)) == ["classifier"]
  assert state.params["classifier"]["kernel"].shape == (32, 3)

  # init_encoder=False: same shapes, random weights.
  config.init_encoder = False
  scratch = finetune.initial_state(config, s, params)
  assert not np.array_equal(scratch.params["layer_0"]["intermediate"]["kernel"],
                            params["layer_0"]["intermediate"]["kernel"])

  # A checkpoint without (part of) the encoder is refused, naming what is missing.
  partial = {k: v for k, v in params.items() if k not in ("embeddings", "layer_1")}
  with pytest.raises(InputError, match=r"no encoder weights for \['embeddings', 'layer_1'\]"):
    finetune.encoder_params(partial, s.abstract.params, "ckpt")


def test_adamw_and_lamb_with_warmup():
  opt = configs.get_config("classification").optimizer
  opt.learning_rate, opt.warmup_fraction, opt.weight_decay = 1e-2, 0.1, 0.0
  params = {"kernel": jnp.full((4, 4), 3.0), "bias": jnp.ones(4)}
  grads = {"kernel": jnp.full((4, 4), 0.5), "bias": jnp.full(4, 0.5)}
  updates = {}
  for name in ("adamw", "lamb"):
    opt.name = name
    tx, lr = optimizer.make(opt, 100)
    assert [float(lr(s)) for s in (0, 5, 10, 55, 100)] == pytest.approx(
        [0, 5e-3, 1e-2, 5e-3, 0])
    state = tx.init(params)
    for _ in range(11):  # through the warm-up, to the peak
      updates[name], state = tx.update(grads, state, params)
  # With constant gradients Adam's update is lr * g / |g| elementwise; LAMB rescales
  # the kernel's to lr * ||kernel|| (trust ratio) and leaves the bias alone.
  np.testing.assert_allclose(updates["adamw"]["kernel"], -1e-2, rtol=1e-4)
  np.testing.assert_allclose(jnp.linalg.norm(updates["lamb"]["kernel"]),
                             1e-2 * jnp.linalg.norm(params["kernel"]), rtol=1e-4)
  np.testing.assert_allclose(updates["lamb"]["bias"], updates["adamw"]["bias"])


@pytest.mark.slow
def test_classification_of_pairs_learns_the_rule_and_predicts(pretrained, tmp_path):
  def pairs(n, seed):
    rows = st.classification_rows(n, seed, colors=("red", "blue"))
    # The color sits in the first or the second segment: both must reach the model.
    return [{"text": r["text"], "text_pair": "w1 w2", "label": r["label"]} if i % 2
            else {"text": "w1 w2", "text_pair": r["text"], "label": r["label"]}
            for i, r in enumerate(rows)]
  train = st.write_jsonl(tmp_path / "train.jsonl", pairs(640, 1))
  test = st.write_jsonl(tmp_path / "test.jsonl", pairs(128, 2))
  config = _config("classification", pretrained, train, test)
  config.train.epochs = 10
  workdir = str(tmp_path / "run")
  results = finetune.run(config, workdir)
  assert results["best"]["accuracy"] >= 0.95, results["epochs"]
  assert results["new_params"] == {"['classifier']['bias']": [3],
                                   "['classifier']['kernel']": [32, 3]}
  on_disk = json.loads((tmp_path / "run" / finetune.RESULTS_FILE).read_text())
  assert on_disk["best"] == results["best"] and len(on_disk["epochs"]) == 10
  # Only the best epoch's checkpoint is kept.
  assert os.listdir(tmp_path / "run" / "checkpoints") == [str(results["best"]["step"])]

  rows = finetune.predict(workdir, test, str(tmp_path / "pred.jsonl"))
  written = [json.loads(l) for l in (tmp_path / "pred.jsonl").read_text().splitlines()]
  assert written == rows and len(rows) == 128
  gold = [json.loads(l)["label"] for l in open(test)]
  assert np.mean([r["label"] == g for r, g in zip(rows, gold)]) == pytest.approx(
      results["best"]["accuracy"])
  assert set(rows[0]["probabilities"]) == {"blue", "none", "red"}

  with pytest.raises(InputError, match="already holds a fine-tuned model"):
    finetune.run(config, workdir)


@pytest.mark.slow
def test_squad_v2_with_doc_stride_learns_spans_and_no_answer(pretrained, tmp_path):
  train = st.write_json(tmp_path / "train.json", st.squad_data(1000, 1, v2=True))
  test = st.write_json(tmp_path / "test.json", st.squad_data(128, 2, v2=True))
  config = _config("qa", pretrained, train, test, max_seq_length=40, doc_stride=16,
                   max_answer_length=4, version_2_with_negative=True)
  # 20 epochs: the decay then leaves the rate high long enough that every seed tried
  # (0, 1, 2) passes 99 % by epoch 14; with 12, seed 0 ends at 65 %.
  config.train.epochs = 20
  results = finetune.run(config, str(tmp_path / "run"))
  best = results["best"]
  assert best["exact_match"] >= 95 and best["f1"] >= 95, results["epochs"]
  assert best["no_answer_examples"] > 10 and best["no_answer_exact_match"] >= 95
  # Longer contexts needed more than one window.
  assert results["warnings"]["train"]["windows"] > 1000

  rows = finetune.predict(str(tmp_path / "run"), test, str(tmp_path / "pred.jsonl"))
  assert {r["id"] for r in rows} == {f"q{i}" for i in range(128)}


@pytest.mark.slow
def test_fine_tuning_from_a_hugging_face_export(pretrained, tmp_path):
  """init_from an HF directory (our export of the tiny workdir, tokenizer included):
  the same encoder arrives through safetensors, and the tokenizer travels on."""
  from bert_jax.interop import convert  # pylint: disable=g-import-not-at-top
  hf_dir = str(tmp_path / "hf")
  convert.convert(pretrained, "orbax", hf_dir, "hf")
  _, ours, _ = finetune.load_pretrained(pretrained)
  _, via_hf, tok = finetune.load_pretrained(hf_dir)
  for name in ours:
    if task_model.is_encoder(name):
      jax.tree.map(np.testing.assert_array_equal, jax.device_get(via_hf[name]),
                   jax.device_get(ours[name]))
  train = st.write_conll(tmp_path / "train.txt", st.tagging_sentences(64, 1))
  config = _config("tagging", hf_dir, train, train)
  config.train.epochs = 1
  finetune.run(config, str(tmp_path / "run"))
  copied = finetune.tokenizer.from_dir(str(tmp_path / "run"))
  assert copied.encode("bob jr rome") == tok.encode("bob jr rome")
  rows = finetune.predict(str(tmp_path / "run"), train, str(tmp_path / "pred.jsonl"))
  assert len(rows) == 64


def test_a_crf_tagger_learns_its_transitions(pretrained, tmp_path):
  train = st.write_conll(tmp_path / "train.txt", st.tagging_sentences(320, 1))
  test = st.write_conll(tmp_path / "test.txt", st.tagging_sentences(64, 2))
  config = _config("tagging", pretrained, train, test)
  config.tagging.crf = True
  config.train.epochs = 3
  results = finetune.run(config, str(tmp_path / "run"))
  assert results["best"]["f1"] >= 0.9 and results["best"]["entities"] > 50, results
  assert sorted(results["new_params"]) == [
      "['classifier']['bias']", "['classifier']['kernel']", "['crf_start']",
      "['crf_transitions']"]
  # I-PER follows only B-PER or I-PER in the data: the CRF learned to prefer that.
  _, labels, s, params, _, _ = finetune.restore(str(tmp_path / "run"))
  assert isinstance(s.model, task_model.BertCRFTagger)
  trans = np.asarray(params["crf_transitions"])
  i_per = labels.index("I-PER")
  assert trans[labels.index("B-PER"), i_per] > trans[labels.index("O"), i_per] + 0.05
  rows = finetune.predict(str(tmp_path / "run"), test, str(tmp_path / "pred.jsonl"))
  gold = st.tagging_sentences(64, 2)
  assert sum(r["labels"] == [t for _, t in g] for r, g in zip(rows, gold)) >= 50

  # Exported, it serves its potentials; decoded, they give predict's tags.
  from bert_jax.inference import export, serving  # pylint: disable=g-import-not-at-top
  from bert_jax.finetune.tasks import tagging  # pylint: disable=g-import-not-at-top
  signature = export.export(str(tmp_path / "run"), str(tmp_path / "served"), batch=64,
                            seq_len=32)
  assert signature["outputs"] == [{"name": "potentials", "shape": [64, 32, 5, 4],
                                   "dtype": "float32"}]
  examples = tagging.read(test)
  arrays, starts, _ = tagging.featurize(examples, finetune.tokenizer.from_dir(
      str(tmp_path / "run")), None, config.data)
  served = serving.load(str(tmp_path / "served"))(
      arrays["input_ids"], arrays["token_type_ids"], arrays["attention_mask"])
  assert [r["labels"] for r in tagging.predictions(
      examples, starts, served["potentials"], labels, None)] == [r["labels"] for r in rows]
  # Task distillation has no per-token distributions to match.
  from bert_jax.configs import distill  # pylint: disable=g-import-not-at-top
  student = distill.get_config("tagging")
  student.init_from, student.teacher = pretrained, str(tmp_path / "run")
  student.train_file = student.eval_file = train
  with pytest.raises(InputError, match="is a CRF tagger"):
    finetune.run(student, str(tmp_path / "student"))


def _cli(*args, cwd):
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
  return subprocess.run([sys.executable, "-m", "bert_jax", *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_tagging_through_the_cli(pretrained, tmp_path):
  train = st.write_conll(tmp_path / "train.txt", st.tagging_sentences(480, 1))
  test = st.write_conll(tmp_path / "test.txt", st.tagging_sentences(128, 2))
  workdir = tmp_path / "run"
  common = [f"--config.init_from={pretrained}", "--config.data.max_seq_length=32",
            "--config.optimizer.learning_rate=3e-3", "--config.train.epochs=4"]
  result = _cli("finetune", f"--config={REPO}/configs/finetune.py:tagging",
                f"--workdir={workdir}", f"--config.train_file={train}",
                f"--config.eval_file={test}", *common, cwd=tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "new task head" in result.stderr
  best = json.loads((workdir / finetune.RESULTS_FILE).read_text())["best"]
  assert best["f1"] >= 0.95 and best["entities"] > 100, best

  # Unlabelled input: one word a line.
  (tmp_path / "words.txt").write_text("bob\njr\nw3\nrome\n\nw1\n")
  result = _cli("predict", f"--workdir={workdir}", f"--input={tmp_path / 'words.txt'}",
                f"--output={tmp_path / 'pred.jsonl'}", cwd=tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  rows = [json.loads(l) for l in (tmp_path / "pred.jsonl").read_text().splitlines()]
  assert rows == [{"tokens": ["bob", "jr", "w3", "rome"],
                   "labels": ["B-PER", "I-PER", "O", "B-LOC"]},
                  {"tokens": ["w1"], "labels": ["O"]}]

  # A tag the training file never had: a one-line error naming file and line.
  (tmp_path / "odd.txt").write_text("bob B-PER\nx B-ORG\n")
  result = _cli("finetune", f"--config={REPO}/configs/finetune.py:tagging",
                f"--workdir={tmp_path / 'odd'}", f"--config.train_file={train}",
                f"--config.eval_file={tmp_path / 'odd.txt'}", *common, cwd=tmp_path)
  errors = [l for l in result.stderr.splitlines() if l.startswith("error:")]
  assert result.returncode == 2 and errors == [
      f"error: {tmp_path / 'odd.txt'}:2: label 'B-ORG' does not occur in the training "
      f"file (labels: O, B-LOC, B-PER, I-PER)"], result.stderr[-2000:]


def test_bad_sources_and_lengths(pretrained, tmp_path):
  config = _config("classification", pretrained, tmp_path / "t.jsonl", tmp_path / "t.jsonl")
  st.write_jsonl(tmp_path / "t.jsonl", st.classification_rows(8, 0))
  config.data.max_seq_length = 256  # the tiny model has 128 positions
  with pytest.raises(InputError, match="max_seq_length=256 exceeds the model's "
                                       "max_position_embeddings=128"):
    finetune.run(config, str(tmp_path / "a"))
  (tmp_path / "empty").mkdir()
  config.init_from = str(tmp_path / "empty")
  with pytest.raises(InputError, match="empty: .*not a pretrain workdir"):
    finetune.run(config, str(tmp_path / "b"))
  config.init_from = str(tmp_path / "missing")
  with pytest.raises(InputError, match="missing does not exist"):
    finetune.run(config, str(tmp_path / "c"))


def test_learning_rate_and_epochs_follow_the_model_size():
  from bert_jax.model import bert  # pylint: disable=g-import-not-at-top
  shape = lambda h: bert.BertConfig(vocab_size=8, hidden_size=h, num_layers=1,
                                    num_heads=1, intermediate_size=h)
  config = configs.get_config("tagging")
  assert (config.optimizer.learning_rate, config.train.epochs) == (0.0, 0)  # by size
  tiny = finetune.with_size_defaults(config, shape(128))
  assert (tiny.optimizer.learning_rate, tiny.train.epochs) == (1e-3, 10)
  assert finetune.size_defaults(256) == (1e-3, 6)
  assert finetune.size_defaults(512) == (3e-4, 4)
  assert finetune.size_defaults(768) == (5e-5, 3)
  assert finetune.size_defaults(1024) == (3e-5, 3)
  # Values the user set are kept; the config passed in is not changed.
  config.optimizer.learning_rate, config.train.epochs = 2e-5, 2
  base = finetune.with_size_defaults(config, shape(768))
  assert (base.optimizer.learning_rate, base.train.epochs) == (2e-5, 2)
  assert configs.get_config("tagging").train.epochs == 0


def test_fine_tuning_dropout_replaces_the_checkpoints():
  # A checkpoint pretrained without dropout (`:demo`, as Cramming) fine-tunes with the
  # config's (BERT's 0.1), whatever the task's model; 0 turns it off.
  from bert_jax.finetune.tasks import similarity, tagging  # pylint: disable=g-import-not-at-top
  from bert_jax.model import bert  # pylint: disable=g-import-not-at-top
  cfg = bert.BertConfig(vocab_size=8, hidden_size=8, num_layers=1, num_heads=1,
                        intermediate_size=8, hidden_dropout=0.0, attention_dropout=0.0)
  for task, name in ((tagging, "tagging"), (similarity, "similarity")):
    config = configs.get_config(name)
    assert config.dropout == 0.1
    model = finetune.make_model(task, cfg, ["O", "B-X"], config)
    assert (model.cfg.hidden_dropout, model.cfg.attention_dropout) == (0.1, 0.1)
    config.dropout = 0.0
    assert finetune.make_model(task, cfg, ["O", "B-X"], config).cfg.hidden_dropout == 0
  # Tagging without its CRF falls back to the loop's per-token linear head.
  model = finetune.make_model(tagging, cfg, ["O", "B-X"], configs.get_config("tagging"))
  assert type(model) is task_model.BertWithHead and model.per_token
