"""Sharded training equals single-device training: same losses, gradients, params."""

import functools

import flax.linen as nn
import jax
import numpy as np
import pytest

from bert_jax.model import bert as model
from bert_jax.runtime import optimizer
from bert_jax.runtime import sharding
from bert_jax.pretrain import step as pretrain_step
from bert_jax.runtime import state as state_lib, step as step_lib
from bert_jax.configs import pretrain
from bert_jax.errors import InputError

SEQ, PRED, BATCH, STEPS = 32, 6, 16, 3


def _batches():
  rng = np.random.default_rng(0)
  out = []
  for _ in range(STEPS):
    lengths = rng.integers(8, SEQ + 1, BATCH)
    mask = (np.arange(SEQ)[None] < lengths[:, None]).astype(np.int32)
    out.append(dict(
        input_ids=(rng.integers(5, 512, (BATCH, SEQ)) * mask).astype(np.int32),
        token_type_ids=(np.arange(SEQ)[None] >= lengths[:, None] // 2).astype(np.int32) * mask,
        attention_mask=mask,
        masked_positions=rng.integers(1, 8, (BATCH, PRED)).astype(np.int32),
        masked_ids=rng.integers(5, 512, (BATCH, PRED)).astype(np.int32),
        masked_weights=(rng.random((BATCH, PRED)) < 0.8).astype(np.float32),
        next_sentence_label=rng.integers(0, 2, BATCH).astype(np.int32)))
  return out


def _run(mesh_shape, devices):
  config = pretrain.get_config("tiny")
  cfg = model.BertConfig.from_dict({**config.model, "vocab_size": 512})
  m = model.BertForPreTraining(cfg)
  tx, lr = optimizer.make(config.optimizer, num_steps=10)
  rules = config.mesh.rules
  mesh = sharding.make_mesh(mesh_shape, devices)
  _, shardings = state_lib.abstract_state(m, tx, mesh, rules, SEQ)
  state = jax.jit(lambda r: state_lib.init_state(m, tx, r, SEQ),
                  out_shardings=shardings)(jax.random.key(0))
  batch_sh = sharding.batch_sharding(mesh, rules)
  rng = jax.random.key(1)

  def grads_fn(params, batch):
    step_rng = jax.random.fold_in(rng, 0)
    return jax.grad(lambda p: pretrain_step.losses(
        pretrain_step.apply_model(m, p, batch, step_rng), batch)[0])(params)

  losses, grads = [], []
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    step = step_lib.jit_train_step(functools.partial(pretrain_step.loss, model=m), tx, lr,
                                   shardings, batch_sh, sharding.replicated(mesh))
    grad_step = jax.jit(grads_fn, in_shardings=(shardings.params, batch_sh),
                        out_shardings=shardings.params)
    for b in _batches():
      batch = sharding.to_global(b, batch_sh)
      if not grads:
        grads = jax.device_get(grad_step(state.params, batch))
      state, metrics = step(state, batch, rng)
      losses.append(float(metrics["loss"]))
  return losses, grads, jax.device_get(state.params), state


@pytest.fixture(scope="module")
def reference():
  return _run((1, 1, 1), jax.devices()[:1])


@pytest.mark.parametrize("mesh_shape", [(8, 1, 1), (2, 4, 1), (2, 2, 2)])
def test_sharded_equals_single_device(reference, mesh_shape):
  ref_losses, ref_grads, ref_params, _ = reference
  losses, grads, params, state = _run(mesh_shape, jax.devices())
  np.testing.assert_allclose(losses, ref_losses, atol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), grads, ref_grads)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), params, ref_params)
  assert ref_losses[-1] != ref_losses[0]  # the steps did update something
  kernel = state.params["layer_0"]["attention"]["query"]["kernel"]
  assert len(kernel.sharding.device_set) == 8
  if mesh_shape[1] > 1:  # fsdp really splits parameters
    assert kernel.addressable_shards[0].data.shape[0] == kernel.shape[0] // mesh_shape[1]


def test_mesh_shape_errors():
  assert sharding.resolve_shape((-1, 2, 1), 8) == (4, 2, 1)
  with pytest.raises(InputError, match="needs 16 devices"):
    sharding.resolve_shape((4, 4, 1), 8)
  with pytest.raises(InputError, match="more than one -1"):
    sharding.resolve_shape((-1, -1, 1), 8)
