"""The held-out evaluation set: held out, fixed, padded not dropped, and used."""

import json

import numpy as np
import pytest
import tensorflow as tf

from bert_jax.runtime import checkpoints
from bert_jax.pretrain import evaluate
from bert_jax.data import prepare
from bert_jax.pretrain import loop as pretrain
from bert_jax.pretrain import step as pretrain_step

MASK_ARGS = dict(vocab_size=8000, mask_prob=0.15, max_predictions=20)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tiny_config):
  work = tmp_path_factory.mktemp("work")
  config = tiny_config.copy_and_resolve_references()
  config.unlock()
  config.data.update(max_documents=140, eval_documents=40, eval_examples=150,
                     num_shards=4, num_streams=4)
  stats = prepare.run(config, str(work))
  return config, work, stats


def _records(path):
  return {r for r in tf.data.TFRecordDataset(path).as_numpy_iterator()}


def test_eval_documents_are_held_out(prepared):
  _, work, stats = prepared
  data = work / "data"
  held = _records(str(data / prepare.EVAL_FILE))
  assert stats["eval_documents"] == 40 and len(held) == stats["eval_examples"] == 150
  train = set().union(*(_records(f) for f in prepare.shard_files(str(data))))
  assert not held & train
  assert stats["documents"] == 100  # the 140 read, less the 40 held out


def test_eval_batches_are_fixed_and_padded(prepared):
  _, work, _ = prepared
  path = str(work / "data" / prepare.EVAL_FILE)
  one = evaluate.load(path, global_batch=16, seq_len=128, max_examples=0, **MASK_ARGS)
  again = evaluate.load(path, global_batch=16, seq_len=128, max_examples=0, **MASK_ARGS)
  for a, b in zip(one, again):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
  assert len(one) == 10  # 150 examples -> 9 full batches + 6 real rows
  last = one[-1]
  np.testing.assert_array_equal(last["example_weight"], [1] * 6 + [0] * 10)
  assert last["masked_weights"][6:].sum() == 0 and last["masked_weights"][:6].sum() > 0
  halves = [evaluate.load(path, global_batch=16, seq_len=128, max_examples=0,
                          process_index=p, process_count=2, **MASK_ARGS) for p in (0, 1)]
  for whole, a, b in zip(one, *halves):
    np.testing.assert_array_equal(whole["input_ids"], np.concatenate([a["input_ids"],
                                                                      b["input_ids"]]))
  capped = evaluate.load(path, global_batch=16, seq_len=128, max_examples=40, **MASK_ARGS)
  assert sum(b["example_weight"].sum() for b in capped) == 40


@pytest.mark.slow
def test_pretrain_evaluates_and_keeps_the_best(prepared, tmp_path):
  config, work, _ = prepared
  config = config.copy_and_resolve_references()
  config.data.prepared_dir = str(work / "data")
  config.train.update(global_batch_size=16, num_steps=12, log_every=4, eval_every=4,
                      checkpoint_every=4, keep_checkpoints=1, keep_best_checkpoints=1)
  config.optimizer.warmup_steps = 2
  pretrain.run(config, str(tmp_path))
  rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  evals = {r["step"]: r for r in rows if "eval_mlm_accuracy" in r}
  assert sorted(evals) == [4, 8, 12]
  # The count-based references, once, as step 0 (references.py has the hand counts):
  # on news text the neighbours beat the most frequent piece by far.
  refs = [r for r in rows if "ref_neighbours_mlm_accuracy" in r]
  assert [r["step"] for r in refs] == [0]
  assert 0 < refs[0]["ref_unigram_mlm_accuracy"] < refs[0]["ref_neighbours_mlm_accuracy"] < 1
  for r in evals.values():
    assert 0 <= r["eval_mlm_accuracy"] <= 1 and 0 <= r["eval_nsp_accuracy"] <= 1
    assert np.isfinite(r["eval_loss"])
  # The eval metrics do not depend on the eval batch size (padding rows count 0).
  s = pretrain_step.setup(config)
  mngr = checkpoints.manager(str(tmp_path), async_save=False)
  state, _ = checkpoints.restore(mngr, 12, s.restore_target())
  got = {}
  for batch in (16, 32):
    eval_set = evaluate.EvalSet.create(
        str(work / "data" / prepare.EVAL_FILE), s.model, s.shardings.params,
        s.batch_sharding, with_nsp=True, global_batch=batch, seq_len=128,
        max_examples=config.data.eval_examples, **MASK_ARGS)
    with s.context():
      got[batch] = eval_set(state.params)
  for k, v in got[16].items():
    assert v == pytest.approx(got[32][k], abs=1e-5), k
    assert v == pytest.approx(evals[12][k], abs=1e-5), k
  best = min(evals, key=lambda step: evals[step]["eval_loss"])
  assert set(mngr.all_steps()) == {best, 12}


def test_best_checkpoints_are_kept_beside_the_latest(tmp_path):
  mngr = checkpoints.manager(str(tmp_path), keep=2, async_save=False, keep_best=1,
                             best_metric="eval_loss", best_mode="min")
  state = type("State", (), {})()
  for step, loss in [(1, 3.0), (2, 1.0), (3, 2.0), (4, 4.0), (5, 5.0)]:
    state.step, state.params, state.opt_state = step, {"w": np.ones(2)}, {"m": np.ones(1)}
    checkpoints.save(mngr, state, {"stream_examples": step}, {"eval_loss": loss})
  assert mngr.all_steps() == [2, 4, 5]  # the best (loss 1.0) and the latest 2
  mngr.close()
