import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax.model import bert as model
from bert_jax.configs import pretrain


def _cfg(size, **kw):
  return model.BertConfig.from_dict({**pretrain.get_config(size).model, **kw})


def _abstract_params(cfg):
  ids = jax.ShapeDtypeStruct((1, 8), jnp.int32)
  return jax.eval_shape(model.BertForPreTraining(cfg).init, jax.random.key(0), ids)["params"]


@pytest.mark.parametrize("size,expected", [("base", 110_106_428), ("large", 336_226_108)])
def test_parameter_counts_match_bert(size, expected):
  # As transformers counts BertForPreTraining (tied decoder counted once).
  params = nn.meta.unbox(_abstract_params(_cfg(size, vocab_size=30522)))
  assert model.count_params(params) == expected


def test_every_parameter_has_logical_axes():
  boxed = _abstract_params(_cfg("tiny"))
  leaves = jax.tree_util.tree_leaves_with_path(
      boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
  assert leaves
  for path, leaf in leaves:
    assert isinstance(leaf, nn.Partitioned), jax.tree_util.keystr(path)
    assert len(leaf.names) == leaf.value.ndim, jax.tree_util.keystr(path)
    assert all(isinstance(n, str) for n in leaf.names), (jax.tree_util.keystr(path), leaf.names)


def test_output_shapes_and_masked_positions():
  cfg = _cfg("tiny", num_layers=1, vocab_size=500)
  m = model.BertForPreTraining(cfg)
  rng = np.random.default_rng(0)
  ids = jnp.asarray(rng.integers(5, 500, (3, 16)), jnp.int32)
  params = nn.meta.unbox(m.init(jax.random.key(0), ids)["params"])
  full = m.apply({"params": params}, ids)
  assert full["mlm_logits"].shape == (3, 16, 500)
  assert full["nsp_logits"].shape == (3, 2)
  assert full["sequence_output"].shape == (3, 16, cfg.hidden_size)
  positions = jnp.asarray(rng.integers(0, 16, (3, 4)), jnp.int32)
  part = m.apply({"params": params}, ids, masked_positions=positions)
  assert part["mlm_logits"].shape == (3, 4, 500)
  expected = jnp.take_along_axis(full["mlm_logits"], positions[..., None], axis=1)
  np.testing.assert_allclose(part["mlm_logits"], expected, atol=1e-5)


def test_padding_does_not_change_real_positions():
  cfg = _cfg("tiny", num_layers=1, vocab_size=300)
  m = model.BertForPreTraining(cfg)
  ids = jnp.asarray(np.random.default_rng(1).integers(5, 300, (1, 12)), jnp.int32)
  params = nn.meta.unbox(m.init(jax.random.key(0), ids)["params"])
  short = m.apply({"params": params}, ids[:, :7])
  padded = m.apply({"params": params}, ids.at[:, 7:].set(0),
                   attention_mask=(jnp.arange(12) < 7).astype(jnp.int32)[None])
  np.testing.assert_allclose(padded["mlm_logits"][:, :7], short["mlm_logits"], atol=1e-4)
  np.testing.assert_allclose(padded["nsp_logits"], short["nsp_logits"], atol=1e-4)


def test_bf16_compute_keeps_fp32_params():
  cfg = _cfg("tiny", num_layers=1, vocab_size=300, dtype="bfloat16")
  m = model.BertForPreTraining(cfg)
  ids = jnp.ones((2, 8), jnp.int32)
  params = nn.meta.unbox(m.init(jax.random.key(0), ids)["params"])
  assert {x.dtype for x in jax.tree_util.tree_leaves(params)} == {jnp.dtype("float32")}
  out = m.apply({"params": params}, ids)
  assert out["sequence_output"].dtype == jnp.bfloat16
  assert out["mlm_logits"].dtype == jnp.float32  # losses are computed in fp32

  def loss(p):
    return m.apply({"params": p}, ids)["mlm_logits"].mean()
  grads = jax.grad(loss)(params)
  assert {x.dtype for x in jax.tree_util.tree_leaves(grads)} == {jnp.dtype("float32")}


def test_dropout_is_active_only_when_not_deterministic():
  cfg = _cfg("tiny", num_layers=1, vocab_size=300)
  m = model.BertForPreTraining(cfg)
  ids = jnp.ones((2, 8), jnp.int32)
  params = nn.meta.unbox(m.init(jax.random.key(0), ids)["params"])
  a = m.apply({"params": params}, ids)["mlm_logits"]
  b = m.apply({"params": params}, ids)["mlm_logits"]
  c = m.apply({"params": params}, ids, deterministic=False,
              rngs={"dropout": jax.random.key(1)})["mlm_logits"]
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)


@pytest.mark.parametrize("dtype,tol", [("float32", 1e-5), ("bfloat16", 3e-2)])
def test_training_attention_equals_dot_product_attention(dtype, tol):
  # With dropout on, attention is spelled out (batched dots, masking, softmax);
  # at a vanishing rate it must equal jax.nn.dot_product_attention's, masks included.
  from bert_jax.model import attention  # pylint: disable=g-import-not-at-top
  keys = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(keys[0], (2, 8, 32))
  real = jnp.array([[1] * 8, [1] * 5 + [0] * 3])
  layer = attention.SelfAttention(num_heads=4, dropout=1e-9, initializer_range=0.2,
                                  dtype=dtype)
  params = layer.init(keys[1], x, attention.padding_mask(real), True)
  for mask in (attention.padding_mask(real),
               attention.packing_mask(jnp.array([[1] * 4 + [2] * 4, [1] * 5 + [0] * 3]))):
    want = layer.apply(params, x, mask, True)
    got = layer.apply(params, x, mask, False, rngs={"dropout": keys[2]})
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32),
                               atol=tol * float(jnp.abs(want).max()))
