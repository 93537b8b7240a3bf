"""Variables of a TensorFlow checkpoint (Google's TF1 BERT releases), as numpy.

Reading TF's checkpoint format needs TensorFlow, which only bert_jax.data imports;
interop.convert maps the names."""

import os

import numpy as np
import tensorflow as tf

from bert_jax.errors import InputError


def read_variables(directory: str, skip: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
  """name -> value of the latest (or the only) checkpoint in `directory`, leaving out
  names containing any of `skip` (optimizer slots)."""
  ckpt = tf.train.latest_checkpoint(directory)
  if ckpt is None:
    cands = sorted(f[:-len(".index")] for f in os.listdir(directory)
                   if f.endswith(".index"))
    if not cands:
      raise InputError(f"{directory} has no TF checkpoint (bert_model.ckpt.index)")
    ckpt = os.path.join(directory, cands[0])
  reader = tf.train.load_checkpoint(ckpt)
  return {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()
          if not any(s in n for s in skip)}
