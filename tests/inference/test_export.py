"""Serving artifacts: a tiny fine-tuned classifier (float32, symbolic batch, from
Python; bfloat16, batch 3, through the CLI) and a pretrain workdir's encoder, run in a
fresh process that cannot import bert_jax's model code or flax, against the
in-process model; and a directory that is no model workdir."""

import functools
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import bert_jax
from bert_jax.errors import InputError
from bert_jax.finetune import loop as finetune, step as finetune_step
from bert_jax.inference import encode as encode_lib, export
from tests.inference.test_inference import TEXTS, tuned, workdir  # noqa: F401
from tests.test_main import run_cli

SEQ_LEN = 16
# bf16 weights and compute against the f32 model's logits: measured 2.6e-4 at most
# on the tiny classifier (its logits are at most 0.066 in size: bf16's 8-bit mantissa
# is 0.4 % of that); the bound leaves 8x room for another CPU's rounding.
BF16_ATOL = 2e-3

# Runs in a fresh interpreter: flax, bert_jax.model and the training code cannot be
# imported there, so the artifact must run on jax.export alone.
_SERVE = """
import importlib.abc, os, sys
import numpy as np

BLOCKED = ("flax", "orbax", "tensorflow", "bert_jax.model", "bert_jax.finetune",
           "bert_jax.interop", "bert_jax.runtime")

class Block(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path, target=None):
    if name.startswith(BLOCKED):
      raise ImportError(f"{name} is blocked")

sys.meta_path.insert(0, Block())
from bert_jax.inference import serving

inputs, out = np.load(sys.argv[1]), {}
for name in sys.argv[3:]:
  model = serving.load(name)
  rows = int(sys.argv[2]) if model.signature["inputs"][0]["shape"][0] == "b" else None
  for n in ([1, rows] if rows else [model.signature["inputs"][0]["shape"][0]]):
    got = model(*(inputs[k][:n] for k in ("input_ids", "token_type_ids",
                                          "attention_mask")))
    for k, v in got.items():
      out[f"{os.path.basename(name)}:{n}:{k}"] = v
np.savez(sys.argv[1] + ".out.npz", **out)
ours = sorted(m for m in sys.modules if m.startswith(("bert_jax", "flax")))
assert ours == ["bert_jax", "bert_jax.inference", "bert_jax.inference.serving"], ours
"""


def _serve(inputs: dict, tmp_path, rows: int, *dirs: str) -> dict:
  """{f"{dir's name}:{batch}:{output}": array} from the artifacts in `dirs`, run in a fresh
  process on the first 1 and `rows` rows (symbolic batch) or their own batch."""
  path = str(tmp_path / "inputs.npz")
  np.savez(path, **inputs)
  done = subprocess.run([sys.executable, "-c", _SERVE, path, str(rows), *dirs],
                        capture_output=True, text=True, check=False,
                        cwd=os.path.dirname(os.path.dirname(bert_jax.__file__)))
  assert done.returncode == 0, done.stderr[-3000:]
  return dict(np.load(path + ".out.npz"))


@pytest.fixture(scope="module")
def inputs(workdir):  # noqa: F811
  """The first texts tokenized, padded to SEQ_LEN (rows padded by different amounts)."""
  arrays = encode_lib.featurize(bert_jax.from_pretrained(workdir).tokenizer, TEXTS[:3],
                                SEQ_LEN)
  return {k: arrays[k] for k in export.INPUTS}


def test_exported_classifier_and_encoder_match_the_model(workdir, tuned, inputs,  # noqa: F811
                                                         tmp_path, capsys):
  f32, bf16, enc = (str(tmp_path / d) for d in ("f32", "bf16", "enc"))
  signature = export.export(tuned, f32, seq_len=SEQ_LEN)
  code, err = run_cli("export", "--workdir", tuned, "--output", bf16, "--export_dtype",
                      "bfloat16", "--export_batch", "3", "--max_length", str(SEQ_LEN),
                      capsys=capsys)
  assert code == 0, err
  export.export(workdir, enc, batch=3, seq_len=SEQ_LEN)
  labels = ["blue", "green", "none", "red"]
  assert signature["inputs"] == [{"name": k, "shape": ["b", SEQ_LEN], "dtype": "int32"}
                                 for k in export.INPUTS]
  assert signature["outputs"] == [{"name": "logits", "shape": ["b", 4],
                                   "dtype": "float32"}]
  assert (signature["task"], signature["labels"], signature["dtype"]) == (
      "classification", labels, "float32")
  on_disk = json.loads((tmp_path / "bf16" / export.SIGNATURE_FILE).read_text())
  assert on_disk["inputs"][0]["shape"] == [3, SEQ_LEN] and on_disk["dtype"] == "bfloat16"
  for d in (f32, bf16, enc):
    assert os.path.exists(os.path.join(d, "tokenizer", "spm.model"))
  # Weights are constants of the module: bf16 halves them (tiny: 148 and 85 KB).
  size = lambda d: os.path.getsize(os.path.join(d, export.MODEL_FILE))
  assert size(bf16) < 0.7 * size(f32)

  _, _, s, params, _, _ = finetune.restore(tuned)
  logits = np.asarray(jax.jit(functools.partial(finetune_step.logits, s.model))(
      jax.device_get(params), inputs))
  served = _serve(inputs, tmp_path, 3, f32, bf16, enc)
  for n in (1, 3):  # one artifact, two batch sizes
    np.testing.assert_allclose(served[f"f32:{n}:logits"], logits[:n], rtol=0,
                               atol=1e-5)
  drift = np.abs(served["bf16:3:logits"] - logits).max()
  assert served["bf16:3:logits"].dtype == np.float32 and 0 < drift <= BF16_ATOL
  # The encoder artifact gives `encode`'s CLS embeddings of the same texts.
  want = bert_jax.encode(*bert_jax.from_pretrained(workdir), TEXTS[:3],
                         max_length=SEQ_LEN)
  np.testing.assert_allclose(served["enc:3:embedding"], want, rtol=0, atol=1e-5)


def test_bad_input(tmp_path, tuned, capsys):  # noqa: F811
  (tmp_path / "notes").mkdir()
  with pytest.raises(InputError, match="notes has no config.json: not a pretrain"):
    export.export(str(tmp_path / "notes"), str(tmp_path / "out"))
  code, err = run_cli("export", "--workdir", str(tmp_path / "notes"), "--output",
                      str(tmp_path / "out"), capsys=capsys)
  assert code == 2 and err.count("\n") == 1 and err.startswith("error: --workdir"), err
  with pytest.raises(InputError, match="max_length=200 must be in"):
    export.export(tuned, str(tmp_path / "out"), seq_len=200)
  with pytest.raises(InputError, match="export dtype 'int8'"):
    export.export(tuned, str(tmp_path / "out"), dtype="int8")
  code, err = run_cli("export", "--workdir", tuned, capsys=capsys)
  assert code == 2 and "export needs --workdir and --output" in err, err
