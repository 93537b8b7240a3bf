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


def test_sinusoidal_position_init_is_a_rotation_per_offset():
  """Row i + k of the table is row i turned by angle k * freq in each (sin, cos)
  pair, the same turn at every i: what lets one attention map find "k to the left"
  everywhere from the start. Its std is the config's initializer_range, like the
  other embeddings'; the logical axes are kept."""
  cfg = _cfg("tiny", position_init="sinusoidal")
  boxed = _abstract_params(cfg)["embeddings"]["position_embeddings"]["embedding"]
  assert boxed.names == ("position", "embed")
  table = np.asarray(model.sinusoidal_init(0.02)(None, (512, 128)))
  pairs = table.reshape(512, 64, 2)  # (sin, cos) of angle i * freq_j
  freqs = 1.0 / 10_000 ** (np.arange(0, 128, 2) / 128)
  k = 3
  turn = lambda a: np.stack([np.cos(a), np.sin(a)], -1)  # rotate (sin, cos) by a
  c, s = turn(k * freqs)[..., 0], turn(k * freqs)[..., 1]
  rotated = np.stack([pairs[:-k, :, 0] * c + pairs[:-k, :, 1] * s,
                      pairs[:-k, :, 1] * c - pairs[:-k, :, 0] * s], -1)
  np.testing.assert_allclose(rotated, pairs[k:], atol=1e-6)
  assert 0.015 < table.std() < 0.021
  params = model.BertForPreTraining(cfg).init(jax.random.key(0), jnp.ones((1, 8), jnp.int32))
  np.testing.assert_allclose(
      nn.meta.unbox(params)["params"]["embeddings"]["position_embeddings"]["embedding"],
      model.sinusoidal_init(cfg.initializer_range)(None, (512, 128)), rtol=1e-6)


def test_kept_hidden_states_and_attention_maps_in_both_layer_layouts():
  """What distillation reads: each layer's output (the last = sequence_output) and
  its attention probabilities (rows sum to 1, padded keys 0), the same from the
  scanned stack; keeping them changes no output."""
  from bert_jax.model import attention  # pylint: disable=g-import-not-at-top
  cfg = _cfg("tiny", num_layers=3, vocab_size=300)
  ids = jnp.asarray(np.random.default_rng(2).integers(5, 300, (2, 10)), jnp.int32)
  mask = (jnp.arange(10) < jnp.array([[10], [6]])).astype(jnp.int32)
  flat = model.BertForPreTraining(cfg)
  params = nn.meta.unbox(flat.init(jax.random.key(0), ids)["params"])
  kept_names = [model.HIDDEN_STATES, attention.MAPS]
  plain = flat.apply({"params": params}, ids, attention_mask=mask)
  out, kept = flat.apply({"params": params}, ids, attention_mask=mask, mutable=kept_names)
  np.testing.assert_allclose(out["mlm_logits"], plain["mlm_logits"], atol=1e-5)
  states = model.layer_outputs(kept[model.HIDDEN_STATES])
  maps = model.layer_outputs(kept[attention.MAPS])
  assert len(states) == len(maps) == 3
  np.testing.assert_array_equal(states[-1], out["sequence_output"])
  assert maps[0].shape == (2, cfg.num_heads, 10, 10)
  np.testing.assert_allclose(maps[1].sum(-1), 1.0, atol=1e-5)
  assert float(jnp.abs(maps[2][1, :, :, 6:]).max()) == 0.0
  scanned = model.BertForPreTraining(_cfg("tiny", num_layers=3, vocab_size=300,
                                          scan_layers=True))
  _, kept_scan = scanned.apply({"params": model.stack_layers(params, 3)}, ids,
                               attention_mask=mask, mutable=kept_names)
  for a, b in zip(model.layer_outputs(kept_scan[model.HIDDEN_STATES]) +
                  model.layer_outputs(kept_scan[attention.MAPS]), states + maps):
    np.testing.assert_allclose(a, b, atol=1e-5)
