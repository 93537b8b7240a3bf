"""Held-out MLM accuracy against training time for one pretraining recipe, beside the
count-based references on the same masked positions. One JSON line: the eval curve,
the accuracy reached by 2, 5 and 10 minutes of training time (the last evaluation at
or before each), and the references. A row of BUILD.md's recipe table.

    python benchmarks/time_to_accuracy.py --config configs/pretrain.py:tiny \
        --workdir /tmp/tta/a --budget 150 --config.data.objective=none

Runs `pretrain` with train.time_budget=BUDGET (so the schedule decays to 0 at the
budget) and evaluates every --eval_every steps. The workdir must be new or hold this
very run. Run one at a time: parallel runs distort each other's timings.
"""

import json
import os

from absl import app, flags
from ml_collections import config_flags

from bert_jax.runtime import host_memory

host_memory.keep_freed_memory()

from bert_jax.pretrain import loop as pretrain  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Pretraining config.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Workdir of this run.")
_BUDGET = flags.DEFINE_float("budget", 150.0, "Training-time budget in seconds.")
_EVAL_EVERY = flags.DEFINE_integer("eval_every", 100, "Steps between evaluations.")
_MARKS = (120, 300, 600)


def main(argv):
  del argv
  config = _CONFIG.value
  config.train.time_budget = _BUDGET.value
  config.train.num_steps = max(config.train.num_steps, 1_000_000)
  config.train.eval_every = _EVAL_EVERY.value
  config.train.checkpoint_every = 1_000_000  # only the final one
  config.train.log_every = _EVAL_EVERY.value
  pretrain.run(config, _WORKDIR.value)
  with open(os.path.join(_WORKDIR.value, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  refs = next((r for r in rows if "ref_neighbours_mlm_accuracy" in r), {})
  curve = [(round(r["train_seconds"], 1), round(r["eval_mlm_accuracy"], 4))
           for r in rows if "eval_mlm_accuracy" in r]
  at = {f"acc_at_{m // 60}min": max((a for t, a in curve if t <= m), default=None)
        for m in _MARKS if m <= _BUDGET.value + 1}
  print(json.dumps({
      "what": "time_to_accuracy", "budget_s": _BUDGET.value, "size": config.model.size,
      "objective": config.data.objective, "mask_prob": config.data.mask_prob,
      "hidden_dropout": config.model.hidden_dropout,
      "learning_rate": config.optimizer.learning_rate,
      "warmup_steps": config.optimizer.warmup_steps,
      "batch": config.train.global_batch_size, "seq": config.data.max_seq_length,
      "steps": max(r["step"] for r in rows), "final_acc": curve[-1][1] if curve else None,
      **at, "ref_neighbours": refs.get("ref_neighbours_mlm_accuracy"),
      "ref_unigram": refs.get("ref_unigram_mlm_accuracy"), "curve": curve}))


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
