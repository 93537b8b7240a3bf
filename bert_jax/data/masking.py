"""BERT's masked-LM corruption, whole-word or per token, as a pure TensorFlow
function (runs inside tf.data).

The masks of a batch depend only on the stateless seed passed in; the input pipeline
seeds batch k of stream g with fold_in((seed, g), k), a pure function of the data
position, so the masks are the same on any host count, mesh or restart.
"""

import numpy as np
import tensorflow as tf

from bert_jax.data import tokenizer


# Greedy passes over the words in random order (see _choose_words); more than three
# are almost never needed to fill the budget.
_FILL_PASSES = 3


def _choose_words(lengths: tf.Tensor, budget: tf.Tensor) -> tf.Tensor:
  """Which words to mask, given their lengths [B, W] in a random priority order
  (0 = not a candidate) and token budgets [B, 1]: BERT's greedy rule, take a word
  when it still fits the budget and skip it otherwise. Each pass takes the longest
  run of eligible words that fits; the pass after a word that did not fit goes on
  without it."""
  chosen = tf.zeros_like(lengths, tf.bool)
  taken = tf.zeros_like(budget)
  for _ in range(_FILL_PASSES):
    gap = budget - taken
    eligible = ~chosen & (lengths > 0) & (lengths <= gap)
    fits = eligible & (tf.cumsum(tf.where(eligible, lengths, 0), axis=-1) <= gap)
    chosen |= fits
    taken += tf.reduce_sum(tf.where(fits, lengths, 0), axis=-1, keepdims=True)
  return chosen


def mask_batch(input_ids: tf.Tensor, seed: tf.Tensor, *, vocab_size: int,
               mask_prob: float, max_predictions: int,
               special: tokenizer.SpecialIds = tokenizer.SENTENCEPIECE_IDS,
               word_start: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
  """Masks a batch of padded examples, whole words at a time, in vectorised ops
  (one call per batch keeps tf.data's per-element overhead out of the input rate).

  Args:
    input_ids: int32 [B, S], padded with [PAD].
    seed: int32/int64 [2], a stateless-random seed for the whole batch, or [G, 2]:
      one per block of B / G consecutive rows.
    special: the vocabulary's special ids ([PAD], [CLS], [SEP] are never chosen).
    word_start: int [B, S], 1 where a word begins (see words.py); None: every token
      is a word. A token after a special one always begins a word.
  Returns:
    input_ids [B, S] with the tokens of chosen words replaced, one draw per word:
    80 % all [MASK], 10 % random normal tokens, 10 % unchanged (a half-masked word
    would give itself away); masked_positions, masked_ids, masked_weights [B, P]
    (P = max_predictions, zero-padded, weight 1.0 for real predictions). About
    mask_prob of each row's tokens are chosen, never more than P: a word that does
    not fit is skipped, as in BERT.
  """
  batch, seq_len = input_ids.shape[0] or tf.shape(input_ids)[0], input_ids.shape[1]
  candidate = ((input_ids != special.pad) & (input_ids != special.cls)
               & (input_ids != special.sep))
  num_candidates = tf.reduce_sum(tf.cast(candidate, tf.int32), axis=1, keepdims=True)
  num_predict = tf.cast(tf.round(tf.cast(num_candidates, tf.float32) * mask_prob),
                        tf.int32)
  num_predict = tf.minimum(max_predictions, tf.maximum(num_predict, 1))
  num_predict = tf.minimum(num_predict, num_candidates)

  if word_start is None:
    starts = tf.ones_like(candidate)
  else:
    not_candidate = ~candidate
    starts = (word_start > 0) | not_candidate | tf.concat(
        [tf.ones_like(candidate[:, :1]), not_candidate[:, :-1]], axis=1)
  word = tf.cumsum(tf.cast(starts, tf.int32), axis=1) - 1  # word index of each token
  # Specials and padding are words of their own, so a word is all candidates or none.
  rows = tf.range(batch)[:, None] * seq_len
  lengths = tf.reshape(tf.math.unsorted_segment_sum(
      tf.reshape(tf.cast(candidate, tf.int32), [-1]), tf.reshape(word + rows, [-1]),
      batch * seq_len), [batch, seq_len])

  # One seed [2] for the batch, or [G, 2]: G equal blocks of rows, each drawn from
  # its own seed (the input pipeline's streams), exactly as if masked apart.
  seeds = tf.reshape(tf.convert_to_tensor(seed), [-1, 2])
  blocks = seeds.shape[0]
  splits = [tf.random.experimental.stateless_split(seeds[g], 3) for g in range(blocks)]

  def draw(which, shape, **kwargs):
    rows = shape[0] // blocks if blocks > 1 else shape[0]
    return tf.concat([tf.random.stateless_uniform(
        [rows, shape[1]], splits[g][which], **kwargs) for g in range(blocks)], 0)

  # A random priority per word; candidates first, in that order.
  scores = draw(0, [batch, seq_len])
  order = tf.argsort(tf.where(lengths > 0, scores, -1.0), axis=1, direction="DESCENDING")
  chosen = _choose_words(tf.gather(lengths, order, batch_dims=1), num_predict)
  word_chosen = tf.gather(chosen, tf.argsort(order, axis=1), batch_dims=1)
  token_chosen = tf.gather(word_chosen, word, batch_dims=1) & candidate

  # Sorted positions, real ones first (the rest sort last as seq_len, then -> 0).
  positions = tf.where(token_chosen, tf.range(seq_len)[None], seq_len)
  positions = tf.sort(positions, axis=1)[:, :min(max_predictions, seq_len)]
  valid = positions < seq_len
  positions = tf.where(valid, positions, 0)

  original = tf.gather(input_ids, positions, batch_dims=1)
  word_kind = draw(1, [batch, seq_len])
  kind = tf.gather(word_kind, tf.gather(word, positions, batch_dims=1), batch_dims=1)
  random_tokens = draw(2, [batch, min(max_predictions, seq_len)],
                       minval=special.first_normal, maxval=vocab_size,
                       dtype=input_ids.dtype)
  replacement = tf.where(kind < 0.8, tf.constant(special.mask, input_ids.dtype),
                         tf.where(kind < 0.9, random_tokens, original))
  where = tf.stack([tf.broadcast_to(tf.range(batch)[:, None], tf.shape(positions)),
                    positions], axis=-1)
  masked = tf.tensor_scatter_nd_update(
      input_ids, tf.boolean_mask(where, valid), tf.boolean_mask(replacement, valid))

  pad = [[0, 0], [0, max_predictions - tf.shape(positions)[1]]]
  return {
      "input_ids": masked,
      "masked_positions": tf.pad(positions, pad),
      "masked_ids": tf.pad(tf.where(valid, original, 0), pad),
      "masked_weights": tf.pad(tf.cast(valid, tf.float32), pad),
  }


def mask_rows(rows: list[list[int]], seq_len: int, seed, *,
              word_start: list[list[int]] | None = None, **kwargs) -> list[dict]:
  """Static masking (Google's create_pretraining_data): `mask_batch` over token
  lists at prepare time; per row the masked ids and the real predictions only."""
  ids = np.zeros((len(rows), seq_len), np.int32)
  starts = np.ones((len(rows), seq_len), np.int32)
  for i, row in enumerate(rows):
    ids[i, :len(row)] = row
    if word_start is not None:
      starts[i, :len(row)] = word_start[i]
  out = mask_batch(tf.constant(ids), tf.constant(seed, tf.int64),
                   word_start=None if word_start is None else tf.constant(starts),
                   **kwargs)
  out = {k: v.numpy() for k, v in out.items()}
  result = []
  for i, row in enumerate(rows):
    real = out["masked_weights"][i] > 0
    result.append({"input_ids": out["input_ids"][i, :len(row)].tolist(),
                   "masked_positions": out["masked_positions"][i][real].tolist(),
                   "masked_ids": out["masked_ids"][i][real].tolist()})
  return result
