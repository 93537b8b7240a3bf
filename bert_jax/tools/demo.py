"""`bert-jax demo`: pretrain the tiny model on the embedded People's Daily corpus,
then fine-tune it on review sentiment.

Prepares the corpus (SentencePiece + NSP shards), pretrains on CPU for a few minutes
and prints how MLM and NSP accuracy moved; then fine-tunes review sentiment from that
checkpoint and from scratch and prints their test accuracy beside a naive-Bayes
baseline (bert_jax.tools.sentiment_demo). Re-running continues from the checkpoint and
reuses finished fine-tuning runs.
"""

import json
import os
import time

from bert_jax.pretrain import loop as pretrain
from bert_jax.tools import sentiment_demo
from bert_jax.configs import pretrain as pretrain_configs

# About 4.5 minutes of training on 2 CPU cores (tiny, batch 32, seq 128, ~3.8 steps/s);
# MLM accuracy is ~0.14 by then and creeps up slowly afterwards.
DEMO_STEPS = 1000


def default_config():
  config = pretrain_configs.get_config("tiny")
  config.train.num_steps = DEMO_STEPS
  config.train.log_every = 100
  config.train.checkpoint_every = 500
  return config


def accuracy_table(workdir: str) -> list[dict]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  by_step = {}  # a resumed run may log a step again; eval rows add their own keys
  for r in rows:
    by_step.setdefault(r["step"], {}).update(r)
  return [by_step[s] for s in sorted(by_step)]


def run(workdir: str, config=None) -> list[dict]:
  config = config or default_config()
  start = time.time()
  pretrain.run(config, workdir)
  rows = accuracy_table(workdir)
  print(f"\nbert-jax demo: tiny BERT on People's Daily (1998-01), workdir {workdir}")
  print(f"{'step':>6} {'loss':>8} {'mlm_acc':>8} {'nsp_acc':>8}")
  for r in rows:
    print(f"{r['step']:>6} {r['loss']:>8.3f} {r['mlm_accuracy']:>8.3f} "
          f"{r['nsp_accuracy']:>8.3f}")
  first, last = rows[0], rows[-1]
  print(f"MLM accuracy {first['mlm_accuracy']:.3f} -> {last['mlm_accuracy']:.3f}, "
        f"NSP accuracy {first['nsp_accuracy']:.3f} -> {last['nsp_accuracy']:.3f} "
        f"({time.time() - start:.0f} s)")
  if "eval_mlm_accuracy" in last:
    print(f"held-out documents: MLM accuracy {last['eval_mlm_accuracy']:.3f}, "
          f"NSP accuracy {last['eval_nsp_accuracy']:.3f}")
  sentiment_demo.run(workdir)
  return rows
