"""Each `bert-jax export` dtype of one fine-tuned classifier, measured: logit drift
against float32, test accuracy, artifact size, and CPU latency at batch 1 and
throughput at batch 32 (sentences/s), each artifact run through
bert_jax/inference/serving.py as a service would. One JSON line; BUILD.md § Export
has the table.

    python benchmarks/export_table.py --finetuned W --test test.jsonl --workdir /tmp/ex

W is a fine-tuned classification workdir (e.g. the demo's
demo_workdir/sentiment/pretrained), --test a labelled file in its format (the demo's
demo_workdir/sentiment/data/test.jsonl). Timings take turns between the artifacts,
--rounds x --calls timed calls each after a warm-up; medians.
"""

import argparse
import json
import os
import statistics
import time

import numpy as np

from bert_jax.finetune import loop as finetune
from bert_jax.finetune.tasks import classification
from bert_jax.inference import export, serving
from bert_jax.tools import benchmark


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--finetuned", required=True)
  parser.add_argument("--test", required=True)
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--calls", type=int, default=10)
  args = parser.parse_args()

  _, labels, _, _, tok, config = finetune.restore(args.finetuned)
  seq_len = config.data.max_seq_length
  examples = classification.read(args.test)
  arrays, _, _ = classification.featurize(examples, tok, labels, config.data)
  gold = np.asarray(arrays["label"])
  inputs = [arrays[k] for k in export.INPUTS]

  served, rows = {}, {}
  for dtype in export.DTYPES:
    out_dir = os.path.join(args.workdir, dtype)
    start = time.time()
    export.export(args.finetuned, out_dir, None, seq_len, dtype)
    seconds = time.time() - start
    served[dtype] = serving.load(out_dir)
    logits = np.concatenate([
        served[dtype](*(x[i:i + 32] for x in inputs))["logits"]
        for i in range(0, len(gold), 32)])
    rows[dtype] = {"bytes": os.path.getsize(os.path.join(out_dir, serving.MODEL_FILE)),
                   "export_seconds": round(seconds, 1),
                   "accuracy": float(np.mean(logits.argmax(-1) == gold)),
                   "logits": logits}
  reference = rows["float32"]["logits"]
  for row in rows.values():
    drift = np.abs(row.pop("logits") - reference)
    row.update(max_logit_drift=float(drift.max()), mean_logit_drift=float(drift.mean()))

  batches = {1: [x[:1] for x in inputs], 32: [x[:32] for x in inputs]}
  times = {(d, b): [] for d in served for b in batches}
  for (dtype, b) in times:
    benchmark.time_steps(lambda: served[dtype](*batches[b]), 2)  # compile, warm up
  for _ in range(args.rounds):
    for (dtype, b) in times:
      times[dtype, b] += benchmark.time_steps(lambda: served[dtype](*batches[b]), args.calls)
  for dtype, row in rows.items():
    row["latency_ms_batch1"] = round(statistics.median(times[dtype, 1]) * 1e3, 2)
    row["sentences_per_sec_batch32"] = round(32 / statistics.median(times[dtype, 32]), 1)
  print(json.dumps({"what": "export_table", "finetuned": args.finetuned,
                    "test_examples": len(gold), "seq_len": seq_len, **rows}))


if __name__ == "__main__":
  main()
