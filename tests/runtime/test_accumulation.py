"""Gradient accumulation (train.microbatches): the gradient summed over k
microbatches equals the whole batch's, with dropout off and on (dropout masks follow
the example's global row, not the array it is traced in), on a mesh that splits the
batch, the width and the heads; and the step built on it updates as the unsplit
step does."""

import functools

import jax
import numpy as np
import pytest

from bert_jax.model import dropout as dropout_lib
from bert_jax.pretrain import step as pretrain_step
from bert_jax.runtime import step as step_lib
from bert_jax.tools import benchmark


def _setup(tiny_config, microbatches: int, dropout: float, remat: str = "none"):
  config = tiny_config.copy_and_resolve_references()
  config.model.update(vocab_size=512, hidden_dropout=dropout, attention_dropout=dropout,
                      scan_layers=True, remat=remat)
  config.data.update(max_seq_length=32, max_predictions_per_seq=5)
  config.train.update(global_batch_size=16, microbatches=microbatches)
  config.optimizer.warmup_steps = 0  # step 0 updates at the peak rate
  config.mesh.shape = (2, 2, 2)
  s = pretrain_step.setup(config)
  batch = benchmark.synthetic_batch(16, 32, 5, 512, seed=3, max_per_row=2)
  # Unequal weights: the means must divide by the whole batch's totals.
  batch["masked_weights"][::3, -2:] = 0
  return s, batch


def _run(s, batch, fn):
  with s.context():
    state = s.init(0)
    return jax.device_get(fn(state, s.global_batch(batch)))


def _max_diff(a, b) -> float:
  return max(jax.tree.leaves(jax.tree.map(lambda x, y: float(np.abs(x - y).max()), a, b)))


@pytest.mark.slow
def test_accumulated_gradient_equals_the_whole_batch_one(tiny_config):
  """With dropout on (off is test_accumulating_step_...): the masks must follow the
  examples into their microbatches."""
  dropout = 0.1
  def grads(k, remat="none"):
    s, batch = _setup(tiny_config, k, dropout, remat)
    fn = jax.jit(functools.partial(
        step_lib.gradients, rng=jax.random.key(7) if dropout else None,
        loss_fn=functools.partial(pretrain_step.loss, model=s.model),
        totals_fn=pretrain_step.totals, microbatches=k))
    return _run(s, batch, lambda state, b: fn(state.params, b))

  (loss, metrics), whole = grads(1)
  assert _max_diff(whole, jax.tree.map(np.zeros_like, whole)) > 1e-3
  # k = 4 with remat: the microbatch's rows reach the dropout inside the layer
  # scan's rematerialised body too.
  for k, remat in ((2, "none"), (4, "full")):
    (split_loss, split_metrics), split = grads(k, remat)
    assert _max_diff(whole, split) <= 1e-6, k
    np.testing.assert_allclose(split_loss, loss, rtol=1e-6)
    for name in ("mlm_accuracy", "nsp_loss", "nsp_accuracy"):
      np.testing.assert_allclose(split_metrics[name], metrics[name], rtol=1e-6)


def test_accumulating_step_updates_as_the_unsplit_one(tiny_config):
  """The whole step, dropout off. Adam's first update is nearly sign(g): a bias
  gradient near eps magnifies float round-off, so params agree to 1e-5."""
  def step(k):
    s, batch = _setup(tiny_config, k, 0.0)
    return _run(s, batch, lambda state, b: s.step_fn(state, b, jax.random.key(7)))

  (whole, metrics), (split, split_metrics) = step(1), step(4)
  assert _max_diff(whole.params, split.params) <= 1e-5
  assert int(split.step) == 1 and int(split_metrics["skipped"]) == 0
  np.testing.assert_allclose(split_metrics["grad_norm"], metrics["grad_norm"], rtol=1e-6)


def test_dropout_masks_follow_the_example():
  """Rows 1 and 3 of a batch get the masks they have as rows 0 and 1 of the
  microbatch [1, 3] traced with their global rows."""
  key = jax.random.key(0)
  whole = dropout_lib.keep_mask(key, (4, 8, 16), 0.5)
  part = dropout_lib.keep_mask(key, (2, 8, 16), 0.5, rows=np.array([1, 3], np.uint32))
  np.testing.assert_array_equal(part, whole[np.array([1, 3])])
  assert 0.4 < float(whole.mean()) < 0.6
  assert not np.array_equal(whole[0], whole[1])  # rows differ
