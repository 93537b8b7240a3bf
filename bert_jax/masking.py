"""BERT's masked-LM corruption as a pure TensorFlow function (runs inside tf.data).

The masks of an example depend only on the stateless seed passed in, so the same
(seed, example index) always gives the same masks, on any host count.
"""

import tensorflow as tf

from bert_jax import tokenizer


def mask_tokens(input_ids: tf.Tensor, seed: tf.Tensor, *, vocab_size: int,
                mask_prob: float, max_predictions: int,
                special: tokenizer.SpecialIds = tokenizer.SENTENCEPIECE_IDS
                ) -> dict[str, tf.Tensor]:
  """Masks one padded example.

  Args:
    input_ids: int32 [S], padded with [PAD].
    seed: int32/int64 [2], a stateless-random seed.
    special: the vocabulary's special ids ([PAD], [CLS], [SEP] are never chosen).
  Returns:
    input_ids [S] with chosen tokens replaced 80 % [MASK], 10 % a random normal
    token, 10 % unchanged; masked_positions, masked_ids, masked_weights [P]
    (P = max_predictions, zero-padded, weight 1.0 for real predictions).
  """
  seq_len = input_ids.shape[0]
  candidate = ((input_ids != special.pad) & (input_ids != special.cls)
               & (input_ids != special.sep))
  num_candidates = tf.reduce_sum(tf.cast(candidate, tf.float32))
  num_predict = tf.cast(tf.round(num_candidates * mask_prob), tf.int32)
  num_predict = tf.minimum(max_predictions, tf.maximum(num_predict, 1))
  num_predict = tf.minimum(num_predict, tf.cast(num_candidates, tf.int32))

  choose_seed, kind_seed, token_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 3))
  # A random priority per candidate; the top num_predict are masked.
  scores = tf.random.stateless_uniform([seq_len], choose_seed)
  scores = tf.where(candidate, scores, -1.0)
  _, top = tf.math.top_k(scores, k=min(max_predictions, seq_len))
  valid = tf.range(tf.shape(top)[0]) < num_predict
  # Sorted positions, real ones first (invalid ones sort last as seq_len, then -> 0).
  positions = tf.sort(tf.where(valid, top, seq_len))
  valid = positions < seq_len
  positions = tf.where(valid, positions, 0)

  original = tf.gather(input_ids, positions)
  kind = tf.random.stateless_uniform(tf.shape(positions), kind_seed)
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
