"""Memory options (remat policy, nn.scan over layers) change nothing that is computed:
same loss and gradients as the plain layer stack, and params convert between layouts."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax.model import bert as model
from bert_jax.runtime import optimizer
from bert_jax.runtime import sharding
from bert_jax.pretrain import step as pretrain_step
from bert_jax.runtime import state as state_lib, step as step_lib
from bert_jax.configs import pretrain

SEQ, PRED, BATCH, LAYERS, VOCAB = 16, 4, 4, 3, 512
TOL = 1e-6


def _cfg(**kw):
  return model.BertConfig.from_dict(
      {**pretrain.get_config("tiny").model, "vocab_size": VOCAB, "num_layers": LAYERS, **kw})


def _batch(seed=0):
  rng = np.random.default_rng(seed)
  lengths = rng.integers(6, SEQ + 1, BATCH)
  mask = (np.arange(SEQ)[None] < lengths[:, None]).astype(np.int32)
  return dict(
      input_ids=(rng.integers(5, VOCAB, (BATCH, SEQ)) * mask).astype(np.int32),
      token_type_ids=(np.arange(SEQ)[None] >= lengths[:, None] // 2).astype(np.int32) * mask,
      attention_mask=mask,
      masked_positions=rng.integers(1, 6, (BATCH, PRED)).astype(np.int32),
      masked_ids=rng.integers(5, VOCAB, (BATCH, PRED)).astype(np.int32),
      masked_weights=(rng.random((BATCH, PRED)) < 0.8).astype(np.float32),
      next_sentence_label=rng.integers(0, 2, BATCH).astype(np.int32))


def _init(cfg):
  m = model.BertForPreTraining(cfg)
  return nn.meta.unbox(m.init(jax.random.key(0), jnp.ones((1, SEQ), jnp.int32))["params"])


def _loss_and_grads(cfg, params, batch, rng=None):
  m = model.BertForPreTraining(cfg)
  fn = lambda p: pretrain_step.losses(pretrain_step.apply_model(m, p, batch, rng), batch)[0]
  return jax.jit(jax.value_and_grad(fn))(params)


def _assert_trees_close(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=0, atol=TOL), a, b)


@functools.lru_cache(maxsize=None)
def _plain():
  """Params, batch, loss and gradients of the plain (unscanned, no remat) stack."""
  params = _init(_cfg())
  batch = _batch()
  loss, grads = _loss_and_grads(_cfg(), params, batch)
  return params, batch, loss, grads


@pytest.fixture
def plain():
  return _plain()


@pytest.mark.parametrize("remat,scan", [  # (none, False) is the reference itself
    ("full", False), ("dots_saveable", False),
    ("none", True), ("full", True), ("dots_saveable", True)])
def test_same_loss_and_grads_as_plain_stack(plain, remat, scan):
  # Dropout off: nn.scan splits the dropout rng per layer differently from the
  # unrolled stack, so only the deterministic loss can match across layouts.
  params, batch, ref_loss, ref_grads = plain
  cfg = _cfg(remat=remat, scan_layers=scan)
  if scan:
    params = model.stack_layers(params, LAYERS)
  loss, grads = _loss_and_grads(cfg, params, batch)
  if scan:
    grads = model.unstack_layers(grads)
  np.testing.assert_allclose(loss, ref_loss, rtol=0, atol=TOL)
  _assert_trees_close(grads, ref_grads)


@functools.lru_cache(maxsize=None)
def _dropout_reference(scan: bool):
  params, batch, _, _ = _plain()
  if scan:
    params = model.stack_layers(params, LAYERS)
  loss, grads = _loss_and_grads(_cfg(scan_layers=scan), params, batch, _DROPOUT_RNG)
  return params, loss, grads


# rbg keys: the dropout masks compile much faster on CPU than with threefry.
_DROPOUT_RNG = jax.random.key(7, impl="rbg")


@pytest.mark.parametrize("scan", [False, True])
@pytest.mark.parametrize("remat", ["full", "dots_saveable"])
def test_remat_keeps_dropout(plain, remat, scan):
  # Remat does not change rng use: with dropout on and the same rng, a remat model
  # matches the same layout without remat.
  params, ref_loss, ref_grads = _dropout_reference(scan)
  assert abs(float(ref_loss) - float(plain[2])) > 1e-4  # dropout really was on
  loss, grads = _loss_and_grads(_cfg(remat=remat, scan_layers=scan), params, plain[1],
                                _DROPOUT_RNG)
  np.testing.assert_allclose(loss, ref_loss, rtol=0, atol=TOL)
  _assert_trees_close(grads, ref_grads)


def test_stack_unstack_round_trip_and_layout(plain):
  params = plain[0]
  stacked = model.stack_layers(params, LAYERS)
  assert sorted(k for k in stacked if k.startswith("layer")) == ["layers"]
  assert stacked["layers"]["intermediate"]["kernel"].shape == (
      LAYERS, *params["layer_0"]["intermediate"]["kernel"].shape)
  assert model.count_params(stacked) == model.count_params(params)
  back = model.unstack_layers(stacked)
  assert jax.tree.structure(back) == jax.tree.structure(params)
  jax.tree.map(np.testing.assert_array_equal, back, params)
  # The scanned model's own init has exactly the stacked structure and shapes.
  scanned_init = _init(_cfg(scan_layers=True))
  shapes = lambda t: jax.tree.map(lambda x: x.shape, t)
  assert shapes(scanned_init) == shapes(stacked)
  with pytest.raises(ValueError, match="layer_0..layer_3"):
    model.stack_layers(params, LAYERS + 1)
  with pytest.raises(ValueError, match="no scanned"):
    model.unstack_layers(params)


def test_scanned_params_have_leading_layers_axis():
  m = model.BertForPreTraining(_cfg(scan_layers=True, remat="full"))
  ids = jax.ShapeDtypeStruct((1, SEQ), jnp.int32)
  boxed = jax.eval_shape(m.init, jax.random.key(0), ids)["params"]
  specs = nn.get_partition_spec(boxed)
  layer_specs = jax.tree_util.tree_leaves(
      specs["layers"], is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
  assert len(layer_specs) == 16
  for spec, leaf in zip(layer_specs, jax.tree_util.tree_leaves(nn.meta.unbox(boxed["layers"]))):
    assert spec[0] == "layers" and len(spec) == leaf.ndim
  assert specs["layers"]["attention"]["query"]["kernel"] == jax.sharding.PartitionSpec(
      "layers", "embed", "heads", "kv")
  assert not any(k.startswith("layer_") for k in specs)


def test_unknown_remat_is_an_error():
  with pytest.raises(ValueError, match="'none', 'full', 'dots_saveable'"):
    _cfg(remat="everything")


def test_decay_mask_inside_scanned_layers():
  mask = optimizer.decay_mask(_init(_cfg(scan_layers=True)))["layers"]
  assert mask["attention"]["query"]["kernel"] and mask["intermediate"]["kernel"]
  assert not mask["attention"]["query"]["bias"] and not mask["intermediate"]["bias"]
  assert not mask["attention_layer_norm"]["scale"]
  assert not mask["output_layer_norm"]["bias"]


def test_sharded_train_step_with_scan_and_remat():
  config = pretrain.get_config("tiny")
  cfg = _cfg(scan_layers=True, remat="full")
  m = model.BertForPreTraining(cfg)
  tx, lr = optimizer.make(config.optimizer, num_steps=10)
  rules = config.mesh.rules
  mesh = sharding.make_mesh((2, 2, 2), jax.devices())
  _, shardings = state_lib.abstract_state(m, tx, mesh, rules, SEQ)
  kernel_sh = shardings.params["layers"]["attention"]["query"]["kernel"]
  assert kernel_sh.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor", None)
  state = jax.jit(lambda r: state_lib.init_state(m, tx, r, SEQ),
                  out_shardings=shardings)(jax.random.key(0))
  batch_sh = sharding.batch_sharding(mesh, rules)
  before = jax.device_get(state.params)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    step = step_lib.jit_train_step(functools.partial(pretrain_step.loss, model=m), tx, lr,
                                   shardings, batch_sh, sharding.replicated(mesh))
    for i in range(2):
      state, metrics = step(state, sharding.to_global(_batch(i), batch_sh),
                            jax.random.key(1))
  assert int(metrics["skipped"]) == 0 and np.isfinite(float(metrics["loss"]))
  kernel = state.params["layers"]["attention"]["query"]["kernel"]
  assert kernel.sharding.spec == kernel_sh.spec
  after = jax.device_get(state.params)
  assert not np.allclose(after["layers"]["intermediate"]["kernel"],
                         before["layers"]["intermediate"]["kernel"])
