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

import numpy as np
import tensorflow as tf

from bert_jax.data import masking, tokenizer
from bert_jax.errors import InputError
from bert_jax.runtime import sharding


def keep_tensorflow_on_cpu() -> None:
  """TensorFlow is only the input pipeline: it must not claim the accelerators that
  JAX trains on. Call before the pipeline first runs."""
  tf.config.set_visible_devices([], "GPU")


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


def _parse(records, seq_len: int, max_per_row: int, nsp_weight: float):
  """A batch of serialized rows -> padded int32 [B, seq_len] features, and the
  examples packed in each row (K = max_per_row): cls_positions, next_sentence_label
  and next_sentence_weight [B, K] (weight 0 for a missing example, or for every
  example when the objective has no sentence task), position_ids restarting per
  example, and with K > 1 example_ids [B, seq_len] (1..K, 0 for padding)."""
  ex = tf.io.parse_example(records, {
      "input_ids": tf.io.VarLenFeature(tf.int64),
      "segment_ids": tf.io.VarLenFeature(tf.int64),
      "next_sentence_label": tf.io.VarLenFeature(tf.int64),
      "word_start": tf.io.VarLenFeature(tf.int64),
      "example_lengths": tf.io.VarLenFeature(tf.int64),
  })

  def dense(x, size, fill=0):
    x = tf.cast(tf.sparse.to_dense(x, default_value=fill)[:, :size], tf.int32)
    x = tf.pad(x, [[0, 0], [0, size - tf.shape(x)[1]]], constant_values=fill)
    return tf.ensure_shape(x, [None, size])

  ids = dense(ex["input_ids"], seq_len)
  real = tf.cast(ids != 0, tf.int32)
  lengths = dense(ex["example_lengths"], max_per_row)
  starts = tf.cumsum(lengths, axis=1, exclusive=True)
  pos = tf.range(seq_len)[None, None, :]
  inside = ((pos >= starts[:, :, None]) & (pos < (starts + lengths)[:, :, None]))
  inside = tf.cast(inside, tf.int32)  # [B, K, S]: token s belongs to example k
  out = {
      "input_ids": ids,
      "token_type_ids": dense(ex["segment_ids"], seq_len),
      "attention_mask": real,
      "position_ids": tf.range(seq_len)[None] - tf.reduce_sum(inside * starts[:, :, None], 1),
      "cls_positions": starts * tf.cast(lengths > 0, tf.int32),
      "next_sentence_label": dense(ex["next_sentence_label"], max_per_row),
      "next_sentence_weight": tf.cast(lengths > 0, tf.float32) * nsp_weight,
      # Shards prepared without whole-word masking have none: every token is a word.
      "word_start": dense(ex["word_start"], seq_len, fill=1),
  }
  if max_per_row > 1:
    out["example_ids"] = tf.reduce_sum(
        inside * tf.range(1, max_per_row + 1)[None, :, None], 1)
  return out


def _with_static_masks(ex: dict, records, predictions: int) -> dict:
  """The masks stored in the rows, as masked_positions/ids/weights [B, P]."""
  stored = tf.io.parse_example(records, {"masked_positions": tf.io.VarLenFeature(tf.int64),
                                         "masked_ids": tf.io.VarLenFeature(tf.int64)})
  dense = lambda x: tf.ensure_shape(tf.cast(tf.sparse.to_dense(
      tf.sparse.reset_shape(x, [tf.shape(records)[0], predictions]), -1),
      tf.int32), [None, predictions])
  positions, ids = dense(stored["masked_positions"]), dense(stored["masked_ids"])
  ex = {k: v for k, v in ex.items() if k != "word_start"}
  return {**ex, "masked_positions": tf.maximum(positions, 0),
          "masked_ids": tf.maximum(ids, 0),
          "masked_weights": tf.cast(positions >= 0, tf.float32)}


def shard_sizes(files: list[str]) -> list[int]:
  """Records per shard, by reading them: for data whose stats.json predates
  `shard_sizes`."""
  return [int(tf.data.TFRecordDataset(f).reduce(0, lambda n, _: n + 1)) for f in files]


def _epoch_order(num_shards: int, seed: int, stream: int, epoch: int) -> list[int]:
  return np.random.default_rng([seed, stream, epoch]).permutation(num_shards).tolist()


def _visits(shards: list[str], sizes: list[int], seed: int, stream: int, start: int):
  """(shard, epoch, slot, first record) of every shard visit from example `start` of
  the stream on. Each epoch visits the stream's shards in a new seeded order; the
  start position is found from the shard sizes alone, no data is read."""
  epoch, offset = divmod(start, sum(sizes))
  while True:
    for slot, j in enumerate(_epoch_order(len(shards), seed, stream, epoch)):
      if offset >= sizes[j]:
        offset -= sizes[j]
        continue
      yield shards[j], epoch, slot, offset
      offset = 0
    epoch += 1


def _stream(files: list[str], sizes: list[int], stream: int, num_streams: int, *,
            batch: int, seed: int, shuffle_buffer: int,
            first_batch: int) -> tf.data.Dataset:
  """Endless batches of one stream's serialized rows, a pure function of the stream
  position (parsed and masked with the other streams', see make_dataset).

  Example n of the stream is fixed by (seed, stream, n): epoch e visits the shards in
  a seeded order, and records are shuffled within blocks of `shuffle_buffer`
  consecutive records of a shard by a permutation seeded by (epoch, slot, block)
  (`prepare` already shuffled all examples before sharding). Batch k is masked with
  the seed fold_in((seed, stream), k). Resuming at `first_batch` therefore yields
  exactly the batches an uninterrupted run would, reading at most one shard's prefix.
  """
  shards = stream_shards(files, stream, num_streams)
  sizes = stream_shards(sizes, stream, num_streams)
  if not sum(sizes):
    raise InputError(f"stream {stream}'s shards {shards} hold no examples")
  stream_seed = tf.constant([seed, stream], tf.int64)
  first = first_batch * batch
  block = shuffle_buffer

  def read(path, epoch, slot, first_record):
    visit_seed = tf.random.experimental.stateless_fold_in(
        tf.random.experimental.stateless_fold_in(stream_seed, epoch), slot)
    first_block = first_record // block
    ds = tf.data.TFRecordDataset(path).skip(first_block * block).batch(block)

    def shuffle(index, records):
      return tf.random.experimental.stateless_shuffle(
          records, tf.random.experimental.stateless_fold_in(visit_seed, index))

    ds = ds.enumerate(first_block).map(shuffle).unbatch()
    return ds.skip(first_record - first_block * block)

  visits = tf.data.Dataset.from_generator(
      lambda: _visits(shards, sizes, seed, stream, first),
      output_signature=(tf.TensorSpec((), tf.string),) + (tf.TensorSpec((), tf.int64),) * 3)
  return visits.flat_map(read).batch(batch, drop_remainder=True)


def masked_batches(records: tf.data.Dataset, seed: tf.Tensor, first_batch: int = 0, *,
                   batch: int, seq_len: int, drop_remainder: bool = True,
                   max_per_row: int = 1, nsp_weight: float = 1.0,
                   static_masks: bool = False, **mask_args) -> tf.data.Dataset:
  """Batches of parsed, padded, masked rows. Batch k (counting from `first_batch`)
  is masked with the stateless seed fold_in(seed, k); parsing and masking work on
  whole batches (vectorised), not example by example. With `static_masks` the rows
  carry the masks `prepare` drew (data.masking="static") and are used as they are."""
  ds = records.batch(batch, drop_remainder=drop_remainder)
  parse = lambda r: _parse(r, seq_len, max_per_row, nsp_weight)
  if static_masks:
    predictions = mask_args["max_predictions"]
    return ds.map(lambda r: _with_static_masks(parse(r), r, predictions),
                  num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE)

  def mask(index, ex):
    ex = dict(ex)
    word_start = ex.pop("word_start")  # only masking needs it
    return {**ex, **masking.mask_batch(
        ex["input_ids"], tf.random.experimental.stateless_fold_in(seed, index),
        word_start=word_start, **mask_args)}

  return ds.enumerate(start=first_batch).map(mask, num_parallel_calls=tf.data.AUTOTUNE)


def make_dataset(files: list[str], *, global_batch: int, num_streams: int, seq_len: int,
                 vocab_size: int, mask_prob: float, max_predictions: int, seed: int,
                 process_index: int = 0, process_count: int = 1,
                 shuffle_buffer: int = 2_000, first_batch: int = 0,
                 special: tokenizer.SpecialIds = tokenizer.SENTENCEPIECE_IDS,
                 sizes: list[int] | None = None, max_per_row: int = 1,
                 nsp_weight: float = 1.0, static_masks: bool = False) -> tf.data.Dataset:
  """This process's rows of every global batch: [global_batch / process_count, ...].

  `first_batch` is the number of global batches already consumed (resume); `special`
  the special ids of the vocabulary the shards were tokenized with ([PAD] must be 0:
  rows are zero-padded); `sizes` the records per file (stats.json's `shard_sizes`;
  counted when not given); `max_per_row` the most examples packed in a row
  (data.max_examples_per_row); `nsp_weight` 0 when the data has no sentence task;
  `static_masks` when the shards carry their masks (data.masking="static").
  """
  if global_batch % num_streams:
    raise InputError(f"train.global_batch_size={global_batch} is not a multiple of "
                     f"data.num_streams={num_streams}")
  if sizes is None:
    sizes = shard_sizes(files)
  if len(sizes) != len(files):
    raise InputError(f"{len(files)} shards but {len(sizes)} shard sizes")
  mine = process_streams(num_streams, process_index, process_count)
  per_stream = global_batch // num_streams
  streams = [_stream(files, sizes, g, num_streams, batch=per_stream, seed=seed,
                     shuffle_buffer=shuffle_buffer, first_batch=first_batch)
             for g in mine]
  stream_seeds = tf.constant([[seed, g] for g in mine], tf.int64)
  mask_args = dict(vocab_size=vocab_size, mask_prob=mask_prob,
                   max_predictions=max_predictions, special=special)

  def parse_and_mask(index, parts):
    # This process's streams side by side, parsed and masked as one batch; stream
    # g's block of rows gets the seed fold_in((seed, g), index), as if on its own.
    records = tf.concat(list(parts), 0)
    ex = _parse(records, seq_len, max_per_row, nsp_weight)
    if static_masks:
      return _with_static_masks(ex, records, max_predictions)
    word_start = ex.pop("word_start")
    seeds = tf.stack([tf.random.experimental.stateless_fold_in(stream_seeds[i], index)
                      for i in range(len(mine))])
    return {**ex, **masking.mask_batch(ex["input_ids"], seeds, word_start=word_start,
                                       **mask_args)}

  ds = tf.data.Dataset.zip(tuple(streams)).enumerate(start=first_batch)
  ds = ds.map(parse_and_mask, num_parallel_calls=tf.data.AUTOTUNE)
  return ds.prefetch(tf.data.AUTOTUNE)


def numpy_batches(ds: tf.data.Dataset, where: str) -> Iterator[dict]:
  """The dataset's batches as numpy; a shard that cannot be read (corrupt, truncated,
  gone) ends it with one InputError naming `where` rather than TensorFlow's trace."""
  it = ds.as_numpy_iterator()
  while True:
    try:
      batch = next(it)
    except StopIteration:
      return
    except tf.errors.OpError as e:
      raise InputError(f"cannot read the prepared data in {where}: "
                       f"{e.message.splitlines()[0]}") from e
    yield batch


def prefetch_to_device(batches: Iterator[dict], batch_sharding, size: int = 2):
  """Global arrays of the next `size` batches, already on their devices: the
  host-to-device copies of the next batches overlap the running step."""
  queue = collections.deque()
  for batch in batches:
    queue.append(sharding.to_global(batch, batch_sharding))
    if len(queue) > size:
      yield queue.popleft()
  yield from queue


def eval_batches(path: str, mask_seed, *, global_batch: int, seq_len: int,
                 max_examples: int, process_index: int = 0, process_count: int = 1,
                 **mask_args) -> list[dict]:
  """This process's rows of every batch of a held-out set, as numpy (the set is
  small), masked once with `mask_seed`. Rows beyond the data have `example_weight` 0
  and no masked positions, so the last batch is padded, never dropped."""
  records = tf.data.TFRecordDataset(path)
  if max_examples:
    records = records.take(max_examples)
  ds = masked_batches(records, tf.constant(mask_seed, tf.int64), batch=1024,
                      seq_len=seq_len, drop_remainder=False, **mask_args)
  rows = list(ds.as_numpy_iterator())
  if not rows:
    return []
  rows = {k: np.concatenate([b[k] for b in rows]) for k in rows[0]}
  n = len(rows["input_ids"])
  rows["example_weight"] = np.ones(n, np.float32)
  pad = -n % global_batch
  rows = {k: np.concatenate([v, np.zeros((pad,) + v.shape[1:], v.dtype)])
          for k, v in rows.items()}
  per_process = global_batch // process_count
  return [{k: v[i + process_index * per_process:i + (process_index + 1) * per_process]
           for k, v in rows.items()}
          for i in range(0, n + pad, global_batch)]


def read_input_ids(files: list[str], count: int) -> list[np.ndarray]:
  """The token ids of the first `count` rows of `files` (unmasked, unpadded)."""
  out = []
  for record in tf.data.TFRecordDataset(files).take(count).as_numpy_iterator():
    ids = tf.train.Example.FromString(record).features.feature["input_ids"].int64_list.value
    out.append(np.asarray(ids, np.int64))
  return out
