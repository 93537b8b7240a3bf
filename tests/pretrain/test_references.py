"""The count-based MLM references against hand counts on a tiny corpus."""

import numpy as np
import pytest

from bert_jax.pretrain import references

V, MASK, SPECIAL = 10, 4, (0, 1, 2, 3, 4)  # [PAD] [UNK] [CLS] [SEP] [MASK]
ROWS = [[2, 5, 6, 7, 3], [2, 5, 6, 8, 3], [2, 5, 9, 7, 3], [2, 6, 7, 3],
        [2, 6, 3, 0, 0]]  # padding is never counted


def _predictor():
  return references.Predictor(references.count(ROWS, V), SPECIAL)


def test_counts_by_hand():
  c = references.count(ROWS, V)
  assert c.unigram.tolist() == [0, 0, 5, 5, 0, 3, 4, 3, 1, 1]
  pairs = dict(zip(c.pairs_lr[0].tolist(), c.pairs_lr[1].tolist()))
  assert pairs == {2 * V + 5: 3, 2 * V + 6: 2, 5 * V + 6: 2, 5 * V + 9: 1, 6 * V + 7: 2,
                   6 * V + 8: 1, 6 * V + 3: 1, 7 * V + 3: 3, 8 * V + 3: 1, 9 * V + 7: 1}
  assert c.left.tolist() == [0, 0, 5, 0, 0, 3, 4, 3, 1, 1]  # pairs each id starts


def test_two_sided_neighbours_by_hand():
  p = _predictor()
  assert p.most_frequent == 6  # 4 occurrences; [CLS]/[SEP] are not candidates
  # 5 _ 7: c=6 scores log 2.1 + log 2.1 - log(4 + 1) = -0.13, c=9 scores
  # log 1.1 + log 1.1 - log(1 + 1) = -0.50; unseen pairs far lower.
  assert p.neighbours(5, 7) == 6
  # [CLS] _ (right left out): argmax N([CLS], c): 5 (3 times) over 6 (2).
  assert p.neighbours(2, None) == 5
  # (left out) _ [SEP]: log(N(c, [SEP]) + 0.1) - log(N(c, ·) + 1): 7 (-0.26) beats
  # 8 (-0.60) and 6 (-1.51).
  assert p.neighbours(None, 3) == 7
  assert p.neighbours(None, None) == 6  # both left out: the most frequent token


def test_accuracies_on_masked_positions_as_the_model_sees_them():
  batch = {  # rows as the eval pipeline gives them: masked input ids, padded
      "input_ids": np.array([[2, 5, MASK, 7, 3, 0], [2, MASK, MASK, 3, 0, 0],
                             [2, 5, MASK, MASK, MASK, 3]]),
      "masked_positions": np.array([[2, 0], [1, 2], [3, 0]]),
      "masked_ids": np.array([[6, 0], [5, 6], [6, 0]]),
      "masked_weights": np.array([[1.0, 0.0], [1.0, 1.0], [1.0, 0.0]]),
  }
  got = references.accuracies(_predictor(), [batch], MASK)
  # unigram (always 6): hits 6, misses 5, hits 6, hits 6. neighbours: 6 (5 _ 7) hit;
  # 5 ([CLS] _ [MASK]) hit; 7 ([MASK] _ [SEP]) miss; 6 (both masked) hit.
  assert got == pytest.approx({"ref_unigram_mlm_accuracy": 0.75,
                               "ref_neighbours_mlm_accuracy": 0.75})
