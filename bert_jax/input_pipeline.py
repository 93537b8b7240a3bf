"""Prepared shards -> per-process tf.data -> masked batches of numpy arrays.

Each process reads only its own shards (`process_shards`) and batches
`global_batch // process_count` rows; `sharding.to_global` turns them into global
jax.Arrays.
"""

import tensorflow as tf

from bert_jax import masking
from bert_jax.errors import InputError


def process_shards(files: list[str], process_index: int, process_count: int) -> list[str]:
  """Shards of one process: every process_count-th file, so all are disjoint."""
  if len(files) < process_count:
    raise InputError(f"{len(files)} shards cannot feed {process_count} processes; "
                     f"prepare with data.num_shards >= {process_count}")
  return files[process_index::process_count]


def _parse(record, seq_len: int):
  ex = tf.io.parse_single_example(record, {
      "input_ids": tf.io.VarLenFeature(tf.int64),
      "segment_ids": tf.io.VarLenFeature(tf.int64),
      "next_sentence_label": tf.io.FixedLenFeature([1], tf.int64),
  })
  def dense(x):
    x = tf.cast(tf.sparse.to_dense(x), tf.int32)[:seq_len]
    return tf.pad(x, [[0, seq_len - tf.shape(x)[0]]])
  ids = tf.ensure_shape(dense(ex["input_ids"]), [seq_len])
  return {
      "input_ids": ids,
      "token_type_ids": tf.ensure_shape(dense(ex["segment_ids"]), [seq_len]),
      "attention_mask": tf.cast(ids != 0, tf.int32),
      "next_sentence_label": tf.cast(ex["next_sentence_label"][0], tf.int32),
  }


def make_dataset(files: list[str], *, local_batch: int, seq_len: int, vocab_size: int,
                 mask_prob: float, max_predictions: int, seed: int,
                 process_index: int = 0, process_count: int = 1,
                 shuffle_buffer: int = 10_000, first_index: int = 0) -> tf.data.Dataset:
  """Endless dataset of masked batches from this process's `files`.

  Example i of process p gets mask seed (seed, i * process_count + p), unique across
  processes; `first_index` offsets i (and reseeds the shuffle) on resume.
  """
  ds = tf.data.Dataset.from_tensor_slices(files)
  ds = ds.shuffle(len(files), seed=seed + first_index).repeat()
  ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 8),
                     num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.shuffle(shuffle_buffer, seed=seed + first_index)
  ds = ds.map(lambda r: _parse(r, seq_len), num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.enumerate(start=first_index)

  def mask(index, ex):
    example_seed = tf.stack([tf.cast(seed, tf.int64),
                             index * process_count + process_index])
    m = masking.mask_tokens(ex["input_ids"], example_seed, vocab_size=vocab_size,
                            mask_prob=mask_prob, max_predictions=max_predictions)
    return {**ex, **m}

  ds = ds.map(mask, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(local_batch, drop_remainder=True)
  return ds.prefetch(tf.data.AUTOTUNE)
