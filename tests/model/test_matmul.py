"""Mixed-precision matmuls: same values and gradients as a plain dot, f32 gradients for
f32 kernels, and (the point of them) bf16 backward dots that XLA:CPU keeps in bf16."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax.model import matmul


def _data(transpose_w):
  keys = jax.random.split(jax.random.key(0), 4)
  x = jax.random.normal(keys[0], (4, 6, 16))
  w = jax.random.normal(keys[1], (24, 16) if transpose_w else (16, 24))
  b = jax.random.normal(keys[2], (24,))
  g = jax.random.normal(keys[3], (4, 6, 24))
  return x, w, b, g


@pytest.mark.parametrize("transpose_w", [False, True])
@pytest.mark.parametrize("dtype,tol", [("float32", 1e-5), ("bfloat16", 2e-2)])
def test_values_and_gradients_match_a_plain_dot(transpose_w, dtype, tol):
  x, w, b, g = _data(transpose_w)
  plain = lambda x, w, b: x @ (w.T if transpose_w else w) + b
  ours = lambda x, w, b: matmul.matmul(x, w, dtype, transpose_w, bias=b)

  def vjp(f):
    y, pullback = jax.vjp(f, x, w, b)
    return (y, *pullback(g.astype(y.dtype)))

  got = jax.jit(lambda: vjp(ours))()
  want = vjp(plain)
  assert got[0].dtype == jnp.dtype(dtype)
  # cotangents keep the inputs' dtype
  assert got[1].dtype == got[2].dtype == got[3].dtype == jnp.float32
  for a, b in zip(got, want):
    scale = float(jnp.abs(b).max())
    np.testing.assert_allclose(np.asarray(a, np.float32), b, atol=tol * scale)


def test_dense_maps_multi_dimensional_kernels():
  x = jax.random.normal(jax.random.key(0), (2, 5, 8))
  layer = matmul.Dense((8, 2, 4), ("embed", "heads", "kv"), ("heads", "kv"), 0.02)
  params = layer.init(jax.random.key(1), x)["params"]
  y = layer.apply({"params": params}, x)
  kernel, bias = params["kernel"].value, params["bias"].value
  np.testing.assert_allclose(y, jnp.einsum("bse,ehd->bshd", x, kernel) + bias, atol=1e-5)
  with pytest.raises(ValueError, match="do not match"):
    layer.apply({"params": params}, x[..., :6])


def _entry_dots(hlo: str) -> list[tuple[str, ...]]:
  """Operand element types of each dot the compiled program runs: plain dots and
  YNNPACK dot fusions of its entry computation."""
  entry = hlo[hlo.index("\nENTRY"):]
  types = dict(re.findall(r"%(\S+) = (\w+)\[", entry))
  dots = []
  for line in entry.splitlines():
    call = re.search(r" (?:dot|fusion)\(([^)]*)\)", line)
    if call and (" dot(" in line or "__ynn_fusion" in line):
      dots.append(tuple(types[op.strip().lstrip("%")] for op in call.group(1).split(",")))
  return dots


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU layout behaviour")
@pytest.mark.parametrize("transpose_w", [False, True])
def test_bf16_dots_stay_bf16_forward_and_backward(transpose_w):
  # A transposed operand that XLA folds into the dot makes it upcast the dot to f32
  # (half the speed on AVX512-BF16 CPUs); the module's transposes must stay copies.
  x = jnp.ones((4, 64, 96))
  w = jnp.ones((48, 96) if transpose_w else (96, 48))

  def loss(x, w):
    return matmul.matmul(jnp.tanh(x), w, "bfloat16", transpose_w).astype(jnp.float32).sum()

  hlo = jax.jit(jax.value_and_grad(loss, (0, 1))).lower(x, w).compile().as_text()
  # forward, input gradient, kernel gradient
  assert _entry_dots(hlo) == [("bf16", "bf16")] * 3


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU reduction lowering")
def test_bias_gradient_is_a_dot_not_a_reduction():
  # XLA:CPU lowers a column sum of a [rows, N] gradient to an unfused reduce-window
  # (~30x slower than the dot); the bias gradient must come out of a dot.
  x, w, b = jnp.ones((4, 64, 96)), jnp.ones((96, 48)), jnp.ones((48,))

  def loss(x, w, b):
    y = matmul.matmul(jnp.tanh(x), w, "bfloat16", bias=b)
    return (jnp.sin(y) * x[..., :48]).astype(jnp.float32).sum()

  hlo = jax.jit(jax.grad(loss, (1, 2))).lower(x, w, b).compile().as_text()
  assert "reduce-window" not in hlo and " reduce(" not in hlo
  # forward and kernel gradient in bf16; the bias gradient's dot (XLA rewrites the
  # row of ones) may be f32
  dots = _entry_dots(hlo)
  assert len(dots) == 3 and dots.count(("bf16", "bf16")) >= 2


@pytest.mark.slow
def test_bf16_train_step_runs_sharded_and_tracks_f32(tiny_config):
  # XLA:CPU cannot run a bf16 x bf16 -> f32 dot outside YNNPACK ("Unsupported element
  # type for DotThunk"); the partitioned bf16 step must not produce one.
  from bert_jax.tools import benchmark  # pylint: disable=g-import-not-at-top
  losses = {}
  for dtype, shape in (("float32", (8, 1, 1)), ("bfloat16", (2, 2, 2))):
    config = tiny_config.copy_and_resolve_references()
    config.train.global_batch_size = 8
    config.model.dtype, config.mesh.shape = dtype, shape
    timer = benchmark.StepTimer(config)
    losses[dtype] = [float(timer.step()["loss"]) for _ in range(3)]
  np.testing.assert_allclose(losses["bfloat16"], losses["float32"], rtol=1e-3)


@pytest.mark.parametrize("dtype,tol", [("float32", 1e-5), ("bfloat16", 2e-2)])
def test_batch_matmul_values_and_gradients_match_matmul(dtype, tol):
  keys = jax.random.split(jax.random.key(1), 3)
  a = jax.random.normal(keys[0], (6, 8, 16)).astype(dtype)
  b = jax.random.normal(keys[1], (6, 16, 10)).astype(dtype)
  g = jax.random.normal(keys[2], (6, 8, 10)).astype(dtype)
  f32 = lambda t: np.asarray(t, np.float32)

  def vjp(f):
    y, pullback = jax.vjp(f, a, b)
    return (y, *pullback(g.astype(y.dtype)))

  got = jax.jit(lambda: vjp(matmul.batch_matmul))()
  want = vjp(lambda a, b: jnp.matmul(a.astype(jnp.float32), b.astype(jnp.float32)))
  assert all(t.dtype == jnp.dtype(dtype) for t in got)
  for x, y in zip(got, want[:1] + tuple(t.astype(dtype) for t in want[1:])):
    np.testing.assert_allclose(f32(x), f32(y), atol=tol * float(jnp.abs(y).max()))


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU layout behaviour")
def test_batched_bf16_dots_stay_bf16_forward_and_backward():
  # Attention's dots: XLA upcasts a batched dot with a transposed operand, or with the
  # batch axis not leading, to f32 outside YNNPACK.
  a, b = jnp.ones((6, 32, 16)), jnp.ones((6, 16, 32))

  def loss(a, b):
    y = matmul.batch_matmul(jnp.tanh(a).astype(jnp.bfloat16), b.astype(jnp.bfloat16))
    return y.astype(jnp.float32).sum()

  hlo = jax.jit(jax.value_and_grad(loss, (0, 1))).lower(a, b).compile().as_text()
  assert _entry_dots(hlo) == [("bf16", "bf16")] * 3
