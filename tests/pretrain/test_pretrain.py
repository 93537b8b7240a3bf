"""End to end on the embedded corpus: prepare, train, checkpoint, resume, reload."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bert_jax
from bert_jax.pretrain import loop as pretrain
from bert_jax.data import tokenizer
from bert_jax.errors import InputError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _config(tiny_config, num_steps):
  config = tiny_config.copy_and_resolve_references()
  config.unlock()
  config.data.max_documents = 400
  config.data.num_shards = 4
  config.data.num_streams = 4
  config.train.global_batch_size = 16
  config.train.num_steps = num_steps
  config.train.log_every = 5
  config.train.checkpoint_every = 15
  config.train.keep_checkpoints = 2
  config.optimizer.warmup_steps = 5
  return config


def _metrics(workdir):
  """The training rows (evaluation rows have their own keys)."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [r for r in map(json.loads, f) if "loss" in r]


@pytest.mark.slow
def test_pretrain_learns_checkpoints_and_resumes(tmp_path, tiny_config):
  workdir = str(tmp_path)
  pretrain.run(_config(tiny_config, 30), workdir)
  rows = _metrics(workdir)
  assert [r["step"] for r in rows] == [1, 5, 10, 15, 20, 25, 30]
  for key in ("loss", "mlm_accuracy", "nsp_accuracy", "learning_rate", "tokens_per_sec",
              "mfu"):
    assert all(np.isfinite(r[key]) for r in rows), key
  assert rows[-1]["loss"] < rows[0]["loss"] - 0.3, [r["loss"] for r in rows]
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["15", "30"]
  assert os.listdir(tmp_path / "tensorboard")

  # The same command again, asked for more steps, continues from step 30.
  pretrain.run(_config(tiny_config, 40), workdir)
  steps = [r["step"] for r in _metrics(workdir)]
  assert steps[len(rows):] == [31, 35, 40]
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["30", "40"]  # keeps the last 2

  model, params, tok = bert_jax.from_pretrained(workdir)
  assert isinstance(tok, tokenizer.SentencePieceTokenizer)
  ids = jnp.array([[2, 10, 11, 12, 3, 13, 14, 3]], jnp.int32)
  out = model.apply({"params": params}, ids, token_type_ids=jnp.zeros_like(ids),
                    attention_mask=jnp.ones_like(ids), deterministic=True)
  assert out["mlm_logits"].shape == (1, 8, tiny_config.model.vocab_size)
  assert out["nsp_logits"].shape == (1, 2)
  params_30 = bert_jax.from_pretrained(workdir, step=30).params
  changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), params, params_30)
  assert any(jax.tree_util.tree_leaves(changed))

  # Continued pretraining in a new workdir from these params, fresh optimizer state.
  warm = _config(tiny_config, 5)
  warm.init_from = workdir
  pretrain.run(warm, str(tmp_path / "warm"))
  assert ((tmp_path / "warm" / "tokenizer" / "spm.model").read_bytes()
          == (tmp_path / "tokenizer" / "spm.model").read_bytes())
  first = _metrics(str(tmp_path / "warm"))[0]
  assert first["step"] == 1 and first["loss"] < rows[0]["loss"] - 0.3

  # A checkpoint of another shape is refused with the mismatching names.
  other = _config(tiny_config, 5)
  other.init_from = workdir
  other.model.intermediate_size = 256
  with pytest.raises(InputError, match=r"layer_0.*intermediate.*kernel.*\(128, 512\) vs model \(128, 256\)"):
    pretrain.run(other, str(tmp_path / "other"))
  other.init_from = str(tmp_path / "nothing-here")
  with pytest.raises(InputError, match="does not exist"):
    pretrain.run(other, str(tmp_path / "other2"))
  # A source without any tokenizer would get a mismatching new one: refused.
  (tmp_path / "no-tokenizer").mkdir()
  other.init_from = str(tmp_path / "no-tokenizer")
  with pytest.raises(InputError, match=r"has no tokenizer \(spm.model or vocab.txt\)"):
    pretrain.run(other, str(tmp_path / "other3"))


def _cli(*args, cwd):
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
  return subprocess.run([sys.executable, "-m", "bert_jax", *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_prepare_command_on_the_embedded_corpus(tmp_path):
  result = _cli("prepare", f"--config={REPO}/configs/pretrain.py:tiny",
                f"--workdir={tmp_path}", "--config.data.max_documents=120",
                "--config.data.eval_documents=20", "--config.data.num_shards=2", cwd=tmp_path)
  assert result.returncode == 0, result.stderr[-2000:]
  stats = json.loads((tmp_path / "data" / "stats.json").read_text())
  assert stats["documents"] == 100 and stats["examples"] > 100
  assert stats["eval_documents"] == 20 and stats["eval_examples"] > 20
  assert sorted(os.listdir(tmp_path / "data")) == [
      "eval.tfrecord", "shard-00000-of-00002.tfrecord", "shard-00001-of-00002.tfrecord",
      "stats.json"]
  assert (tmp_path / "tokenizer" / "spm.model").exists()
