"""Count-based references for held-out MLM accuracy: what a model that knows no more
than token frequencies gets right on the very masked positions the model is scored
on, with the same tokens (so the comparison holds for any tokenizer).

- `unigram`: always the most frequent (non-special) token of the training data.
- `neighbours`: argmax over c of log P(c | left) + log P(right | c), bigram counts
  from the training rows with add-0.1 smoothing, the neighbours as the model sees
  them (after masking). A [MASK] or padding neighbour is left out; with both left
  out it falls back to `unigram`.

A model that beats `neighbours` has learned context beyond adjacent-token statistics.
Candidates are the non-special ids (masked targets never are special). Pure numpy.
"""

from typing import Iterable, NamedTuple

import numpy as np

ALPHA = 0.1  # add-alpha smoothing of the bigram counts


class Counts(NamedTuple):
  """Token and adjacent-pair counts of training rows over a vocabulary of size V."""
  unigram: np.ndarray  # [V] occurrences of each id
  left: np.ndarray     # [V] occurrences of each id with a right neighbour
  pairs_lr: tuple      # (sorted keys l * V + r, counts)
  pairs_rl: tuple      # (sorted keys r * V + l, counts)
  vocab_size: int


def _unique(keys: np.ndarray) -> tuple:
  keys, counts = np.unique(keys, return_counts=True)
  return keys, counts


def count(rows: Iterable[np.ndarray], vocab_size: int, pad_id: int = 0) -> Counts:
  """Counts of token ids and adjacent pairs in `rows` (unpadded or [PAD]-padded);
  pairs with a [PAD] are not counted."""
  unigram = np.zeros(vocab_size, np.int64)
  keys = []
  for row in rows:
    row = np.asarray(row, np.int64)
    row = row[row != pad_id]
    unigram += np.bincount(row, minlength=vocab_size)[:vocab_size]
    keys.append(row[:-1] * vocab_size + row[1:])
  keys = np.concatenate(keys) if keys else np.zeros(0, np.int64)
  lr = _unique(keys)
  rl = _unique((keys % vocab_size) * vocab_size + keys // vocab_size)
  left = np.bincount(lr[0] // vocab_size, weights=lr[1], minlength=vocab_size)
  return Counts(unigram, left.astype(np.int64), lr, rl, vocab_size)


def _row(pairs: tuple, first: int, vocab_size: int) -> np.ndarray:
  """Dense counts N(first, ·) from sorted pair keys."""
  keys, counts = pairs
  lo, hi = np.searchsorted(keys, [first * vocab_size, (first + 1) * vocab_size])
  out = np.zeros(vocab_size)
  out[keys[lo:hi] - first * vocab_size] = counts[lo:hi]
  return out


class Predictor:
  """The two references' predictions for masked positions, from `Counts`."""

  def __init__(self, counts: Counts, special_ids: Iterable[int]):
    self.counts = counts
    v = counts.vocab_size
    self.blocked = np.zeros(v, bool)
    self.blocked[list(special_ids)] = True
    self.most_frequent = int(np.argmax(np.where(self.blocked, -1, counts.unigram)))
    # log P(r | c) needs each candidate's own normaliser.
    self._log_norm = np.log(counts.left + ALPHA * v)
    self._cache = {}

  def neighbours(self, left: int | None, right: int | None) -> int:
    """argmax_c log P(c | left) + log P(right | c); None = left out."""
    if left is None and right is None:
      return self.most_frequent
    key = (left, right)
    if key not in self._cache:
      v = self.counts.vocab_size
      score = np.zeros(v)
      if left is not None:  # log P(c | left), up to a constant in c
        score += np.log(_row(self.counts.pairs_lr, left, v) + ALPHA)
      if right is not None:  # log P(right | c)
        score += np.log(_row(self.counts.pairs_rl, right, v) + ALPHA) - self._log_norm
      score[self.blocked] = -np.inf
      self._cache[key] = int(np.argmax(score))
    return self._cache[key]


def accuracies(predictor: Predictor, batches: Iterable[dict], mask_id: int,
               pad_id: int = 0) -> dict:
  """Accuracy of both references over eval batches (numpy: the masked input_ids,
  masked_positions, masked_ids, masked_weights), weighted as eval_mlm_accuracy."""
  hits = {"unigram": 0.0, "neighbours": 0.0}
  total = 0.0
  for b in batches:
    ids = b["input_ids"]
    for i, j in zip(*np.nonzero(b["masked_weights"])):
      p, target, w = b["masked_positions"][i, j], b["masked_ids"][i, j], b["masked_weights"][i, j]
      seen = lambda q: (int(ids[i, q]) if 0 <= q < ids.shape[1]
                        and ids[i, q] not in (mask_id, pad_id) else None)
      hits["unigram"] += w * (predictor.most_frequent == target)
      hits["neighbours"] += w * (predictor.neighbours(seen(p - 1), seen(p + 1)) == target)
      total += w
  return {f"ref_{k}_mlm_accuracy": v / max(total, 1.0) for k, v in hits.items()}
