"""`bert-jax demo`: pretrain the tiny model on the embedded People's Daily corpus and
the sentiment task's training reviews, then fine-tune it on review sentiment.

Prepares the corpus (SentencePiece + shards), pretrains `configs/pretrain.py:demo`
for a 7.5-minute training-time budget on CPU and prints how MLM accuracy moved, the
held-out accuracy beside the count-based references on the same masked positions,
and the path of a picture of it against training time; then fine-tunes review
sentiment from that checkpoint and from scratch and prints their test accuracy beside
two classic baselines (bert_jax.tools.sentiment_demo). Re-running continues from the
checkpoint and reuses finished fine-tuning runs.
"""

import json
import logging
import os
import shutil
import time

import jax

from bert_jax.data import corpus, prepare
from bert_jax.errors import InputError
from bert_jax.pretrain import loop as pretrain
from bert_jax.pretrain import resume
from bert_jax.tools import sentiment_demo
from bert_jax.configs import pretrain as pretrain_configs

# 7.5 minutes of training time (configs/pretrain.py:demo, a time budget: the
# schedule decays to 0 when it is spent, however fast the machine), so the whole
# demo, fine-tuning included, stays within 15 minutes on 2 CPU cores (12 min on a
# slow day). Five minutes gave 2,626 steps on a fast day of the same machine but
# 1,698 on a slow one, still on the plateau of frequent pieces (held-out 0.168).
DEMO_BUDGET = 450.0
CPUINFO = "/proc/cpuinfo"  # Linux's CPU flags, read by fast_bfloat16


def fast_bfloat16() -> bool:
  """Whether bfloat16 compute is fast here: on accelerators, and on CPUs with native
  bf16 dot products (AVX512-BF16 or AMX), where the tiny step is 1.24x faster than
  in float32 (108.8 vs 135.1 ms, `bert-jax benchmark --what step`); elsewhere XLA:CPU
  would emulate it."""
  if jax.default_backend() != "cpu":
    return True
  try:
    with open(CPUINFO, encoding="utf-8") as f:
      flags = next((line.split() for line in f if line.startswith("flags")), [])
  except OSError:
    return False
  return "avx512_bf16" in flags or "amx_bf16" in flags


def default_config():
  config = pretrain_configs.get_config("demo")
  config.model.dtype = "bfloat16" if fast_bfloat16() else "float32"
  config.train.time_budget = DEMO_BUDGET
  config.train.num_steps = 1_000_000  # the budget ends training
  config.train.log_every = 100
  config.train.eval_every = 250  # points of the accuracy-against-time picture
  config.train.checkpoint_every = 1000
  return config


def accuracy_table(workdir: str) -> list[dict]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  by_step = {}  # a resumed run may log a step again; eval rows add their own keys
  for r in rows:
    by_step.setdefault(r["step"], {}).update(r)
  return [by_step[s] for s in sorted(by_step)]


def plot(logged: list[dict], path: str) -> str | None:
  """A PNG of held-out MLM accuracy against training time, with the count-based
  references as horizontal lines; its path, or None without evaluations."""
  evals = [r for r in logged if "eval_mlm_accuracy" in r and "train_seconds" in r]
  if not evals:
    return None
  # pylint: disable=g-import-not-at-top
  import matplotlib
  matplotlib.use("Agg")  # files only, no display
  from matplotlib import pyplot as plt
  fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
  ax.plot([r["train_seconds"] / 60 for r in evals],
          [r["eval_mlm_accuracy"] for r in evals], "o-", label="bert_jax (held-out)")
  refs = next((r for r in logged if "ref_neighbours_mlm_accuracy" in r), {})
  for key, label, style in (("ref_neighbours_mlm_accuracy", "two-sided neighbours", "--"),
                            ("ref_unigram_mlm_accuracy", "most frequent token", ":")):
    if key in refs:
      ax.axhline(refs[key], linestyle=style, color="gray", label=label)
  ax.set(xlabel="training time (minutes)", ylabel="masked-token accuracy",
         title="MLM accuracy on held-out documents")
  ax.set_ylim(bottom=0)
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
  return path


def _fresh_if_other_version(config, workdir: str) -> None:
  """A demo workdir made by another version (another recipe or data) is moved aside
  to WORKDIR.previous rather than refused: the demo then starts afresh."""
  try:
    resume.check(config, workdir, prepare.data_dir(config, workdir))
  except InputError as e:
    aside = workdir.rstrip("/") + ".previous"
    shutil.rmtree(aside, ignore_errors=True)
    os.replace(workdir, aside)
    logging.getLogger("bert_jax").warning(
        "%s holds another demo version's run (%s); moved it to %s and starting afresh",
        workdir, str(e).split(";")[0], aside)


def domain_text_path(workdir: str) -> str:
  return os.path.join(workdir, "sentiment", "domain", "train_reviews.txt")


def with_domain_text(config, workdir: str):
  """`config` reading the embedded corpus and, after it, the training reviews (never
  dev or test; its held-out documents stay the corpus's first articles): pretraining
  on the fine-tuning domain's unlabeled text lifted review sentiment from 0.819 to
  0.849 (BUILD.md § Pretraining recipe)."""
  config = config.copy_and_resolve_references()
  config.data.input = f"{corpus.EMBEDDED},{domain_text_path(workdir)}"
  return config


def run(workdir: str, config=None) -> list[dict]:
  config = config or with_domain_text(default_config(), workdir)
  start = time.time()
  _fresh_if_other_version(config, workdir)
  if corpus.EMBEDDED in config.data.input.split(","):
    reviews = sentiment_demo.write_domain_text(domain_text_path(workdir))
    logging.getLogger("bert_jax").info(
        "pretraining on People's Daily and the %d training reviews", reviews)
  pretrain.run(config, workdir)
  logged = accuracy_table(workdir)
  rows = [r for r in logged if "loss" in r]  # training steps (step 0: the references)
  refs = next((r for r in logged if "ref_neighbours_mlm_accuracy" in r), {})
  nsp = config.data.objective != "none"  # a sentence task to report
  model = pretrain_configs.describe(config.model)
  print(f"\nbert-jax demo: {model} BERT ({config.model.dtype}) on People's "
        f"Daily (1998-01)" + (" and the training reviews" if "," in config.data.input
                              else "") + f", workdir {workdir}")
  print(f"{'step':>6} {'minutes':>8} {'loss':>8} {'mlm_acc':>8}"
        + (f" {'nsp_acc':>8}" if nsp else ""))
  for r in rows:
    minutes = f"{r['train_seconds'] / 60:8.1f}" if "train_seconds" in r else f"{'':8}"
    print(f"{r['step']:>6} {minutes} {r['loss']:>8.3f} {r['mlm_accuracy']:>8.3f}"
          + (f" {r['nsp_accuracy']:>8.3f}" if nsp else ""))
  first, last = rows[0], rows[-1]
  print(f"MLM accuracy {first['mlm_accuracy']:.3f} -> {last['mlm_accuracy']:.3f}"
        + (f", NSP accuracy {first['nsp_accuracy']:.3f} -> {last['nsp_accuracy']:.3f}"
           if nsp else "") + f" ({time.time() - start:.0f} s)")
  if "eval_mlm_accuracy" in last:
    print(f"held-out documents: MLM accuracy {last['eval_mlm_accuracy']:.3f}"
          + (f", NSP accuracy {last['eval_nsp_accuracy']:.3f}" if nsp else ""))
  if refs:
    print(f"  count-based references on the same masked positions: most frequent token "
          f"{refs['ref_unigram_mlm_accuracy']:.3f}, two-sided neighbours "
          f"{refs['ref_neighbours_mlm_accuracy']:.3f}")
  picture = plot(logged, os.path.join(workdir, "mlm_accuracy.png"))
  if picture:
    print(f"held-out MLM accuracy against training time: {picture}")
  sentiment_demo.run(workdir)
  return rows
