"""Token classification (NER) from CoNLL files: one `token label` per line (further
columns between them are ignored), a blank line between sentences, BIO tags. Each
word is tokenized on its own; its label sits on its first sub-token and the other
sub-tokens are ignored. Metric: entity-level precision/recall/F1 as seqeval computes
them by default (conlleval's chunking)."""

import dataclasses

import numpy as np
from etils import epath

from bert_jax.finetune import step as finetune_step
from bert_jax.finetune import features
from bert_jax.errors import InputError

PER_TOKEN = True
BEST_METRIC = "f1"


@dataclasses.dataclass(frozen=True)
class Example:
  words: tuple[str, ...]
  tags: tuple[str, ...] | None
  path: str
  line: int  # of the first word; word i is on line + i


def _check_tag(tag: str, where: str) -> str:
  if tag != "O" and not (tag[:2] in ("B-", "I-") and len(tag) > 2):
    raise InputError(f"{where}: tag {tag!r} is not BIO (O, B-TYPE or I-TYPE)")
  return tag


def read(path: str, labelled: bool = True) -> list[Example]:
  """Sentences of a CoNLL file; without `labelled`, a line may hold the word alone."""
  if not epath.Path(path).exists():
    raise InputError(f"{path} does not exist")
  examples, words, tags, first = [], [], [], 0

  def flush():
    if words:
      examples.append(Example(tuple(words), tuple(tags) if labelled else None,
                              path, first))
    words.clear()
    tags.clear()

  with epath.Path(path).open() as f:
    for n, line in enumerate(f, 1):
      fields = line.split()
      if not fields or fields[0] == "-DOCSTART-":
        flush()
        continue
      if labelled and len(fields) < 2:
        raise InputError(f"{path}:{n}: expected 'token label', got {line.strip()!r}")
      if not words:
        first = n
      words.append(fields[0])
      if labelled:
        tags.append(_check_tag(fields[-1], f"{path}:{n}"))
  flush()
  return features.require_examples(examples, path)


def label_list(examples: list[Example]) -> list[str]:
  """"O" first, then the B-/I- tags in sorted order."""
  return sorted({t for e in examples for t in e.tags}, key=lambda t: (t != "O", t))


def num_outputs(labels: list[str]) -> int:
  return len(labels)


def featurize(examples: list[Example], tok, labels: list[str] | None, data_config):
  """(arrays, meta, counts). meta[i] = the position of each kept word's first
  sub-token; words past max_seq_length are cut (counted) and predicted "O"."""
  max_len = data_config.max_seq_length
  rows, starts, cut_sentences, cut_words = [], [], 0, 0
  vocab = sorted({w for e in examples for w in e.words})
  pieces = dict(zip(vocab, tok.encode_batch(vocab)))
  for e in examples:
    ids, positions, targets = [tok.cls_id], [], [-1]
    for i, word in enumerate(e.words):
      # A word the tokenizer drops entirely (a control character) still needs a slot.
      word_ids = pieces[word] or [tok.unk_id]
      if len(ids) + len(word_ids) > max_len - 1:
        cut_sentences += 1
        cut_words += len(e.words) - i
        break
      positions.append(len(ids))
      if labels is not None:
        where = f"{e.path}:{e.line + i}"
        targets += [features.label_id(labels, e.tags[i], where)] + [-1] * (len(word_ids) - 1)
      ids += word_ids
    ids.append(tok.sep_id)
    row = {"input_ids": ids, "token_type_ids": [0] * len(ids)}
    if labels is not None:
      row["labels"] = targets + [-1]
    rows.append(row)
    starts.append(positions)
  arrays = features.to_arrays(rows, max_len, tok.pad_id)
  return arrays, starts, {"truncated_sentences": cut_sentences, "truncated_words": cut_words}


def weights(batch):
  """Each token's weight in the loss: the labelled ones (a word's first piece) of
  real rows."""
  return (batch["labels"] >= 0) * batch["weight"][:, None]


def loss(logits, batch):
  return finetune_step.weighted_xent(logits, batch["labels"], weights(batch))


def _tags(examples, starts, logits, labels) -> list[list[str]]:
  pred = np.asarray(logits).argmax(-1)
  return [[labels[pred[i, p]] for p in positions] + ["O"] * (len(e.words) - len(positions))
          for i, (e, positions) in enumerate(zip(examples, starts))]


def evaluate(examples, starts, logits, labels, data_config) -> dict:
  del data_config
  return entity_metrics([list(e.tags) for e in examples],
                        _tags(examples, starts, logits, labels))


def predictions(examples, starts, logits, labels, data_config) -> list[dict]:
  del data_config
  return [{"tokens": list(e.words), "labels": tags}
          for e, tags in zip(examples, _tags(examples, starts, logits, labels))]


def entities(tags: list[str]) -> set[tuple[str, int, int]]:
  """(type, first, last) chunks of one sentence, chunked as conlleval/seqeval do: a
  chunk starts at B-X, or at I-X after O or after a tag of another type; it ends
  before O, B-, or a tag of another type."""
  chunks, start, kind = set(), None, None
  for i, tag in enumerate(list(tags) + ["O"]):
    prefix, _, t = tag.partition("-")
    if start is not None and (prefix in ("O", "B") or t != kind):
      chunks.add((kind, start, i - 1))
      start = None
    if prefix == "B" or (prefix == "I" and start is None):
      start, kind = i, t
  return chunks


def entity_metrics(gold: list[list[str]], pred: list[list[str]]) -> dict:
  """Micro precision/recall/F1 over entities of all sentences (seqeval's default)."""
  g = {(n, *c) for n, tags in enumerate(gold) for c in entities(tags)}
  p = {(n, *c) for n, tags in enumerate(pred) for c in entities(tags)}
  correct = len(g & p)
  precision = correct / len(p) if p else 0.0
  recall = correct / len(g) if g else 0.0
  f1 = 2 * precision * recall / (precision + recall) if correct else 0.0
  tokens = sum(len(t) for t in gold)
  token_acc = sum(a == b for gt, pt in zip(gold, pred) for a, b in zip(gt, pt)) / tokens
  return {"precision": precision, "recall": recall, "f1": f1,
          "token_accuracy": token_acc, "entities": len(g)}
