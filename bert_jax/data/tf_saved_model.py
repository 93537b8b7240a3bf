"""A jax function as a TensorFlow SavedModel with a `serving_default` signature, for
TF Serving and other TensorFlow runtimes.

jax2tf (native serialization, the only kind it has left) puts the function's StableHLO
into one XlaCallModule op rather than re-expressing it in TF ops, so the SavedModel
computes exactly what the jax.export artifact does; closed-over constants (the
weights) stay constants of that module. Writing needs TensorFlow, which only
bert_jax.data imports; inference/export.py calls it."""

from typing import Callable, Sequence

import jax
from jax.experimental import jax2tf
import tensorflow as tf

from bert_jax.data import input_pipeline

SIGNATURE = "serving_default"


def write(fn: Callable, input_specs: Sequence[jax.ShapeDtypeStruct],
          names: Sequence[str], path: str,
          platforms: Sequence[str] | None = None) -> None:
  """Saves `fn(*inputs) -> {name: array}` at `path` with one signature, SIGNATURE:
  inputs named `names` with `input_specs`' shapes and dtypes (a symbolic dimension,
  such as jax.export's "b", takes any size), outputs named by fn's keys. platforms:
  what the module is compiled for ("cpu", "cuda", "tpu"), by default this machine's
  backend."""
  input_pipeline.keep_tensorflow_on_cpu()  # TF only traces and saves here
  # "(b, 16)": jax2tf's spelling of a shape with symbolic dimensions.
  polymorphic = [f"({', '.join(map(str, s.shape))})" for s in input_specs]
  converted = jax2tf.convert(
      fn, polymorphic_shapes=polymorphic, native_serialization_platforms=platforms,
      # Serving only: no gradient function is traced or saved.
      with_gradient=False)
  signature = [tf.TensorSpec([d if isinstance(d, int) else None for d in s.shape],
                             tf.as_dtype(s.dtype), name=n)
               for s, n in zip(input_specs, names, strict=True)]
  serve = tf.function(converted, input_signature=signature, autograph=False)
  # The signature only, on an empty module: a tf.function kept as an attribute is
  # traced again when saved, a second copy of the module (and its weights) in the file.
  tf.saved_model.save(tf.Module(), str(path),
                      signatures={SIGNATURE: serve.get_concrete_function()})
