"""People's Daily NER (PER / LOC / ORG from the corpus's nr / ns / nt tags, BIO per
character; bert_jax.data.ner): a pretrained checkpoint fine-tuned with the default
tagging config, the same model from scratch, and a character-window CRF
(sklearn-crfsuite), on articles the checkpoint was not pretrained on. One JSON line.

    pip install sklearn-crfsuite
    python benchmarks/ner.py --pretrained demo_workdir --workdir /tmp/ner

The articles held out of pretraining are its first data.eval_documents (config.json
of --pretrained). With --train_on held_out they are split by article, the first 80 %
for training and the rest for test. With --train_on pretraining (the default) all of
them are the test set, and the training sentences come from the articles after them:
text the checkpoint was pretrained on (as a task's own unlabeled text is in
domain-adaptive pretraining, Gururangan et al. 2020), never with its tags. Either way
no article's sentences are on both sides and no test sentence was pretrained on.
--max_train / --max_test cap the sentence counts.
"""

import argparse
from collections.abc import Sequence
import json
import os
import time

from bert_jax.configs import finetune as finetune_configs
from bert_jax.data import ner
from bert_jax.finetune import loop as finetune
from bert_jax.finetune.tasks import tagging
from bert_jax.runtime import checkpoints
import config_overrides  # benchmarks/, the script's own directory


def _window_features(chars, i):
  f = {"bias": 1.0}
  for d in (-2, -1, 0, 1, 2):
    j = i + d
    f[f"c{d}"] = chars[j] if 0 <= j < len(chars) else "<pad>"
  for d in (-1, 0):
    j = i + d
    if 0 <= j and j + 1 < len(chars):
      f[f"b{d}"] = chars[j] + chars[j + 1]
  return f


def crf_f1(train, test) -> dict:
  import sklearn_crfsuite  # pylint: disable=g-import-not-at-top
  start = time.time()
  xs = lambda sents: [[_window_features([c for c, _ in s], i) for i in range(len(s))]
                      for s in sents]
  ys = lambda sents: [[t for _, t in s] for s in sents]
  crf = sklearn_crfsuite.CRF(algorithm="lbfgs", c1=0.1, c2=0.1, max_iterations=100)
  crf.fit(xs(train), ys(train))
  out = tagging.entity_metrics(ys(test), crf.predict(xs(test)))
  return {**out, "seconds": round(time.time() - start, 1)}


def fine_tune(pretrained, train_file, test_file, workdir, init_encoder,
              crf: bool = False, overrides: Sequence[str] = ()) -> dict:
  c = finetune_configs.get_config("tagging")  # its defaults, by model size
  c.init_from, c.init_encoder = pretrained, init_encoder
  c.tagging.crf = crf
  c.train_file, c.eval_file = train_file, test_file
  config_overrides.apply(c, overrides)
  start = time.time()
  results = finetune.run(c, workdir)
  return {**results["final"], "best_epoch_f1": results["best"]["f1"],
          "seconds": round(time.time() - start, 1)}


def _sentences(docs, limit):
  return [s for d in docs for s in d if len(s) > 1][:limit]


def split_files(pretrained: str, workdir: str, max_train: int = 4000,
                max_test: int = 2000, train_on: str = "pretraining"):
  """(files {"train", "test"}: CoNLL paths in WORKDIR, train and test sentences,
  held-out article count). The test sentences come from the articles held out of
  PRETRAINED's pretraining (its first data.eval_documents): with TRAIN_ON
  "held_out" the last 20 % of them, the first 80 % being the training set; with
  "pretraining" all of them, the training set being the articles after them."""
  held_out = checkpoints.read_config(pretrained)["data"]["eval_documents"]
  docs = list(ner.documents(0, held_out))
  if train_on == "held_out":
    cut = int(0.8 * len(docs))
    train, test = _sentences(docs[:cut], max_train), _sentences(docs[cut:], max_test)
  elif train_on == "pretraining":
    # Articles are short (14 sentences on average): read only as many as needed.
    train = []
    for doc in ner.documents(held_out, None):
      if len(train) >= max_train:
        break
      train += _sentences([doc], max_train - len(train))
    test = _sentences(docs, max_test)
  else:
    raise ValueError(f"train_on must be held_out or pretraining, not {train_on!r}")
  os.makedirs(workdir, exist_ok=True)
  files = {}
  for name, sents in (("train", train), ("test", test)):
    files[name] = os.path.join(workdir, f"{name}.conll")
    ner.write_conll(sents, files[name])
  return files, train, test, held_out


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--pretrained", required=True)
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--max_train", type=int, default=4000)
  parser.add_argument("--max_test", type=int, default=2000)
  parser.add_argument("--train_on", choices=("pretraining", "held_out"),
                      default="pretraining")
  parser.add_argument("--crf", action="store_true",
                      help="fine-tune with tagging.crf (BERT-CRF)")
  parser.add_argument("--systems", default="crf,pretrained,scratch",
                      help="which of crf (the sklearn-crfsuite baseline), pretrained "
                           "and scratch to run")
  parser.add_argument("--finetune", action="append", default=[], metavar="KEY=VALUE",
                      help="a field of configs/finetune.py:tagging for both fine-tuned "
                      "systems, e.g. train.epochs=10 (repeatable)")
  args = parser.parse_args()
  systems = args.systems.split(",")
  unknown = sorted(set(systems) - {"crf", "pretrained", "scratch"})
  if unknown:
    parser.error(f"--systems: unknown {', '.join(unknown)} (crf, pretrained, scratch)")
  config_overrides.check(parser, "--finetune", finetune_configs.get_config("tagging"),
                         args.finetune)
  files, train, test, held_out = split_files(args.pretrained, args.workdir,
                                             args.max_train, args.max_test,
                                             args.train_on)
  out = {"what": "ner", "held_out_articles": held_out, "train_on": args.train_on,
         "train_sentences": len(train), "test_sentences": len(test),
         "tagging_crf": args.crf, "finetune": args.finetune}
  if "crf" in systems:
    out["crf"] = crf_f1(train, test)
  for name, init in (("pretrained", True), ("scratch", False)):
    if name in systems:
      out[name] = fine_tune(args.pretrained, files["train"], files["test"],
                            os.path.join(args.workdir, name), init, crf=args.crf,
                            overrides=args.finetune)
  print(json.dumps(out))


if __name__ == "__main__":
  main()
