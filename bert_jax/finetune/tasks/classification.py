"""Sequence classification: single sentences or pairs from CSV, TSV or JSONL files
with the fields `text`, optional `text_pair` and `label`; accuracy and macro-F1."""

import csv
import dataclasses
import json
import os

import numpy as np
from etils import epath

from bert_jax.finetune import step as finetune_step
from bert_jax.finetune import features
from bert_jax.errors import InputError

PER_TOKEN = False
BEST_METRIC = "accuracy"


@dataclasses.dataclass(frozen=True)
class Example:
  text: str
  text_pair: str | None
  label: str | None
  where: str  # file:line, for error messages
  negative: str | None = None  # similarity only: a hard negative for `text`


def _records(path: str):
  """(line number, dict) per record; CSV/TSV by header, JSONL one object a line."""
  ext = os.path.splitext(path)[1].lower()
  with epath.Path(path).open() as f:
    if ext in (".jsonl", ".json"):
      for n, line in enumerate(f, 1):
        if not line.strip():
          continue
        try:
          record = json.loads(line)
        except json.JSONDecodeError as e:
          raise InputError(f"{path}:{n}: not a JSON object ({e.msg})") from None
        if not isinstance(record, dict):
          raise InputError(f"{path}:{n}: not a JSON object")
        yield n, record
    elif ext in (".csv", ".tsv"):
      # TSV files (GLUE's) quote nothing; a stray quote must not swallow lines.
      reader = csv.DictReader(f, delimiter="\t" if ext == ".tsv" else ",",
                              quoting=csv.QUOTE_NONE if ext == ".tsv" else csv.QUOTE_MINIMAL)
      for record in reader:
        if None in record or None in record.values():
          raise InputError(f"{path}:{reader.line_num}: expected the "
                           f"{len(reader.fieldnames)} fields {reader.fieldnames}")
        yield reader.line_num, record
    else:
      raise InputError(f"{path}: unknown format {ext!r}; use .csv, .tsv or .jsonl")


def read(path: str, labelled: bool = True) -> list[Example]:
  """Examples of a file; `labelled` requires a label on each."""
  if not epath.Path(path).exists():
    raise InputError(f"{path} does not exist")
  examples = []
  for n, r in _records(path):
    where = f"{path}:{n}"
    # An empty label (`text,` in a CSV) is missing, not a class of its own.
    missing = [k for k in ("text",) + (("label",) if labelled else ())
               if r.get(k) is None or (k == "label" and str(r[k]).strip() == "")]
    if missing:
      raise InputError(f"{where}: missing field(s) {missing}")
    text, pair, label, negative = (
        None if r.get(k) is None else str(r[k])
        for k in ("text", "text_pair", "label", "negative"))
    examples.append(Example(text, pair, label, where, negative))
  return features.require_examples(examples, path)


def label_list(examples: list[Example]) -> list[str]:
  return sorted({e.label for e in examples})


def num_outputs(labels: list[str]) -> int:
  return len(labels)


def featurize(examples: list[Example], tok, labels: list[str] | None, data_config):
  """(arrays, meta, counts): model inputs and `label` ids (when labels are given)."""
  rows, truncated = [], 0
  pairs = any(e.text_pair is not None for e in examples)
  firsts = tok.encode_batch([e.text for e in examples])
  seconds = (tok.encode_batch([e.text_pair or "" for e in examples]) if pairs
             else [None] * len(examples))
  for e, a, b in zip(examples, firsts, seconds):
    ids, types, cut = features.join_segments(tok, a, b, data_config.max_seq_length)
    truncated += cut
    row = {"input_ids": ids, "token_type_ids": types}
    if labels is not None:
      row["label"] = features.label_id(labels, e.label, e.where)
    rows.append(row)
  arrays = features.to_arrays(rows, data_config.max_seq_length, tok.pad_id)
  return arrays, None, {"truncated_examples": truncated}


def weights(batch):
  """Each row's weight in the loss (0 for the padding rows of a last batch)."""
  return batch["weight"]


def loss(logits, batch):
  return finetune_step.weighted_xent(logits, batch["label"], weights(batch))


def _predicted(logits) -> np.ndarray:
  return np.asarray(logits).argmax(-1)


def evaluate(examples, meta, logits, labels, data_config) -> dict:
  del meta, data_config
  gold = np.array([labels.index(e.label) for e in examples])
  return metrics(gold, _predicted(logits))


def metrics(gold, pred) -> dict:
  """Accuracy and macro-F1 over the classes present in gold or predictions (as
  scikit-learn's f1_score(average="macro") does); F1 of a class is 0 when its
  precision or recall is undefined."""
  gold, pred = np.asarray(gold), np.asarray(pred)
  f1s = []
  for c in np.union1d(gold, pred):
    tp = np.sum((pred == c) & (gold == c))
    denominator = np.sum(pred == c) + np.sum(gold == c)
    f1s.append(2 * tp / denominator if denominator else 0.0)
  return {"accuracy": float(np.mean(gold == pred)), "macro_f1": float(np.mean(f1s)),
          "examples": len(gold)}


def predictions(examples, meta, logits, labels, data_config) -> list[dict]:
  del meta, data_config
  logits = np.asarray(logits)
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  out = []
  for e, p in zip(examples, probs):
    row = {"text": e.text, **({"text_pair": e.text_pair} if e.text_pair is not None else {})}
    row["label"] = labels[int(p.argmax())]
    row["probabilities"] = {l: round(float(q), 6) for l, q in zip(labels, p)}
    out.append(row)
  return out
