"""Prepared shards -> reading streams -> masked batches of numpy arrays.

The data is read as `num_streams` independent streams; stream g reads shards
g, g + num_streams, ... and contributes `global_batch / num_streams` rows to every
global batch, in stream order. Each process runs only its own block of streams, so it
reads only its own shards, and the global batch (rows, order and masks) is the same
whatever the process count. `sharding.to_global` joins the processes' rows into
global jax.Arrays.
"""

import collections
from typing import Iterator

import tensorflow as tf

from bert_jax import masking, sharding, tokenizer
from bert_jax.errors import InputError


def process_streams(num_streams: int, process_index: int, process_count: int) -> range:
  """The contiguous block of streams (= of global-batch rows) one process reads."""
  if num_streams % process_count:
    raise InputError(f"data.num_streams={num_streams} is not a multiple of "
                     f"{process_count} processes")
  per_process = num_streams // process_count
  return range(process_index * per_process, (process_index + 1) * per_process)


def stream_shards(files: list[str], stream: int, num_streams: int) -> list[str]:
  if len(files) < num_streams:
    raise InputError(f"{len(files)} shards cannot feed data.num_streams={num_streams} "
                     f"streams; prepare with data.num_shards >= {num_streams}")
  return files[stream::num_streams]


def process_shards(files: list[str], num_streams: int, process_index: int,
                   process_count: int) -> list[str]:
  """All shards a process reads; disjoint between processes."""
  return [f for g in process_streams(num_streams, process_index, process_count)
          for f in stream_shards(files, g, num_streams)]


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


def _stream(files: list[str], stream: int, num_streams: int, *, batch: int, seq_len: int,
            vocab_size: int, mask_prob: float, max_predictions: int, seed: int,
            shuffle_buffer: int, first_batch: int,
            special: tokenizer.SpecialIds) -> tf.data.Dataset:
  """Endless masked batches of one stream. Example i of stream g gets the mask seed
  fold_in((seed, g), i); `first_batch` skips ahead (and reseeds the shuffle) on resume."""
  # hash() of a tuple of ints is the same in every process and run (no PYTHONHASHSEED).
  shuffle_seed = hash((seed, stream, first_batch)) % (2**31)
  shards = stream_shards(files, stream, num_streams)
  ds = tf.data.Dataset.from_tensor_slices(shards)
  ds = ds.shuffle(len(shards), seed=shuffle_seed).repeat()
  ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=2,
                     num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.shuffle(shuffle_buffer, seed=shuffle_seed)
  ds = ds.map(lambda r: _parse(r, seq_len), num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.enumerate(start=first_batch * batch)
  stream_seed = tf.constant([seed, stream], tf.int64)

  def mask(index, ex):
    example_seed = tf.random.experimental.stateless_fold_in(stream_seed, index)
    return {**ex, **masking.mask_tokens(
        ex["input_ids"], example_seed, vocab_size=vocab_size, mask_prob=mask_prob,
        max_predictions=max_predictions, special=special)}

  ds = ds.map(mask, num_parallel_calls=tf.data.AUTOTUNE)
  return ds.batch(batch, drop_remainder=True)


def make_dataset(files: list[str], *, global_batch: int, num_streams: int, seq_len: int,
                 vocab_size: int, mask_prob: float, max_predictions: int, seed: int,
                 process_index: int = 0, process_count: int = 1,
                 shuffle_buffer: int = 2_000, first_batch: int = 0,
                 special: tokenizer.SpecialIds = tokenizer.SENTENCEPIECE_IDS
                 ) -> tf.data.Dataset:
  """This process's rows of every global batch: [global_batch / process_count, ...].

  `first_batch` is the number of global batches already consumed (resume); `special`
  the special ids of the vocabulary the shards were tokenized with ([PAD] must be 0:
  rows are zero-padded).
  """
  if global_batch % num_streams:
    raise InputError(f"train.global_batch_size={global_batch} is not a multiple of "
                     f"data.num_streams={num_streams}")
  streams = [
      _stream(files, g, num_streams, batch=global_batch // num_streams, seq_len=seq_len,
              vocab_size=vocab_size, mask_prob=mask_prob, max_predictions=max_predictions,
              seed=seed, shuffle_buffer=shuffle_buffer, first_batch=first_batch,
              special=special)
      for g in process_streams(num_streams, process_index, process_count)]
  ds = tf.data.Dataset.zip(tuple(streams))
  ds = ds.map(lambda *parts: {k: tf.concat([p[k] for p in parts], 0) for k in parts[0]},
              num_parallel_calls=tf.data.AUTOTUNE)
  return ds.prefetch(tf.data.AUTOTUNE)


def prefetch_to_device(batches: Iterator[dict], batch_sharding, size: int = 2):
  """Global arrays of the next `size` batches, already on their devices: the
  host-to-device copies of the next batches overlap the running step."""
  queue = collections.deque()
  for batch in batches:
    queue.append(sharding.to_global(batch, batch_sharding))
    if len(queue) > size:
      yield queue.popleft()
  yield from queue
