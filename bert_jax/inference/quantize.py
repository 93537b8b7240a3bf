"""Per-output-channel symmetric int8 weights for `bert-jax export --export_dtype int8`.

Every dense kernel (matmul.Dense's `kernel`: Q/K/V/out projections, the feed-forward
pair, the pooler, the task head) becomes int8 `values` and one float32 `scale` per
output channel: scale = max |w| over the channel / 127, values = round(w / scale).
The rest (embedding tables, LayerNorms, biases: a fifth of BERT-base, nearly all
of it the word table) stays float and is cast to the compute dtype by the export.

The export closes over the quantized tree, so the values are int8 constants of the
exported module (a quarter of their float32 bytes), and `dequantize` runs inside the
graph: w = values * scale in the compute dtype, then the model's own forward. That
is (x @ values) * scale, the scale being one per output column, but it leaves the
model code alone; it costs one multiply a weight per call, 1/(batch * seq_len) of
the matmul's.
"""

from collections.abc import Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class Int8(NamedTuple):
  """A quantized kernel: `values` int8 in the kernel's shape; `scale` float32 with
  size-1 input dims, so values * scale broadcasts back to the kernel."""
  values: np.ndarray
  scale: np.ndarray


def is_int8(x) -> bool:
  """Whether `x` is a quantized kernel (for tree maps that must keep it whole)."""
  return isinstance(x, Int8)


def _quantize(w, out_dims: int, stacked: bool) -> Int8:
  """w [(layers,) *in, *out] -> Int8 with one scale per (layer and) output channel."""
  w = np.asarray(w, np.float32)
  lead = 1 if stacked else 0  # scanned layers: never share a scale across layers
  scale = np.abs(w).max(axis=tuple(range(lead, w.ndim - out_dims)), keepdims=True) / 127
  scale = np.where(scale > 0, scale, 1).astype(np.float32)  # an all-zero channel
  # |w / scale| <= 127 up to rounding, so round() stays inside int8.
  return Int8(np.round(w / scale).astype(np.int8), scale)


def quantize(params: Mapping, stacked: bool = False) -> dict:
  """`params` with every dense kernel (a `kernel` beside a `bias`, whose dims are the
  output channels) as Int8 (from the kernels read as float32); the rest as it is.
  Under a scanned `layers` subtree, kernels and biases have a leading layer axis."""
  out = {}
  for name, value in params.items():
    if isinstance(value, Mapping):
      out[name] = quantize(value, stacked or name == "layers")
    elif name == "kernel" and "bias" in params:
      out[name] = _quantize(value, np.ndim(params["bias"]) - stacked, stacked)
    else:
      out[name] = value
  return out


def dequantize(params, dtype):
  """`quantize`'s tree with its kernels as floats in `dtype` (any other tree as it
  is). Traced inside the exported function: jnp ops, so the int8 values become the
  module's constants and the multiply a part of its graph."""
  def kernel(x):
    return (jnp.asarray(x.values).astype(jnp.float32) * x.scale).astype(dtype)
  return jax.tree.map(lambda x: kernel(x) if is_int8(x) else x, params, is_leaf=is_int8)
