"""Time to accuracy beside transformers: its FlaxBertForMaskedLM trained with
run_mlm_flax's recipe, and ours, on the same prepared rows, vocabulary and held-out
masked positions, for the same training-time budget. One JSON line with both curves
(held-out MLM accuracy against training seconds, evaluation time excluded).

    pip install 'transformers<5'
    python benchmarks/side_by_side.py --data W/data --workdir /tmp/sbs --budget 600 \
        --config configs/pretrain.py:demo

--data is a `prepare`d directory (its eval.tfrecord is the held-out set; the
references come from our run's step-0 row). The two take turns, ours first, never in
parallel: parallel runs distort each other's timings. Set
XLA_FLAGS=--xla_force_host_platform_device_count=1 so both see the same device.

transformers' side, as run_mlm_flax.py does it: the model from a BertConfig of our
model's shape, AdamW (b1 0.9, b2 0.999, eps 1e-8, weight decay 0.01 except biases
and LayerNorm scales), linear warm-up then linear decay to 0 over the steps that fit
the budget (one compilation, then steps at a probe's speed), 15 % of the non-special
tokens masked 80/10/10 per batch, full attention over each row (its group_texts
rows). Its peak learning rate is --hf_learning_rate (run_mlm_flax has no default for
it; take the best of a sweep).
"""

import json
import os
import subprocess
import sys
import time

from absl import app, flags
from ml_collections import config_flags
import numpy as np

_CONFIG = config_flags.DEFINE_config_file("config", None, "Our pretraining config.")
_DATA = flags.DEFINE_string("data", None, "Prepared data directory.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (ours/ is our run).")
_BUDGET = flags.DEFINE_float("budget", 600.0, "Training seconds for each side.")
_EVAL_EVERY = flags.DEFINE_float("eval_every_s", 30.0, "transformers: seconds between evals.")
_HF_LR = flags.DEFINE_float("hf_learning_rate", 1e-3, "transformers: peak learning rate.")
_HF_BATCH = flags.DEFINE_integer("hf_batch_size", 64, "transformers: batch size.")
_HF_WARMUP = flags.DEFINE_integer("hf_warmup_steps", 0, "transformers: warm-up steps.")

_MARKS = (120, 300, 600)


def ours(config_arg: str, overrides: list[str]) -> dict:
  """Our recipe via benchmarks/time_to_accuracy.py (its own process, as a user runs it)."""
  here = os.path.dirname(os.path.abspath(__file__))
  cmd = [sys.executable, os.path.join(here, "time_to_accuracy.py"), "--config", config_arg,
         "--workdir", os.path.join(_WORKDIR.value, "ours"), "--budget", str(_BUDGET.value),
         f"--config.data.prepared_dir={os.path.abspath(_DATA.value)}", *overrides]
  out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
  return json.loads(out.strip().splitlines()[-1])


def _mask(ids: np.ndarray, rng: np.random.Generator, vocab: int, special) -> tuple:
  """run_mlm_flax's collator: 15 % of the non-special tokens, 80 % [MASK], 10 %
  random, 10 % unchanged; labels -100 elsewhere."""
  can = (ids != special.pad) & (ids != special.cls) & (ids != special.sep)
  chosen = can & (rng.random(ids.shape) < 0.15)
  labels = np.where(chosen, ids, -100)
  kind = rng.random(ids.shape)
  out = np.where(chosen & (kind < 0.8), special.mask, ids)
  rand = rng.integers(special.first_normal, vocab, ids.shape)
  out = np.where(chosen & (kind >= 0.8) & (kind < 0.9), rand, out)
  return out, labels


def transformers_curve(config, stats: dict) -> dict:
  from flax import traverse_util  # pylint: disable=g-import-not-at-top
  import jax
  import jax.numpy as jnp
  import optax
  import transformers
  from bert_jax.data import input_pipeline
  from bert_jax.pretrain import evaluate
  from bert_jax.pretrain import loop

  special = loop.special_ids(stats)
  vocab, seq = stats["vocab_size"], config.data.max_seq_length
  files = sorted(os.path.join(_DATA.value, f) for f in os.listdir(_DATA.value)
                 if f.startswith("shard-"))
  rows = input_pipeline.read_input_ids(files, 10**9)
  train = np.zeros((len(rows), seq), np.int32)
  for i, r in enumerate(rows):
    train[i, :min(len(r), seq)] = r[:seq]
  evals = evaluate.load(os.path.join(_DATA.value, "eval.tfrecord"), global_batch=256,
                        **loop._eval_args(config, stats))  # pylint: disable=protected-access
  m = config.model
  model = transformers.FlaxBertForMaskedLM(transformers.BertConfig(
      vocab_size=vocab, hidden_size=m.hidden_size, num_hidden_layers=m.num_layers,
      num_attention_heads=m.num_heads, intermediate_size=m.intermediate_size,
      max_position_embeddings=m.max_position_embeddings, type_vocab_size=2), seed=0)

  def decay_mask(params):
    flat = traverse_util.flatten_dict(params)
    return traverse_util.unflatten_dict(
        {k: k[-1] != "bias" and k[-2:] != ("LayerNorm", "scale") for k in flat})

  def make_tx(steps: int):
    warm = optax.linear_schedule(0.0, _HF_LR.value, max(_HF_WARMUP.value, 1))
    decay = optax.linear_schedule(_HF_LR.value, 0.0, max(steps - _HF_WARMUP.value, 1))
    lr = optax.join_schedules([warm, decay], [_HF_WARMUP.value])
    return optax.adamw(lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.01, mask=decay_mask)

  def train_step(params, opt_state, ids, labels, key, tx):
    def loss_fn(p):  # with the model's dropout, as run_mlm_flax trains
      logits = model(ids, attention_mask=(ids != special.pad).astype(jnp.int32),
                     params=p, dropout_rng=key, train=True).logits
      w = labels >= 0
      xent = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(labels, 0))
      return (xent * w).sum() / jnp.maximum(w.sum(), 1)
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  @jax.jit
  def eval_correct(params, b):
    logits = model(b["input_ids"], attention_mask=b["attention_mask"],
                   token_type_ids=b["token_type_ids"], params=params, train=False).logits
    picked = jnp.take_along_axis(logits, b["masked_positions"][..., None], axis=1)
    hit = (picked.argmax(-1) == b["masked_ids"]) * b["masked_weights"]
    return hit.sum(), b["masked_weights"].sum()

  def accuracy(params) -> float:
    sums = [eval_correct(params, b) for b in evals]
    return float(sum(h for h, _ in sums) / sum(n for _, n in sums))

  rng = np.random.default_rng(0)
  batches = lambda: (train[rng.integers(0, len(train), _HF_BATCH.value)] for _ in iter(int, 1))
  # Steps that fit the budget, from a probe: the budget counts one compilation (the
  # run's own, as ours counts it), then steps at the probe's compiled speed. Timing
  # the compile as if it were steps would end this side well short of the budget.
  probe_tx = make_tx(10**6)
  step_fn = jax.jit(lambda p, o, i, l, k: train_step(p, o, i, l, k, probe_tx))
  params, opt = model.params, probe_tx.init(model.params)
  probe, key = 30, jax.random.key(0)
  marks = [time.perf_counter()]
  for step, ids in zip(range(probe + 1), batches()):
    params, opt, loss = step_fn(params, opt, *_mask(ids, rng, vocab, special),
                                jax.random.fold_in(key, step))
    if step in (0, probe):  # after the compiling step, and after the probe
      jax.block_until_ready(loss)
      marks.append(time.perf_counter())
  first_s, step_s = marks[1] - marks[0], (marks[2] - marks[1]) / probe
  steps = 1 + max(0, int((_BUDGET.value - first_s) / step_s))

  tx = make_tx(steps)
  step_fn = jax.jit(lambda p, o, i, l, k: train_step(p, o, i, l, k, tx))
  params, opt = model.params, tx.init(model.params)
  curve, trained, next_eval = [], 0.0, _EVAL_EVERY.value
  start = time.perf_counter()
  for step, ids in zip(range(1, steps + 1), batches()):
    params, opt, loss = step_fn(params, opt, *_mask(ids, rng, vocab, special),
                                jax.random.fold_in(key, step))
    if trained + time.perf_counter() - start >= next_eval or step == steps:
      jax.block_until_ready(loss)
      trained += time.perf_counter() - start
      curve.append((round(trained, 1), round(accuracy(params), 4)))
      next_eval = trained + _EVAL_EVERY.value
      start = time.perf_counter()
  return {"steps": steps, "learning_rate": _HF_LR.value, "batch": _HF_BATCH.value,
          "final_acc": curve[-1][1], "curve": curve}


def _at(curve) -> dict:
  return {f"acc_at_{m // 60}min": max((a for t, a in curve if t <= m), default=None)
          for m in _MARKS if m <= _BUDGET.value + 1}


def main(argv):
  del argv
  flag = flags.FLAGS["config"]
  overrides = [f"--config.{k}={v}"
               for k, v in config_flags.get_override_values(flag).items()]
  a = ours(config_flags.get_config_filename(flag), overrides)
  with open(os.path.join(_DATA.value, "stats.json")) as f:
    stats = json.load(f)
  b = transformers_curve(_CONFIG.value, stats)
  target = b["final_acc"]
  reach = next((t for t, acc in a["curve"] if acc >= target), None)
  print(json.dumps({
      "what": "side_by_side", "budget_s": _BUDGET.value,
      "ours": {k: a[k] for k in ("steps", "learning_rate", "batch", "final_acc")}
              | _at(a["curve"]) | {"curve": a["curve"]},
      "transformers": {k: b[k] for k in ("steps", "learning_rate", "batch", "final_acc")}
                      | _at(b["curve"]) | {"curve": b["curve"]},
      "ref_neighbours": a["ref_neighbours"], "ref_unigram": a["ref_unigram"],
      "ours_seconds_to_transformers_final": reach,
      "final_ratio": round(a["final_acc"] / max(target, 1e-9), 2)}))


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "data", "workdir"])
  app.run(main)
