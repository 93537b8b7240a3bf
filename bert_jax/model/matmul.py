"""Weight matmuls in the compute dtype, accumulated in float32, laid out for XLA:CPU.

Mixed precision as on TPUs: inputs and kernels are cast to the compute dtype
(bfloat16), every product is summed in float32, and the kernel's gradient is
returned in float32, the params' dtype.

Layout matters on CPU. XLA:CPU hands a dot to YNNPACK only when it is canonical:
lhs [M, K] and rhs [K, N], both row-major; bf16 x bf16 -> f32 there runs at about
twice the speed of float32 on CPUs with AVX512-BF16 (measured on 2 Zen 4 cores:
270-370 against 160-210 GFLOP/s). The two backward dots of `x @ w` contract a
transposed operand (x^T g, g w^T). XLA folds a plain transpose into the dot's
dimension numbers, finds the dot non-canonical, upcasts it to float32 and runs it
through Eigen at 150 GFLOP/s. So the backward pass here transposes through a
reshape, which XLA keeps as a real copy: linear in the array's size, where the dot
is cubic. Batched dots (attention's) follow the same rule with the batch axis
leading. Float32 dots, and all dots on TPU and GPU, where the compiler places
transposes itself, get a plain transpose (copying a float32 vocabulary table costs
more than it saves).
"""

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def _transpose(a: jax.Array) -> jax.Array:
  """a [..., M, K] -> [..., K, M]; a row-major copy for bf16 on CPU (see the module
  docstring)."""
  *batch, m, k = a.shape
  split = next((f for f in (2, 3, 5, 7) if m % f == 0), None)
  if jax.default_backend() != "cpu" or a.dtype != jnp.bfloat16 or split is None:
    return jnp.swapaxes(a, -1, -2)
  n = len(batch)
  return (a.reshape(*batch, split, m // split, k)
          .transpose(*range(n), n + 2, n, n + 1).reshape(*batch, k, m))


def _dot(a, b):
  return jnp.matmul(a, b, preferred_element_type=jnp.float32)


@jax.custom_vjp
def batch_matmul(a: jax.Array, b: jax.Array) -> jax.Array:
  """a [N, M, K] @ b [N, K, P] -> [N, M, P] in a's dtype, summed in float32: batched
  dots (attention's) with the batch axis leading and both operands row-major, the
  layout XLA:CPU's bf16 kernels take, forward and backward."""
  return _dot(a, b).astype(a.dtype)


def _batch_forward(a, b):
  return batch_matmul(a, b), (a, b)


def _batch_backward(res, g):
  a, b = res
  return _dot(g, _transpose(b)).astype(a.dtype), _dot(_transpose(a), g).astype(b.dtype)


batch_matmul.defvjp(_batch_forward, _batch_backward)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _matmul(x, w, b, transpose_w: bool):
  """x [M, K] @ w [K, N] (w [N, K] with transpose_w) + b [N] in x's dtype, summed in
  f32."""
  return _forward(x, w, b, transpose_w)[0]


def _forward(x, w, b, transpose_w):
  wc = w.astype(x.dtype)
  y = _dot(x, _transpose(wc) if transpose_w else wc) + b.astype(jnp.float32)
  # w, b: the params themselves, alive anyway; w is recast in the backward pass.
  return y.astype(x.dtype), (x, w, b)


def _backward(transpose_w, res, g):
  x, w, b = res
  wc = w.astype(x.dtype)
  if transpose_w:  # y = x w^T: dx = g w, dw = g^T x
    dx, dw = _dot(g, wc), _dot(_transpose(g), x)
  else:  # y = x w: dx = g w^T, dw = x^T g
    dx, dw = _dot(g, _transpose(wc)), _dot(_transpose(x), g)
  # db = the column sums of g, as a dot with a row of ones. XLA:CPU would run the
  # sum as a reduce-window (its tree-reduction split) of g upcast to f32, unfused:
  # 14 ms for one [1024, 3072] bias at BERT-base batch 8, 7 % of the step over all
  # layers. The dot takes well under a millisecond.
  db = _dot(jnp.ones((1, g.shape[0]), g.dtype), g)[0]
  return dx.astype(x.dtype), dw.astype(w.dtype), db.astype(b.dtype)


_matmul.defvjp(_forward, _backward)


def matmul(x: jax.Array, w: jax.Array, dtype, transpose_w: bool = False,
           bias: jax.Array | None = None) -> jax.Array:
  """x [..., K] @ w [K, N] (+ bias [N]) -> [..., N] in `dtype` (or x @ w^T for w
  [N, K] with `transpose_w`), summed in float32; the params' gradients keep their
  dtype."""
  n = w.shape[0] if transpose_w else w.shape[1]
  if bias is None:
    bias = jnp.zeros((n,), w.dtype)
  y = _matmul(x.reshape(-1, x.shape[-1]).astype(dtype), w, bias, transpose_w)
  return y.reshape(*x.shape[:-1], n)


class Dense(nn.Module):
  """y = x . kernel + bias with a multi-dimensional, logically named kernel.

  The kernel's first `len(kernel_shape) - len(bias_axes)` dims contract with the
  trailing dims of x (a [embed, heads, kv] query kernel maps [B, S, embed] to
  [B, S, heads, kv]); the bias has the remaining dims. Params are `kernel` and
  `bias`, as in nn.Dense. (nn.DenseGeneral builds a flat kernel and reshapes it,
  which breaks logical sharding constraints on multi-dimensional kernels.)
  """
  kernel_shape: Sequence[int]
  kernel_axes: Sequence[str]
  bias_axes: Sequence[str]
  initializer_range: float
  dtype: str = "float32"
  param_dtype: str = "float32"

  @nn.compact
  def __call__(self, x):
    init = nn.initializers.truncated_normal(self.initializer_range)
    kernel = self.param("kernel", nn.with_logical_partitioning(init, self.kernel_axes),
                        tuple(self.kernel_shape), self.param_dtype)
    out_shape = tuple(self.kernel_shape[-len(self.bias_axes):])
    bias = self.param("bias", nn.with_logical_partitioning(
        nn.initializers.zeros_init(), self.bias_axes), out_shape, self.param_dtype)
    in_dims = len(self.kernel_shape) - len(out_shape)
    in_size = x.shape[-in_dims:]
    if tuple(in_size) != tuple(self.kernel_shape[:in_dims]):
      raise ValueError(f"input dims {in_size} do not match kernel {self.kernel_shape}")
    flat = x.reshape(*x.shape[:-in_dims], -1)
    y = matmul(flat, kernel.reshape(flat.shape[-1], -1), self.dtype, bias=bias.reshape(-1))
    return y.reshape(*x.shape[:-in_dims], *out_shape)
