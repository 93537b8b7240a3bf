"""Running an artifact of `bert-jax export` in a serving process.

    model = serving.load("exported/")
    out = model(input_ids, token_type_ids, attention_mask)  # {"logits": ...}

Imports only jax and numpy, never bert_jax's model code or flax: the artifact is a
serialized `jax.export.Exported` with its params inside, so this file can be copied
into a service that does not install bert_jax. Tokenize with the tokenizer file the
signature names (a SentencePiece model or WordPiece vocab beside it).
"""

import json
import os

import jax
from jax import export as jax_export
import numpy as np

# The artifact's files (export.py writes them under these names).
MODEL_FILE = "model.stablehlo"
SIGNATURE_FILE = "signature.json"


class Served:
  """The exported function, compiled once per input shape; `signature` is
  signature.json (inputs, outputs, task, labels, dtype)."""

  def __init__(self, exported: jax_export.Exported, signature: dict):
    self.signature = signature
    self._call = jax.jit(exported.call)

  def __call__(self, input_ids, token_type_ids, attention_mask) -> dict:
    """int32 [batch, seq_len] each -> {output name: numpy array}."""
    inputs = [np.asarray(x, np.int32) for x in (input_ids, token_type_ids,
                                                attention_mask)]
    return {k: np.asarray(v) for k, v in self._call(*inputs).items()}


def load(directory: str) -> Served:
  with open(os.path.join(directory, SIGNATURE_FILE), encoding="utf-8") as f:
    signature = json.load(f)
  with open(os.path.join(directory, MODEL_FILE), "rb") as f:
    exported = jax_export.deserialize(bytearray(f.read()))
  return Served(exported, signature)
