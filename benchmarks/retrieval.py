"""Headline -> body retrieval on the embedded People's Daily corpus: BM25 over
character bigrams (bm25s) beside the pretrained encoder's embeddings with no
fine-tuning, unsupervised SimCSE, and contrastive fine-tuning on headline-body pairs.
One JSON line; BUILD.md § Retrieval has the table.

    pip install bm25s
    python benchmarks/retrieval.py --workdir /tmp/retrieval --pretrain_budget 300
    python benchmarks/retrieval.py --workdir /tmp/retrieval --pretrained W

An article of the corpus (data.corpus.peoples_daily_lines) opens with its headline,
the first line; its body is its body lines (those ending a sentence: bylines and
datelines are left out). An article takes part if its first line is a headline
(--min_headline to 40 characters, no full stop, not a photo credit or caption:
`is_headline`), its body has at least --min_body characters, and no other article
of its set has the same headline. The test pool is the articles held out of pretraining
(the first data.eval_documents of the pretrained workdir's config): each headline
must find its own body among all of the pool's bodies. Fine-tuning uses the other
articles, its last --dev articles to choose the epoch; the pool is scored once.

Encoders embed with mean pooling and see the first data.max_seq_length tokens of a
body; BM25 indexes whole bodies.
"""

import argparse
import collections
import json
import os
import time

import numpy as np

from bert_jax.configs import finetune as finetune_configs, pretrain as pretrain_configs
from bert_jax.data import corpus
from bert_jax.finetune import loop as finetune
from bert_jax.finetune.tasks import similarity
from bert_jax.inference import encode as encode_lib
from bert_jax.interop import pretrained as pretrained_lib
from bert_jax.pretrain import loop as pretrain


# The corpus has no article markers (corpus.peoples_daily_lines guesses them), so
# some "articles" open with a photo credit, a caption or a closing line instead of a
# headline; their first line is not taken for one if it has any of these.
NOT_HEADLINE = ("摄", "图片", "。", "！", "？")
MAX_HEADLINE = 40


def is_headline(line: str, min_chars: int) -> bool:
  return (min_chars <= len(line) <= MAX_HEADLINE and not line.startswith("（")
          and not any(s in line for s in NOT_HEADLINE))


def articles(min_headline: int, min_body: int) -> list[tuple[str, str] | None]:
  """(headline, body) of every article of the corpus in its order; None for one
  that does not take part."""
  out = []
  for lines in corpus.peoples_daily_lines():
    texts = ["".join(corpus.untag_words(line)) for line in lines]
    headline, body = texts[0], "".join(t for t in texts[1:] if corpus.is_body(t))
    ok = is_headline(headline, min_headline) and len(body) >= min_body
    out.append((headline, body) if ok else None)
  return out


def unique_headlines(pairs: list) -> list[tuple[str, str]]:
  """The pairs whose headline occurs once among them (a repeated one, such as a
  photo caption's, cannot say which body it wants)."""
  pairs = [p for p in pairs if p is not None]
  counts = collections.Counter(headline for headline, _ in pairs)
  return [p for p in pairs if counts[p[0]] == 1]


def bigrams(text: str) -> list[str]:
  return [text[i:i + 2] for i in range(len(text) - 1)] or [text]


def bm25_ranks(pool) -> np.ndarray:
  import bm25s  # pylint: disable=g-import-not-at-top
  retriever = bm25s.BM25()
  retriever.index([bigrams(body) for _, body in pool], show_progress=False)
  scores = np.stack([retriever.get_scores(bigrams(headline)) for headline, _ in pool])
  return similarity.ranks(scores)


def embedding_ranks(model_dir: str, pool, max_length: int) -> np.ndarray:
  model, params, tok = pretrained_lib.from_pretrained(model_dir)
  embed = lambda texts: encode_lib.encode(model, params, tok, texts, pooling="mean",
                                          max_length=max_length, progress=False)
  queries = embed([h for h, _ in pool])
  return similarity.ranks(queries @ embed([b for _, b in pool]).T)


def write_rows(path: str, rows: list[dict]) -> str:
  with open(path, "w", encoding="utf-8") as f:
    for row in rows:
      f.write(json.dumps(row, ensure_ascii=False) + "\n")
  return path


def fine_tune(pretrained: str, train_rows, dev_file: str, workdir: str, args) -> dict:
  c = finetune_configs.get_config("similarity")  # its defaults, by model size
  c.init_from = pretrained
  c.train_file = write_rows(os.path.join(args.workdir, os.path.basename(workdir)
                                         + "_train.jsonl"), train_rows)
  c.eval_file = dev_file
  c.data.max_seq_length = args.max_length
  if args.epochs:
    c.train.epochs = args.epochs
  start = time.time()
  results = finetune.run(c, workdir)
  return {"dev_best": results["best"], "seconds": round(time.time() - start, 1)}


def pretrain_demo(workdir: str, budget: float, held_out: int) -> str:
  """The demo's recipe for `budget` seconds of training, holding out `held_out`
  articles (the test pool)."""
  config = pretrain_configs.get_config("demo")
  config.train.time_budget = budget
  config.train.num_steps = 1_000_000
  config.data.eval_documents = held_out
  pretrain.run(config, workdir)
  return workdir


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--pretrained", help="a pretrain workdir; else one is trained")
  parser.add_argument("--pretrain_budget", type=float, default=300.0,
                      help="seconds of `:demo` pretraining when --pretrained is not given")
  parser.add_argument("--pool_articles", type=int, default=500,
                      help="articles held out of that pretraining (the test pool)")
  parser.add_argument("--dev", type=int, default=200)
  parser.add_argument("--min_headline", type=int, default=5)
  parser.add_argument("--min_body", type=int, default=50)
  parser.add_argument("--max_length", type=int, default=128)
  parser.add_argument("--epochs", type=int, default=0, help="0: by model size")
  args = parser.parse_args()
  os.makedirs(args.workdir, exist_ok=True)
  out = {"what": "retrieval"}
  pretrained = args.pretrained
  if not pretrained:
    start = time.time()
    pretrained = pretrain_demo(os.path.join(args.workdir, "pretrain"),
                               args.pretrain_budget, args.pool_articles)
    out["pretrain_seconds"] = round(time.time() - start, 1)
  with open(os.path.join(pretrained, "config.json")) as f:
    held_out = json.load(f)["data"]["eval_documents"]

  every = articles(args.min_headline, args.min_body)
  pool = unique_headlines(every[:held_out])
  rest = unique_headlines(every[held_out:])
  train, dev = rest[:-args.dev], rest[-args.dev:]
  out.update({"pretrained": pretrained, "held_out_articles": held_out,
              "pool": len(pool), "train_pairs": len(train), "dev_pairs": len(dev)})
  dev_file = write_rows(os.path.join(args.workdir, "dev.jsonl"),
                        [{"text": h, "text_pair": b} for h, b in dev])

  systems = {}
  start = time.time()
  systems["bm25_char_bigrams"] = {"ranks": bm25_ranks(pool),
                                  "seconds": round(time.time() - start, 1)}
  start = time.time()
  systems["pretrained_mean"] = {"ranks": embedding_ranks(pretrained, pool,
                                                         args.max_length),
                                "seconds": round(time.time() - start, 1)}
  runs = {
      # Unsupervised SimCSE: every training headline and body on its own.
      "simcse": [{"text": t} for pair in train for t in pair],
      "contrastive_pairs": [{"text": h, "text_pair": b} for h, b in train],
  }
  for name, rows in runs.items():
    workdir = os.path.join(args.workdir, name)
    info = fine_tune(pretrained, rows, dev_file, workdir, args)
    systems[name] = {"ranks": embedding_ranks(workdir, pool, args.max_length), **info}
  for name, system in systems.items():
    ranks = system.pop("ranks")
    out[name] = {**similarity.retrieval_metrics(ranks), **system}
  print(json.dumps(out, ensure_ascii=False))


if __name__ == "__main__":
  main()
