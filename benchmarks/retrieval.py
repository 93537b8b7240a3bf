"""Headline -> body retrieval on the embedded People's Daily corpus: BM25 over
character bigrams (bm25s) beside the pretrained encoder's embeddings with no
fine-tuning, unsupervised SimCSE, and contrastive fine-tuning on headline-body pairs:
alone, with BM25-mined hard negatives, and with inverse-cloze pairs added.
One JSON line; BUILD.md § Retrieval has the table.

    pip install bm25s
    python benchmarks/retrieval.py --workdir /tmp/retrieval --pretrain_budget 300
    python benchmarks/retrieval.py --workdir /tmp/retrieval --pretrained W \
        --systems contrastive_pairs_ict --ict_epochs 2 \
        --finetune optimizer.learning_rate=1e-3

An article of the corpus (data.corpus.peoples_daily_lines) opens with its headline,
the first line; its body is its body lines (those ending a sentence: bylines and
datelines are left out). An article takes part if its first line is a headline
(--min_headline to 40 characters, no full stop, not a photo credit or caption:
`is_headline`), its body has at least --min_body characters, and no other article
of its set has the same headline. The test pool is the articles held out of pretraining
(the first data.eval_documents of the pretrained workdir's config): each headline
must find its own body among all of the pool's bodies. Fine-tuning uses the other
articles, its last --dev articles to choose the epoch; the pool is scored once.

Encoders embed with mean pooling and see the first --max_length tokens of a body;
BM25 indexes whole bodies; --passage_chars N also scores each body by its best
passage of about N characters (MaxP), reported as "maxp"; --bm25_chars 60,180 also
scores BM25 given only each pool body's first N characters (what an encoder's cut
sees; 128 pieces cover about 180), reported as its "first_chars". A hard negative is
the training body BM25 ranks highest for a headline after its own (DPR's). Inverse-cloze
pairs (Lee et al. 2019) need no headline: a sentence of a training article's body is
the query for the rest of it.
"""

import argparse
import collections
import json
import os
import time

import numpy as np

from bert_jax.configs import finetune as finetune_configs
from bert_jax.data import corpus
from bert_jax.finetune import loop as finetune
from bert_jax.finetune.tasks import similarity
from bert_jax.inference import encode as encode_lib
from bert_jax.interop import pretrained as pretrained_lib
from bert_jax.pretrain import loop as pretrain
from bert_jax.tools import demo
import config_overrides  # benchmarks/, the script's own directory


# The corpus has no article markers (corpus.peoples_daily_lines guesses them), so
# some "articles" open with a photo credit, a caption or a closing line instead of a
# headline; their first line is not taken for one if it has any of these.
NOT_HEADLINE = ("摄", "图片", "。", "！", "？")
MAX_HEADLINE = 40


def is_headline(line: str, min_chars: int) -> bool:
  return (min_chars <= len(line) <= MAX_HEADLINE and not line.startswith("（")
          and not any(s in line for s in NOT_HEADLINE))


def first_lines_and_bodies() -> list[tuple[str, str]]:
  """(first line, body) of every article of the corpus in its order."""
  out = []
  for lines in corpus.peoples_daily_lines():
    texts = ["".join(corpus.untag_words(line)) for line in lines]
    out.append((texts[0], "".join(t for t in texts[1:] if corpus.is_body(t))))
  return out


def articles(texts, min_headline: int, min_body: int) -> list[tuple[str, str] | None]:
  """`texts` (first_lines_and_bodies) as (headline, body); None for an article that
  does not take part."""
  return [(first, body) if is_headline(first, min_headline) and len(body) >= min_body
          else None for first, body in texts]


def split(texts, held_out: int, dev: int, min_headline: int, min_body: int):
  """(pool, train, dev, ict_bodies) of `texts` (first_lines_and_bodies): the test
  pool is the headline-body pairs of the first HELD_OUT articles (those held out of
  pretraining), dev the last DEV pairs of the others and train the rest;
  ict_bodies are the bodies of every other article with or without a headline,
  dev's left out, for inverse-cloze pairs."""
  every = articles(texts, min_headline, min_body)
  pool = unique_headlines(every[:held_out])
  rest = unique_headlines(every[held_out:])
  train, dev_pairs = rest[:-dev], rest[-dev:]
  dev_bodies = {b for _, b in dev_pairs}
  ict_bodies = [b for _, b in texts[held_out:] if b not in dev_bodies]
  return pool, train, dev_pairs, ict_bodies


def ict_pairs(bodies: list[str], leads: int) -> list[tuple[str, str]]:
  """Inverse-cloze pairs (Lee et al. 2019): each of a body's first `leads` sentences
  (0: all of them) is a query for the rest of its body."""
  out = []
  for body in bodies:
    sentences = corpus.split_sentences(body)
    for i, sentence in enumerate(sentences[:leads or None]):
      rest = "".join(sentences[:i] + sentences[i + 1:])
      if 10 <= len(sentence) <= 120 and len(rest) >= 50:
        out.append((sentence, rest))
  return out


def unique_headlines(pairs: list) -> list[tuple[str, str]]:
  """The pairs whose headline occurs once among them (a repeated one, such as a
  photo caption's, cannot say which body it wants)."""
  pairs = [p for p in pairs if p is not None]
  counts = collections.Counter(headline for headline, _ in pairs)
  return [p for p in pairs if counts[p[0]] == 1]


def bigrams(text: str) -> list[str]:
  return [text[i:i + 2] for i in range(len(text) - 1)] or [text]


def bm25_scores(pairs) -> np.ndarray:
  """BM25 of every headline [rows] against every body [columns] of `pairs`."""
  import bm25s  # pylint: disable=g-import-not-at-top
  retriever = bm25s.BM25()
  retriever.index([bigrams(body) for _, body in pairs], show_progress=False)
  return np.stack([retriever.get_scores(bigrams(headline)) for headline, _ in pairs])


def bm25_negatives(pairs) -> list[str]:
  """Each headline's hard negative: the body BM25 ranks highest after its own."""
  scores = bm25_scores(pairs)
  np.fill_diagonal(scores, -np.inf)
  return [pairs[j][1] for j in scores.argmax(1)]


def passages(body: str, chars: int) -> list[str]:
  """The body's sentences in consecutive runs of about `chars` characters (a longer
  sentence alone)."""
  out = [""]
  for sentence in corpus.split_sentences(body):
    if out[-1] and len(out[-1]) + len(sentence) > chars:
      out.append("")
    out[-1] += sentence
  return out


def embedding_ranks(model_dir: str, pool, max_length: int,
                    passage_chars: int = 0) -> dict[str, np.ndarray]:
  """{"ranks": each headline's body's rank by cosine, the body cut to its first
  max_length tokens}; with `passage_chars` also "maxp_ranks": a body scores its best
  passage (MaxP, Dai & Callan 2019), so the text past the cut counts too."""
  model, params, tok = pretrained_lib.from_pretrained(model_dir)
  embed = lambda texts: encode_lib.encode(model, params, tok, texts, pooling="mean",
                                          max_length=max_length, progress=False)
  queries = embed([h for h, _ in pool])
  out = {"ranks": similarity.ranks(queries @ embed([b for _, b in pool]).T)}
  if passage_chars:
    pieces = [passages(b, passage_chars) for _, b in pool]
    scores = queries @ embed([p for ps in pieces for p in ps]).T  # [queries, passages]
    # A body's passages are consecutive columns; each body has at least one.
    firsts = np.cumsum([0] + [len(ps) for ps in pieces[:-1]])
    out["maxp_ranks"] = similarity.ranks(np.maximum.reduceat(scores, firsts, axis=1))
  return out


def write_rows(path: str, rows: list[dict]) -> str:
  with open(path, "w", encoding="utf-8") as f:
    for row in rows:
      f.write(json.dumps(row, ensure_ascii=False) + "\n")
  return path


def fine_tune(pretrained: str, train_rows, dev_file: str, workdir: str, args,
              overrides: list[str]) -> dict:
  c = finetune_configs.get_config("similarity")  # its defaults, by model size
  c.init_from = pretrained
  c.train_file = write_rows(os.path.join(args.workdir, os.path.basename(workdir)
                                         + "_train.jsonl"), train_rows)
  c.eval_file = dev_file
  c.data.max_seq_length = args.max_length
  config_overrides.apply(c, overrides + args.finetune)
  start = time.time()
  results = finetune.run(c, workdir)
  return {"dev_best": results["best"], "seconds": round(time.time() - start, 1)}


def pretrain_demo(workdir: str, budget: float, held_out: int) -> str:
  """The demo's recipe (bf16 where this CPU computes it natively) for `budget`
  seconds of training, holding out `held_out` articles (the test pool)."""
  config = demo.default_config()
  config.train.time_budget = budget
  config.data.eval_documents = held_out
  pretrain.run(config, workdir)
  return workdir


# The fine-tuned systems, in the order they run (--systems picks some).
FINE_TUNED = ("simcse", "contrastive_pairs", "contrastive_pairs_bm25_negatives",
              "contrastive_pairs_ict")


def _check(parser, args) -> None:
  """One line for a bad flag, before anything is pretrained or written."""
  chosen = set(filter(None, args.systems.split(",")))
  unknown = sorted(chosen - {*FINE_TUNED, "none"})
  if unknown:
    parser.error(f"--systems: unknown {unknown}; choose from {[*FINE_TUNED, 'none']}")
  if "none" in chosen and len(chosen) > 1:
    parser.error(f"--systems={args.systems}: none (no fine-tuning) stands alone")
  args.systems = chosen  # parsed once, as --bm25_chars below
  if args.ict_leads < 0:
    parser.error(f"--ict_leads={args.ict_leads}: 0 (every sentence) or more")
  if args.passage_chars < 0:
    parser.error(f"--passage_chars={args.passage_chars}: 0 (off) or more")
  try:
    args.bm25_chars = [int(n) for n in filter(None, args.bm25_chars.split(","))]
  except ValueError:
    parser.error(f"--bm25_chars={args.bm25_chars}: comma-separated character counts")
  if any(n < 1 for n in args.bm25_chars):
    parser.error(f"--bm25_chars: counts of at least 1, not {args.bm25_chars}")
  if args.ict_epochs < 1:
    parser.error(f"--ict_epochs={args.ict_epochs}: at least 1")
  config_overrides.check(parser, "--finetune", finetune_configs.get_config("similarity"),
                         args.finetune)


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
  parser.add_argument("--passage_chars", type=int, default=0,
                      help="also score each body by its best passage of about N "
                      "characters (MaxP; reported as 'maxp'); 0: off")
  parser.add_argument("--bm25_chars", default="",
                      help="also BM25 over each pool body's first N characters "
                      "(comma-separated; reported as 'first_chars')")
  parser.add_argument("--finetune", action="append", default=[], metavar="KEY=VALUE",
                      help="a field of configs/finetune.py:similarity, e.g. "
                      "train.epochs=20 (repeatable)")
  parser.add_argument("--ict_leads", type=int, default=0,
                      help="inverse-cloze queries per article: its first N sentences "
                      "(0: every one)")
  parser.add_argument("--ict_epochs", type=int, default=3)
  parser.add_argument("--systems", default="", help="fine-tuned systems to run "
                      "(comma-separated; default all; none: BM25 and the "
                      "pretrained embeddings only)")
  args = parser.parse_args()
  _check(parser, args)
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

  pool, train, dev, ict_bodies = split(first_lines_and_bodies(), held_out, args.dev,
                                       args.min_headline, args.min_body)
  out.update({"pretrained": pretrained, "held_out_articles": held_out,
              "pool": len(pool), "train_pairs": len(train), "dev_pairs": len(dev)})
  dev_file = write_rows(os.path.join(args.workdir, "dev.jsonl"),
                        [{"text": h, "text_pair": b} for h, b in dev])

  systems = {}
  start = time.time()
  systems["bm25_char_bigrams"] = {"ranks": similarity.ranks(bm25_scores(pool)),
                                  "seconds": round(time.time() - start, 1)}
  if args.bm25_chars:
    systems["bm25_char_bigrams"]["first_chars"] = {
        n: similarity.retrieval_metrics(similarity.ranks(
            bm25_scores([(h, b[:n]) for h, b in pool]))) for n in args.bm25_chars}
  start = time.time()
  systems["pretrained_mean"] = {**embedding_ranks(pretrained, pool, args.max_length,
                                                  args.passage_chars),
                                "seconds": round(time.time() - start, 1)}
  runs = {  # name: (its training rows, made only if it runs; its config overrides)
      # Unsupervised SimCSE: every training headline and body on its own.
      "simcse": (lambda: [{"text": t} for pair in train for t in pair], []),
      "contrastive_pairs": (lambda: [{"text": h, "text_pair": b} for h, b in train], []),
      "contrastive_pairs_bm25_negatives": (lambda: [
          {"text": h, "text_pair": b, "negative": n}
          for (h, b), n in zip(train, bm25_negatives(train))], []),
      # Headline pairs and inverse-cloze pairs of every training article (with a
      # headline or not; not the pool's or dev's): 20 times the rows, so fewer epochs.
      "contrastive_pairs_ict": (lambda: [
          {"text": h, "text_pair": b}
          for h, b in train + ict_pairs(ict_bodies, args.ict_leads)],
                                [f"train.epochs={args.ict_epochs}"]),
  }
  assert tuple(runs) == FINE_TUNED
  for name, (rows, overrides) in runs.items():
    if args.systems and name not in args.systems:
      continue
    workdir = os.path.join(args.workdir, name)
    info = fine_tune(pretrained, rows(), dev_file, workdir, args, overrides)
    systems[name] = {**embedding_ranks(workdir, pool, args.max_length,
                                       args.passage_chars), **info}
  for name, system in systems.items():
    ranks, maxp = system.pop("ranks"), system.pop("maxp_ranks", None)
    out[name] = {**similarity.retrieval_metrics(ranks), **system}
    if maxp is not None:
      out[name]["maxp"] = similarity.retrieval_metrics(maxp)
  print(json.dumps(out, ensure_ascii=False))


if __name__ == "__main__":
  main()
