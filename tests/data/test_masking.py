import numpy as np
import tensorflow as tf

from bert_jax.data import tokenizer
from tests.data import helpers

VOCAB = 1000


def _examples(n, seq_len=128, seed=0):
  """Examples of random length: [CLS] a [SEP] b [SEP] [PAD]..."""
  rng = np.random.default_rng(seed)
  out = np.zeros((n, seq_len), np.int32)
  for i in range(n):
    length = rng.integers(10, seq_len + 1)
    ids = rng.integers(tokenizer.NUM_SPECIAL, VOCAB, length)
    ids[0] = tokenizer.CLS_ID
    ids[rng.integers(2, length - 1)] = tokenizer.SEP_ID
    ids[-1] = tokenizer.SEP_ID
    out[i, :length] = ids
  return out


def _mask_all(examples, seed=7, max_predictions=80):
  fn = tf.function(lambda ids, s: helpers.mask_tokens(
      ids, s, vocab_size=VOCAB, mask_prob=0.15, max_predictions=max_predictions))
  outs = [fn(tf.constant(e), tf.constant([seed, i], tf.int64))
          for i, e in enumerate(examples)]
  return {k: np.stack([o[k].numpy() for o in outs]) for k in outs[0]}


def test_rate_split_and_specials():
  examples = _examples(1500)  # ~97k tokens
  out = _mask_all(examples)
  special = np.isin(examples, [tokenizer.PAD_ID, tokenizer.CLS_ID, tokenizer.SEP_ID])
  candidates = (~special).sum()
  assert candidates >= 90_000
  weights = out["masked_weights"].astype(bool)
  rate = weights.sum() / candidates
  assert abs(rate - 0.15) < 0.01, rate

  rows = np.nonzero(weights)[0]
  positions = out["masked_positions"][weights]
  assert not special[rows, positions].any(), "a special token or padding was masked"
  # Nothing outside the chosen positions changed.
  changed = out["input_ids"] != examples
  chosen = np.zeros_like(changed)
  chosen[rows, positions] = True
  assert not (changed & ~chosen).any()
  np.testing.assert_array_equal(out["masked_ids"][weights], examples[rows, positions])

  new = out["input_ids"][rows, positions]
  old = examples[rows, positions]
  to_mask = np.mean(new == tokenizer.MASK_ID)
  kept = np.mean(new == old)
  randomised = np.mean((new != old) & (new != tokenizer.MASK_ID))
  assert abs(to_mask - 0.8) < 0.02, to_mask
  assert abs(kept - 0.1) < 0.02, kept
  assert abs(randomised - 0.1) < 0.02, randomised
  # Random replacements are normal tokens, never specials.
  assert (new[(new != old) & (new != tokenizer.MASK_ID)] >= tokenizer.NUM_SPECIAL).all()


def test_cap_and_padding_of_predictions():
  examples = _examples(50)
  out = _mask_all(examples, max_predictions=5)
  assert out["masked_positions"].shape == (50, 5)
  assert (out["masked_weights"].sum(1) <= 5).all()
  n = out["masked_weights"].sum(1).astype(int)
  for row, k in enumerate(n):
    assert (out["masked_positions"][row, k:] == 0).all()
    assert (out["masked_ids"][row, k:] == 0).all()
    assert (np.diff(out["masked_positions"][row, :k]) > 0).all()  # sorted, unique


def test_same_seed_same_masks_other_seed_other_masks():
  examples = _examples(20)
  a, b, c = _mask_all(examples, 1), _mask_all(examples, 1), _mask_all(examples, 2)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
  assert not np.array_equal(a["masked_positions"], c["masked_positions"])


def _word_starts(examples, seed=0):
  """Random words of 1-4 pieces; [CLS]/[SEP]/[PAD] each start their own."""
  rng = np.random.default_rng(seed)
  starts = np.zeros_like(examples)
  for row in starts:
    i = 0
    while i < len(row):
      row[i] = 1
      i += rng.choice([1, 1, 2, 3, 4])
  special = np.isin(examples, [tokenizer.PAD_ID, tokenizer.CLS_ID, tokenizer.SEP_ID])
  starts[special] = 1
  return starts


def _mask_words(examples, starts, seed=7, max_predictions=20):
  fn = tf.function(lambda ids, ws, s: helpers.mask_tokens(
      ids, s, vocab_size=VOCAB, mask_prob=0.15, max_predictions=max_predictions,
      word_start=ws))
  outs = [fn(tf.constant(e), tf.constant(w), tf.constant([seed, i], tf.int64))
          for i, (e, w) in enumerate(zip(examples, starts))]
  return {k: np.stack([o[k].numpy() for o in outs]) for k in outs[0]}


def _words(ids, starts):
  """Lists of positions of each word of one example (a piece after a special token
  starts a word, as masking reads it)."""
  special = np.isin(ids, [tokenizer.PAD_ID, tokenizer.CLS_ID, tokenizer.SEP_ID])
  out = []
  for i in range(len(ids)):
    if special[i]:
      continue
    if starts[i] or i == 0 or special[i - 1]:
      out.append([])
    out[-1].append(i)
  return out


def test_whole_words_are_never_split():
  examples = _examples(600)
  starts = _word_starts(examples)
  starts[:, 2] = 0  # the piece after [CLS] continues no word: it must start one
  out = _mask_words(examples, starts)
  weights = out["masked_weights"].astype(bool)
  candidates = (~np.isin(examples, [0, tokenizer.CLS_ID, tokenizer.SEP_ID])).sum()
  rate = weights.sum() / candidates
  assert abs(rate - 0.15) < 0.015, rate
  assert (weights.sum(1) <= 20).all()
  all_masked = 0
  for row in range(len(examples)):
    chosen = set(out["masked_positions"][row][weights[row]].tolist())
    new = out["input_ids"][row]
    for word in _words(examples[row], starts[row]):
      hit = [p in chosen for p in word]
      assert all(hit) or not any(hit), (row, word, chosen)
      if all(hit):
        # One draw per word: all of it [MASK], or none of it.
        is_mask = [new[p] == tokenizer.MASK_ID for p in word]
        assert all(is_mask) or not any(is_mask)
        all_masked += all(is_mask)
  words = sum(len(_words(e, s)) for e, s in zip(examples, starts))
  assert 0.1 < all_masked / words < 0.14  # ~0.8 of the ~15 % chosen


def test_every_token_a_word_is_per_token_masking():
  examples = _examples(30)
  a = _mask_words(examples, np.ones_like(examples))
  b = _mask_all(examples, max_predictions=20)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
