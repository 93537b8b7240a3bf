"""Times the pretraining train step (same jit, shardings and optimizer as `pretrain`).

    python benchmarks/train_step.py --size tiny --batch 32 [--seq 128] [--steps 10]

Prints one JSON line. Batches are synthetic (random ids, 15 % masked positions).
"""

import argparse
import json
import statistics
import time

import flax.linen as nn
import jax
import numpy as np

from bert_jax import model as model_lib, optimizer, sharding, train_step
from bert_jax.configs import pretrain


def synthetic_batch(batch, seq, predictions, vocab, seed=0):
  rng = np.random.default_rng(seed)
  return dict(
      input_ids=rng.integers(5, vocab, (batch, seq)).astype(np.int32),
      token_type_ids=(np.arange(seq)[None] >= seq // 2).repeat(batch, 0).astype(np.int32),
      attention_mask=np.ones((batch, seq), np.int32),
      masked_positions=np.sort(rng.choice(np.arange(1, seq), (batch, predictions)), 1)
      .astype(np.int32),
      masked_ids=rng.integers(5, vocab, (batch, predictions)).astype(np.int32),
      masked_weights=np.ones((batch, predictions), np.float32),
      next_sentence_label=rng.integers(0, 2, batch).astype(np.int32))


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--size", default="tiny")
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--seq", type=int, default=128)
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--dtype", default="float32")
  args = parser.parse_args()

  config = pretrain.get_config(args.size)
  model = model_lib.BertForPreTraining(
      model_lib.BertConfig.from_dict({**config.model, "dtype": args.dtype}))
  tx, lr = optimizer.make(config.optimizer, config.train.num_steps)
  rules = config.mesh.rules
  mesh = sharding.make_mesh(config.mesh.shape)
  _, shardings = train_step.abstract_state(model, tx, mesh, rules, args.seq)
  state = jax.jit(lambda r: train_step.init_state(model, tx, r, args.seq),
                  out_shardings=shardings)(jax.random.key(0))
  batch_sh = sharding.batch_sharding(mesh, rules)
  predictions = max(1, round(0.15 * args.seq))
  batch = sharding.to_global(
      synthetic_batch(args.batch, args.seq, predictions, config.model.vocab_size), batch_sh)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    step = train_step.jit_train_step(model, tx, shardings, batch_sh,
                                     sharding.replicated(mesh), lr)
    rng = jax.random.key(1)
    for _ in range(2):  # compile + warm-up
      state, metrics = step(state, batch, rng)
    jax.block_until_ready(metrics)
    times = []
    for _ in range(args.steps):
      start = time.perf_counter()
      state, metrics = step(state, batch, rng)
      jax.block_until_ready(metrics)
      times.append(time.perf_counter() - start)
  step_s = statistics.median(times)
  print(json.dumps({
      "size": args.size, "batch": args.batch, "seq": args.seq, "dtype": args.dtype,
      "params": model_lib.count_params(state.params),
      "step_ms": round(step_s * 1000, 1),
      "tokens_per_sec": round(args.batch * args.seq / step_s, 1),
      "device_kind": jax.devices()[0].device_kind, "device_count": jax.device_count(),
  }))


if __name__ == "__main__":
  main()
