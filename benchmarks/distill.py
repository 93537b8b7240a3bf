"""Distillation on the embedded data: a teacher, a student at half its depth
distilled from it, the same student pretrained for the same wall time without a
teacher, and that student from scratch, each fine-tuned on review sentiment (the
demo's split) and People's Daily NER (benchmarks/ner.py's split), with inference
speed at seq 128 (the models taking turns, at the end). Results go to
WORKDIR/rows.jsonl as they finish (what is there is kept, so the study continues
across sittings, and --ner_lr adds a column); the table and one JSON line on stdout.

    python benchmarks/distill.py --workdir /tmp/distill [--data PREPARED_DIR]

Pretraining uses the demo's recipe (configs/pretrain.py:demo, bf16 where fast) with
time budgets; the student starts from every other teacher layer (DistilBERT) and
learns the teacher's MLM distribution at T=2 beside the hard MLM loss.
"""

import argparse
import json
import os
import shutil
import statistics
import sys

import jax

from bert_jax.configs import distill as distill_configs
from bert_jax.data import prepare, tokenizer
from bert_jax.distill import pretrain as distill
from bert_jax.model import bert as model_lib
from bert_jax.pretrain import loop as pretrain
from bert_jax.runtime import checkpoints
from bert_jax.tools import benchmark, demo, inference_benchmark, sentiment_demo

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ner as ner_benchmark  # noqa: E402  pylint: disable=g-import-not-at-top


def _pretrain_config(layers: int, budget: float, data: str):
  c = demo.default_config()
  c.model.num_layers = layers
  c.data.prepared_dir = data
  c.train.time_budget = budget
  c.train.eval_every = 500
  return c


def _last_eval(workdir: str) -> float:
  return [r for r in demo.accuracy_table(workdir)
          if "eval_mlm_accuracy" in r][-1]["eval_mlm_accuracy"]


def _speeds(workdirs: dict, rounds: int = 3, calls: int = 10) -> dict:
  """Sentences/s of each model's classifier (its config, random weights) at seq 128
  in batches of 32: the median of rounds x calls, the models taking turns."""
  prepared = {}
  for name, path in workdirs.items():
    cfg = bert_jax_cfg(path)
    prepared[name] = inference_benchmark.Ours(cfg).prepare(
        inference_benchmark.inputs(32, 128, cfg.vocab_size))
    benchmark.time_steps(prepared[name], 2)  # compile, warm up
  times = {name: [] for name in prepared}
  for _ in range(rounds):
    for name, call in prepared.items():
      times[name] += benchmark.time_steps(call, calls)
  return {name: round(32 / statistics.median(t), 1) for name, t in times.items()}


def bert_jax_cfg(workdir: str) -> model_lib.BertConfig:
  return model_lib.BertConfig.from_dict(checkpoints.read_config(workdir)["model"])


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--data", default="", help="prepared shards (else prepared here)")
  parser.add_argument("--teacher_layers", type=int, default=4)
  parser.add_argument("--teacher_budget", type=float, default=900)
  parser.add_argument("--student_budget", type=float, default=450)
  parser.add_argument("--ner_train", type=int, default=4000)
  parser.add_argument("--ner_test", type=int, default=800)
  parser.add_argument("--ner_lr", type=float, default=0.0,
                      help="NER fine-tuning learning rate (0: the size default)")
  args = parser.parse_args()
  w = args.workdir
  os.makedirs(w, exist_ok=True)
  rows_file = os.path.join(w, "rows.jsonl")
  rows = {}
  if os.path.exists(rows_file):
    rows = {r["system"]: r for r in map(json.loads, open(rows_file))}
    for r in rows.values():
      r.pop("sentences_per_sec", None)  # timed again below, the models taking turns
  data = args.data
  if not data:
    data = os.path.join(w, "prep", "data")
    if not os.path.exists(os.path.join(data, prepare.STATS_FILE)):
      c = _pretrain_config(1, 1, "")
      prepare.run(c, os.path.join(w, "prep"))
  spm = tokenizer.find(os.path.dirname(data))

  # Pretraining: teacher, distilled student, student without a teacher.
  teacher, distilled, plain = (os.path.join(w, n) for n in ("teacher", "distilled", "plain"))
  half = args.teacher_layers // 2
  if not os.path.exists(os.path.join(teacher, "tokenizer")):
    pretrain.run(_pretrain_config(args.teacher_layers, args.teacher_budget, data), teacher)
    tokenizer.copy_into(spm, teacher)
  if not os.path.exists(os.path.join(distilled, "tokenizer")):
    shutil.rmtree(distilled, ignore_errors=True)
    c = distill_configs.get_config("demo")
    base = _pretrain_config(half, args.student_budget, data)
    for group in ("model", "data", "train"):
      c[group].update(base[group].to_dict())
    c.teacher = teacher
    c.distill.init_from_teacher = True
    distill.run(c, distilled)
  if not os.path.exists(os.path.join(plain, "tokenizer")):
    pretrain.run(_pretrain_config(half, args.student_budget, data), plain)
    tokenizer.copy_into(spm, plain)

  # Downstream data: the demo's sentiment split; benchmarks/ner.py's NER split.
  sent_dir = os.path.join(w, "sentiment")
  sentiment_demo.write_split(sent_dir)
  ner_files = ner_benchmark.split_files(teacher, os.path.join(w, "ner"), args.ner_train,
                                        args.ner_test)[0]

  systems = (("teacher", teacher, True), ("distilled student", distilled, True),
             ("student without teacher", plain, True), ("student from scratch", plain, False))
  ner_key = f"ner_f1@{args.ner_lr:g}" if args.ner_lr else "ner_f1"
  ner_overrides = [f"optimizer.learning_rate={args.ner_lr}"] if args.ner_lr else []
  for name, path, init in systems:
    row = rows.setdefault(name, {"system": name, "layers": bert_jax_cfg(path).num_layers,
                                 "mlm_accuracy": _last_eval(path) if init else None})
    key = name.replace(" ", "_")
    if "sentiment" not in row:
      row["sentiment"] = sentiment_demo._fine_tune(  # pylint: disable=protected-access
          path, sent_dir, os.path.join(w, "ft_sentiment", key), init)["test_accuracy"]
    if ner_key not in row:
      row[ner_key] = ner_benchmark.fine_tune(
          path, ner_files["train"], ner_files["test"],
          os.path.join(w, "ft_ner", key + (f"_lr{args.ner_lr:g}" if args.ner_lr else "")),
          init, overrides=ner_overrides)["f1"]
    with open(rows_file, "w") as f:  # every finished result is kept
      f.writelines(json.dumps(r) + "\n" for r in rows.values())
  speeds = _speeds({name: path for name, path, _ in systems[:3]})
  speeds["student from scratch"] = speeds["student without teacher"]  # the same model
  ner_keys = sorted({k for r in rows.values() for k in r if k.startswith("ner_f1")})
  print(f"{'system':26} {'layers':>6} {'MLM':>6} {'sentiment':>9} "
        + " ".join(f"{k:>11}" for k in ner_keys) + f" {'sent/s':>7}")
  for name, _, _ in systems:
    r = rows[name]
    mlm = "" if r["mlm_accuracy"] is None else f"{r['mlm_accuracy']:.3f}"
    print(f"{name:26} {r['layers']:>6} {mlm:>6} {r['sentiment']:>9.3f} "
          + " ".join(f"{r.get(k, float('nan')):>11.3f}" for k in ner_keys)
          + f" {speeds[name]:>7.1f}")
  print(json.dumps({"what": "distill", "rows": list(rows.values()),
                    "sentences_per_sec": speeds,
                    "device_kind": jax.devices()[0].device_kind}))


if __name__ == "__main__":
  main()
