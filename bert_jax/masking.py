"""BERT's masked-LM corruption, whole-word or per token, as a pure TensorFlow
function (runs inside tf.data).

The masks of an example depend only on the stateless seed passed in, so the same
(seed, example index) always gives the same masks, on any host count.
"""

import tensorflow as tf

from bert_jax import tokenizer


# Greedy passes over the words in random order (see _choose_words); more than three
# are almost never needed to fill the budget.
_FILL_PASSES = 3


def _choose_words(lengths: tf.Tensor, budget: tf.Tensor) -> tf.Tensor:
  """Which words to mask, given their lengths in a random priority order (0 = not a
  candidate): BERT's greedy rule, take a word when it still fits the token budget and
  skip it otherwise. Each pass takes the longest run of eligible words that fits; the
  pass after a word that did not fit goes on without it."""
  chosen = tf.zeros_like(lengths, tf.bool)
  taken = tf.constant(0, lengths.dtype)
  for _ in range(_FILL_PASSES):
    gap = budget - taken
    eligible = ~chosen & (lengths > 0) & (lengths <= gap)
    fits = eligible & (tf.cumsum(tf.where(eligible, lengths, 0)) <= gap)
    chosen |= fits
    taken += tf.reduce_sum(tf.where(fits, lengths, 0))
  return chosen


def mask_tokens(input_ids: tf.Tensor, seed: tf.Tensor, *, vocab_size: int,
                mask_prob: float, max_predictions: int,
                special: tokenizer.SpecialIds = tokenizer.SENTENCEPIECE_IDS,
                word_start: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
  """Masks one padded example, whole words at a time.

  Args:
    input_ids: int32 [S], padded with [PAD].
    seed: int32/int64 [2], a stateless-random seed.
    special: the vocabulary's special ids ([PAD], [CLS], [SEP] are never chosen).
    word_start: int [S], 1 where a word begins (see words.py); None: every token is a
      word. A token after a special one always begins a word.
  Returns:
    input_ids [S] with the tokens of chosen words replaced, one draw per word: 80 %
    all [MASK], 10 % random normal tokens, 10 % unchanged (a half-masked word would
    give itself away); masked_positions, masked_ids, masked_weights [P]
    (P = max_predictions, zero-padded, weight 1.0 for real predictions). About
    mask_prob of the tokens are chosen, never more than P: a word that does not fit
    is skipped, as in BERT.
  """
  seq_len = input_ids.shape[0]
  candidate = ((input_ids != special.pad) & (input_ids != special.cls)
               & (input_ids != special.sep))
  num_candidates = tf.reduce_sum(tf.cast(candidate, tf.int32))
  num_predict = tf.cast(tf.round(tf.cast(num_candidates, tf.float32) * mask_prob),
                        tf.int32)
  num_predict = tf.minimum(max_predictions, tf.maximum(num_predict, 1))
  num_predict = tf.minimum(num_predict, num_candidates)

  if word_start is None:
    starts = tf.ones_like(candidate)
  else:
    starts = (word_start > 0) | ~candidate | tf.concat([[True], ~candidate[:-1]], 0)
  word = tf.cumsum(tf.cast(starts, tf.int32)) - 1  # word index of every token
  # Specials and padding are words of their own, so a word is all candidates or none.
  lengths = tf.math.unsorted_segment_sum(tf.cast(candidate, tf.int32), word, seq_len)

  choose_seed, kind_seed, token_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 3))
  # A random priority per word; candidates first, in that order.
  scores = tf.random.stateless_uniform([seq_len], choose_seed)
  order = tf.argsort(tf.where(lengths > 0, scores, -1.0), direction="DESCENDING")
  chosen = _choose_words(tf.gather(lengths, order), num_predict)
  word_chosen = tf.scatter_nd(order[:, None], chosen, [seq_len])
  token_chosen = tf.gather(word_chosen, word) & candidate

  # Sorted positions, real ones first (the rest sort last as seq_len, then -> 0).
  positions = tf.where(token_chosen, tf.range(seq_len), seq_len)
  positions = tf.sort(positions)[:min(max_predictions, seq_len)]
  valid = positions < seq_len
  positions = tf.where(valid, positions, 0)

  original = tf.gather(input_ids, positions)
  word_kind = tf.random.stateless_uniform([seq_len], kind_seed)
  kind = tf.gather(word_kind, tf.gather(word, positions))
  random_tokens = tf.random.stateless_uniform(
      tf.shape(positions), token_seed, minval=special.first_normal, maxval=vocab_size,
      dtype=input_ids.dtype)
  replacement = tf.where(kind < 0.8, tf.constant(special.mask, input_ids.dtype),
                         tf.where(kind < 0.9, random_tokens, original))
  masked = tf.tensor_scatter_nd_update(
      input_ids, tf.boolean_mask(positions, valid)[:, None],
      tf.boolean_mask(replacement, valid))

  pad = max_predictions - tf.shape(positions)[0]
  pad_to = lambda x: tf.pad(x, [[0, pad]])
  weights = tf.cast(valid, tf.float32)
  return {
      "input_ids": masked,
      "masked_positions": pad_to(positions),
      "masked_ids": pad_to(tf.where(valid, original, 0)),
      "masked_weights": pad_to(weights),
  }
