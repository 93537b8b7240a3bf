"""`bert-jax export`: a model as a serving artifact that runs without bert_jax.

OUTPUT/model.stablehlo is a serialized `jax.export.Exported` of one function,
(input_ids, token_type_ids, attention_mask) int32 [batch, seq_len] -> a dict of
outputs, with the params baked in as constants: the file alone is the model, and a
serving process needs only jax and numpy to run it (bert_jax/inference/serving.py).
OUTPUT/signature.json names the inputs and outputs with their shapes and dtypes, the
task and its labels; the tokenizer goes beside them (OUTPUT/tokenizer/), where
`tokenizer.find` looks.

What is exported: a fine-tuned workdir's task model (its best params; output
"logits", float32 [batch, labels] or per token [batch, seq_len, labels]; a CRF
tagger's "potentials" [batch, seq_len, labels + 1, labels], row 0 a tag's score as
the first, row 1 + i after tag i; a similarity model's "embedding", with its
pooling in the signature), or any
other model directory's encoder (output "embedding", the L2-normalised [CLS] final
hidden state, float32 [batch, hidden], as `encode` with pooling "cls"). The batch is
fixed or symbolic ("b": one artifact for every batch size); seq_len is fixed.
dtype "bfloat16" casts the weights and runs the compute in bfloat16; outputs stay
float32. "int8" stores the dense kernels as per-channel int8 (quantize.py), dequantized
inside the graph, and computes in INT8_COMPUTE with the other weights cast to it.
Asked for, OUTPUT/saved_model/ is a TensorFlow SavedModel of the same module
(data/tf_saved_model.py: signature "serving_default", the inputs by name).
"""

import dataclasses
import json
import logging
import os

from etils import epath
import jax
from jax import export as jax_export
import jax.numpy as jnp
import numpy as np

from bert_jax.data import tokenizer as tokenizer_lib
from bert_jax.errors import InputError
from bert_jax.finetune import loop as finetune, step as finetune_step
from bert_jax.inference import index, quantize, serving
from bert_jax.model import task_model
from bert_jax.runtime import checkpoints, outputs

log = logging.getLogger(__name__)

MODEL_FILE, SIGNATURE_FILE = serving.MODEL_FILE, serving.SIGNATURE_FILE
DTYPES = ("float32", "bfloat16", "int8")
# int8's compute dtype: bf16 dots run faster than float32 on CPUs with AVX512-BF16
# (matmul.py) and on accelerators. A BERT-base encoder at batch 8 x 128 on 2 Zen 4
# cores: 310 ms a call, 520 ms with float32 compute.
INT8_COMPUTE = "bfloat16"
INPUTS = finetune_step.MODEL_KEYS  # the order the exported function takes them in
SYMBOLIC_BATCH = "b"
SAVED_MODEL_DIR = "saved_model"


def _with_dtype(model, params, dtype: str):
  """The model computing in `dtype` and its float params cast to it (ints kept);
  "int8": its dense kernels quantized from float32 (scales kept float32), the rest
  cast to INT8_COMPUTE."""
  compute = INT8_COMPUTE if dtype == "int8" else dtype
  cfg = dataclasses.replace(model.cfg, dtype=compute, param_dtype=compute)
  if dtype == "int8":
    params = quantize.quantize(params)
  keep = lambda x: quantize.is_int8(x) or not jnp.issubdtype(x.dtype, jnp.floating)
  cast = lambda x: x if keep(x) else x.astype(compute)
  return model.clone(cfg=cfg), jax.tree.map(cast, params, is_leaf=quantize.is_int8)


def _task_model(workdir: str):
  """(model, params, tokenizer, forward, signature fields) of a fine-tuned workdir:
  its task model with the best epoch's params."""
  task, labels, s, params, tok, _ = finetune.restore(workdir)
  name = next(k for k, v in finetune.TASKS.items() if v is task)
  source = {"workdir": os.path.abspath(workdir), "fingerprint": index.fingerprint(params)}

  # A similarity model's output is its (pooled, normalised) sentence embedding; a CRF
  # tagger's, its potentials (decoded by Viterbi, tagging.viterbi).
  output = ("embedding" if name == "similarity" else "potentials"
            if isinstance(s.model, task_model.BertCRFTagger) else "logits")
  pooling = getattr(s.model, "pooling", None)

  def forward(model, params, *inputs):
    return {output: finetune_step.logits(model, params, dict(zip(INPUTS, inputs)))}

  return s.model, params, tok, forward, {
      "task": name, "labels": labels, "model": source,
      **({"pooling": pooling} if pooling else {})}


def _encoder(workdir: str):
  """The same of any other model directory (its latest checkpoint): the encoder's
  [CLS] embedding."""
  loaded, source = index.load_model(workdir)

  def forward(model, params, input_ids, token_type_ids, attention_mask):
    sequence, _ = model.apply({"params": params}, input_ids, token_type_ids,
                              attention_mask, deterministic=True, method="encode")
    return {"embedding": task_model.pool(sequence, attention_mask, "cls")}

  return (loaded.model, loaded.params, loaded.tokenizer, forward,
          {"task": "encoder", "labels": None, "pooling": "cls", "model": source})


def _check(workdir: str, output_dir: str, batch: int | None, dtype: str) -> None:
  if not epath.Path(workdir).is_dir():
    raise InputError(f"--workdir {workdir} does not exist or is not a directory")
  if dtype not in DTYPES:
    raise InputError(f"export dtype {dtype!r}; choose one of {list(DTYPES)}")
  if batch is not None and batch < 0:
    raise InputError(f"export batch={batch} must be positive (0 or None: symbolic)")
  outputs.check_new_dir(output_dir, "--output")


def export(workdir: str, output_dir: str, batch: int | None = None, seq_len: int = 128,
           dtype: str = "float32", platforms: tuple[str, ...] | None = None,
           saved_model: bool = False) -> dict:
  """Writes the serving artifact of `workdir` into `output_dir` (new or empty);
  returns the signature. batch None or 0: symbolic. platforms: what to compile for
  ("cpu", "cuda", "tpu"; several make one multi-platform artifact), by default this
  machine's backend. saved_model: also SAVED_MODEL_DIR, a TF SavedModel of it."""
  _check(workdir, output_dir, batch, dtype)
  if saved_model:
    try:  # TensorFlow and jax2tf are optional: without them, say so before writing.
      from bert_jax.data import tf_saved_model
    except ImportError as e:
      raise InputError(f"--saved_model needs TensorFlow and jax.experimental.jax2tf: "
                       f"{e}") from e
  is_finetuned = epath.Path(workdir, checkpoints.FINETUNE_FILE).exists()
  model, params, tok, forward, fields = (_task_model if is_finetuned else _encoder)(
      workdir)
  if not 3 <= seq_len <= model.cfg.max_position_embeddings:
    raise InputError(f"max_length={seq_len} must be in [3, "
                     f"{model.cfg.max_position_embeddings}] (the model's positions)")
  # On the host: closed over below, they become constants of the exported module.
  model, params = _with_dtype(model, jax.device_get(params), dtype)
  params = jax.tree.map(np.asarray, params)
  dim = jax_export.symbolic_shape(SYMBOLIC_BATCH)[0] if not batch else batch
  spec = jax.ShapeDtypeStruct((dim, seq_len), jnp.int32)
  # int8 kernels are dequantized inside the function: the module keeps them as int8.
  fn = jax.jit(lambda *inputs: forward(
      model, quantize.dequantize(params, model.cfg.dtype), *inputs))
  exported = jax_export.export(fn, platforms=platforms)(*(spec,) * len(INPUTS))

  out = epath.Path(output_dir)
  out.mkdir(parents=True, exist_ok=True)
  serialized = exported.serialize()
  (out / MODEL_FILE).write_bytes(bytes(serialized))
  if saved_model:
    # exported.call: the SavedModel wraps this very module, not a second lowering.
    tf_saved_model.write(exported.call, exported.in_avals, INPUTS,
                         str(out / SAVED_MODEL_DIR), exported.platforms)
  shape = lambda s: [d if isinstance(d, int) else str(d) for d in s]
  signature = {
      "inputs": [{"name": k, "shape": shape(spec.shape), "dtype": "int32"}
                 for k in INPUTS],
      "outputs": [{"name": k, "shape": shape(a.shape), "dtype": str(a.dtype)}
                  for k, a in exported.out_tree.unflatten(exported.out_avals).items()],
      **fields,
      "dtype": dtype,
      "platforms": list(exported.platforms),
      "tokenizer": os.path.relpath(tokenizer_lib.copy_into(tok.files[0], output_dir),
                                   output_dir) if tok and tok.files else None,
      "pad_id": tok.pad_id if tok else None,
      **({"saved_model": SAVED_MODEL_DIR} if saved_model else {}),
  }
  (out / SIGNATURE_FILE).write_text(json.dumps(signature, indent=2, ensure_ascii=False))
  log.info("%s (%s, batch %s, seq_len %d, %.1f MiB) -> %s", fields["task"], dtype,
           batch or SYMBOLIC_BATCH, seq_len, len(serialized) / 2**20, output_dir)
  return signature
