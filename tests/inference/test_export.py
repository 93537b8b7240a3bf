"""Serving artifacts: a tiny fine-tuned classifier (float32 and int8, symbolic batch,
from Python; bfloat16, batch 3, through the CLI) and a pretrain workdir's encoder,
run in a fresh process that cannot import bert_jax's model code or flax, against the
in-process model; the float32 one's TF SavedModel, run in a fresh process without
jax; int8 kernels on their own; and a directory that is no model workdir."""

import collections
import functools
import json
import os
import re
import subprocess
import sys

import jax
from jax import export as jax_export
import numpy as np
import pytest

import bert_jax
from bert_jax.errors import InputError
from bert_jax.finetune import loop as finetune, step as finetune_step
from bert_jax.inference import encode as encode_lib, export, quantize
from tests.inference.test_inference import TEXTS, tuned, workdir  # noqa: F401
from tests.test_main import run_cli

SEQ_LEN = 16
# bf16 weights and compute against the f32 model's logits: measured 2.6e-4 at most
# on the tiny classifier (its logits are at most 0.066 in size: bf16's 8-bit mantissa
# is 0.4 % of that); the bound leaves 8x room for another CPU's rounding.
BF16_ATOL = 2e-3
# int8 kernels with bf16 compute against the same: measured 2.0e-4 at most (1.2e-4 on
# the first row alone), no more than bf16's; the bound leaves 5x room.
INT8_ATOL = 1e-3

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


# Runs the SavedModel in a fresh interpreter that cannot import jax or bert_jax: TF
# alone serves it.
_SERVE_TF = """
import importlib.abc, sys
import numpy as np

class Block(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path, target=None):
    if name.split(".")[0] in ("jax", "jaxlib", "flax", "bert_jax"):
      raise ImportError(f"{name} is blocked")

sys.meta_path.insert(0, Block())
import tensorflow as tf

serve = tf.saved_model.load(sys.argv[2]).signatures["serving_default"]
inputs = np.load(sys.argv[1])
out = {str(n): serve(**{k: tf.constant(inputs[k][:n]) for k in
                        ("input_ids", "token_type_ids", "attention_mask")})["logits"]
       for n in (1, 3)}
np.savez(sys.argv[1] + ".tf.npz", **{k: v.numpy() for k, v in out.items()})
"""


def _serve_tf(inputs: dict, tmp_path, directory: str) -> dict:
  """{"1": logits, "3": logits} of the SavedModel at `directory` on the first 1 and 3
  rows, run in a fresh process."""
  path = str(tmp_path / "inputs.npz")
  np.savez(path, **inputs)
  done = subprocess.run([sys.executable, "-c", _SERVE_TF, path, directory],
                        capture_output=True, text=True, check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  return dict(np.load(path + ".tf.npz"))


# A constant that the module's text prints in hex (the large ones: weights): its bytes
# and element type.
_HEX_CONSTANT = re.compile(r'constant dense<"0x([0-9A-F]*)"> : tensor<[0-9x]*x(\w+)>')


def _weight_bytes(directory: str) -> collections.Counter:
  """{element type: bytes} of an artifact's weights."""
  with open(os.path.join(directory, export.MODEL_FILE), "rb") as f:
    text = jax_export.deserialize(bytearray(f.read())).mlir_module()
  found = collections.Counter()
  for blob, dtype in _HEX_CONSTANT.findall(text):
    found[dtype] += len(blob) // 2
  return found


@pytest.fixture(scope="module")
def inputs(workdir):  # noqa: F811
  """The first texts tokenized, padded to SEQ_LEN (rows padded by different amounts)."""
  arrays = encode_lib.featurize(bert_jax.from_pretrained(workdir).tokenizer, TEXTS[:3],
                                SEQ_LEN)
  return {k: arrays[k] for k in export.INPUTS}


def test_exported_classifier_and_encoder_match_the_model(workdir, tuned, inputs,  # noqa: F811
                                                         tmp_path, capsys):
  f32, bf16, i8, enc = (str(tmp_path / d) for d in ("f32", "bf16", "i8", "enc"))
  signature = export.export(tuned, f32, seq_len=SEQ_LEN, saved_model=True)
  assert export.export(tuned, i8, seq_len=SEQ_LEN, dtype="int8")["dtype"] == "int8"
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
  assert signature["saved_model"] == "saved_model" and "saved_model" not in on_disk
  for d in (f32, bf16, enc):
    assert os.path.exists(os.path.join(d, "tokenizer", "spm.model"))
  # Weights are constants of the module: bf16 halves them (tiny: 148 and 85 KB).
  size = lambda d: os.path.getsize(os.path.join(d, export.MODEL_FILE))
  assert size(bf16) < 0.7 * size(f32)
  # The SavedModel holds one copy of the module (156 KB beside 146): saved_model.pb
  # would double if its function were traced twice.
  saved = sum(os.path.getsize(os.path.join(d, f))
              for d, _, files in os.walk(os.path.join(f32, "saved_model")) for f in files)
  assert saved < 1.2 * size(f32), (saved, size(f32))
  # int8: the 14 dense kernels (6 a layer, pooler, classifier: 2 x (4 x 32 x 32 +
  # 2 x 32 x 64) + 32 x 32 + 32 x 4 weights) are int8 constants, a byte a weight, and
  # the embeddings bf16: a third of float32's weight bytes (34 and 103 KB). The file
  # (84 KB) is mostly module code at this size; on BERT-base it is 3.3x smaller.
  weights = {d: _weight_bytes(d) for d in (f32, i8)}
  assert weights[i8]["i8"] == 17536, weights[i8]
  assert sum(weights[i8].values()) < 0.4 * sum(weights[f32].values())
  assert size(i8) < 0.7 * size(f32)

  _, _, s, params, _, _ = finetune.restore(tuned)
  logits = np.asarray(jax.jit(functools.partial(finetune_step.logits, s.model))(
      jax.device_get(params), inputs))
  served = _serve(inputs, tmp_path, 3, f32, bf16, i8, enc)
  in_tf = _serve_tf(inputs, tmp_path, os.path.join(f32, signature["saved_model"]))
  for n in (1, 3):  # one artifact, two batch sizes
    np.testing.assert_allclose(served[f"f32:{n}:logits"], logits[:n], rtol=0,
                               atol=1e-5)
    np.testing.assert_allclose(in_tf[str(n)], logits[:n], rtol=0, atol=1e-5)
  drift = np.abs(served["bf16:3:logits"] - logits).max()
  assert served["bf16:3:logits"].dtype == np.float32 and 0 < drift <= BF16_ATOL
  for n in (1, 3):
    drift = np.abs(served[f"i8:{n}:logits"] - logits[:n]).max()
    assert served[f"i8:{n}:logits"].dtype == np.float32 and 0 < drift <= INT8_ATOL
  # The encoder artifact gives `encode`'s CLS embeddings of the same texts.
  want = bert_jax.encode(*bert_jax.from_pretrained(workdir), TEXTS[:3],
                         max_length=SEQ_LEN)
  np.testing.assert_allclose(served["enc:3:embedding"], want, rtol=0, atol=1e-5)


def test_int8_kernels_have_one_scale_per_output_channel():
  rng = np.random.default_rng(0)
  normal = lambda *shape: rng.normal(size=shape).astype(np.float32)
  query = normal(8, 2, 4)  # [embed, heads, kv]: 8 input rows, 2 x 4 output channels
  query[:, 1, 2] = 0  # an all-zero channel stays zero
  params = {"query": {"kernel": query, "bias": normal(2, 4)},
            # scanned: [layers, heads, kv, embed], 3 x 8 channels
            "layers": {"out": {"kernel": normal(3, 2, 4, 8), "bias": normal(3, 8)}},
            "word_embeddings": {"embedding": normal(16, 8)}}
  q = quantize.quantize(params)
  assert q["word_embeddings"]["embedding"] is params["word_embeddings"]["embedding"]
  back = quantize.dequantize(q, np.float32)
  for path, in_axes, scale_shape in ((("query",), (0,), (1, 2, 4)),
                                     (("layers", "out"), (1, 2), (3, 1, 1, 8))):
    get = lambda tree, path=path: functools.reduce(dict.get, path, tree)["kernel"]
    kernel, got = get(params), get(q)
    assert got.values.dtype == np.int8 and got.scale.dtype == np.float32
    assert got.values.shape == kernel.shape and got.scale.shape == scale_shape
    # Each channel's largest weight is +-127 (the zero channel's 0); every weight
    # comes back within half a step.
    assert set(np.unique(np.abs(got.values).max(in_axes))) <= {0, 127}
    assert (np.abs(np.asarray(get(back)) - kernel) <= got.scale / 2 * (1 + 1e-6)).all()
  assert not q["query"]["kernel"].values[:, 1, 2].any()


def test_bad_input(tmp_path, tuned, capsys, monkeypatch):  # noqa: F811
  (tmp_path / "notes").mkdir()
  with pytest.raises(InputError, match="notes has no config.json: not a pretrain"):
    export.export(str(tmp_path / "notes"), str(tmp_path / "out"))
  code, err = run_cli("export", "--workdir", str(tmp_path / "notes"), "--output",
                      str(tmp_path / "out"), capsys=capsys)
  assert code == 2 and err.count("\n") == 1 and err.startswith("error: --workdir"), err
  with pytest.raises(InputError, match="max_length=200 must be in"):
    export.export(tuned, str(tmp_path / "out"), seq_len=200)
  with pytest.raises(InputError, match="export dtype 'int4'"):
    export.export(tuned, str(tmp_path / "out"), dtype="int4")
  code, err = run_cli("export", "--workdir", tuned, capsys=capsys)
  assert code == 2 and "export needs --workdir and --output" in err, err
  # Without TensorFlow (its module cannot import), --saved_model fails before writing.
  monkeypatch.delattr("bert_jax.data.tf_saved_model", raising=False)
  monkeypatch.setitem(sys.modules, "bert_jax.data.tf_saved_model", None)
  code, err = run_cli("export", "--workdir", tuned, "--output", str(tmp_path / "out"),
                      "--saved_model", capsys=capsys)
  assert code == 2 and err.count("\n") == 1, err
  assert err.startswith("error: --saved_model needs TensorFlow"), err
  assert not (tmp_path / "out").exists()
