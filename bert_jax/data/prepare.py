"""`bert-jax prepare`: text sources -> tokenizer -> examples -> TFRecord shards + stats.

Output, under DATA_DIR (WORKDIR/data unless data.prepared_dir is set):
  shard-00000-of-00008.tfrecord ...   tf.train.Examples: input_ids, segment_ids,
                                      next_sentence_label (unpadded, unmasked), and
                                      word_start with whole-word masking
  stats.json                          counts, [UNK] rate, padding fraction, ...
Masking happens later, in the input pipeline, so every epoch sees new masks.

Documents are read as a stream and cut into chunks of data.chunk_documents; each
chunk is tokenized and paired (data.objective) with its own seed, by
data.prepare_workers processes, so the output does not depend on the worker count.
Examples then get a global shuffle on their way to the shards: scattered at random
into num_shards temporary buckets, each bucket shuffled in memory and dealt
round-robin, so shard sizes differ by at most one and memory holds one bucket.
"""

import collections
import dataclasses
import itertools
import json
import logging
import multiprocessing
import os
import random
import time
from typing import Iterable, Iterator

from etils import epath
import tensorflow as tf
import tqdm

from bert_jax.configs import validate
from bert_jax.data import corpus
from bert_jax.data import masking
from bert_jax.data import packing
from bert_jax.data import pairs
from bert_jax.data import tokenizer
from bert_jax.data import words
from bert_jax.errors import InputError
from bert_jax.runtime import checkpoints, outputs

log = logging.getLogger(__name__)

STATS_FILE = "stats.json"
EVAL_FILE = "eval.tfrecord"  # held-out examples, see evaluate.py


def data_dir(config, workdir: str) -> str:
  return config.data.prepared_dir or os.path.join(workdir, "data")


def _feature(values) -> tf.train.Feature:
  return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def serialize(ex: pairs.Example, whole_words: bool = False) -> bytes:
  return serialize_row([ex], whole_words)


def serialize_row(row: list[pairs.Example], whole_words: bool = False,
                  masks: dict | None = None) -> bytes:
  """One shard record: a row of one or more (packed) examples; with static masking
  its masked ids and predictions (masking.mask_rows)."""
  f = {**packing.concat(row), **(masks or {})}
  names = ("input_ids", "segment_ids", "next_sentence_label", "example_lengths")
  names += ("masked_positions", "masked_ids") if masks else ()
  feature = {k: _feature(f[k]) for k in names}
  if whole_words:
    feature["word_start"] = _feature(f["word_start"])
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def shard_paths(out_dir: str, num_shards: int) -> list[str]:
  return [os.path.join(out_dir, f"shard-{i:05d}-of-{num_shards:05d}.tfrecord")
          for i in range(num_shards)]


def write_records(records: Iterable[bytes], paths: list[str]) -> list[int]:
  """Deals records round-robin over `paths`; returns the records per file."""
  writers = [tf.io.TFRecordWriter(p) for p in paths]
  sizes = [0] * len(paths)
  for i, record in enumerate(records):
    writers[i % len(paths)].write(record)
    sizes[i % len(paths)] += 1
  for w in writers:
    w.close()
  return sizes


def shuffle_to_shards(records: Iterable[bytes], out_dir: str, num_shards: int,
                      seed: int) -> list[int]:
  """Writes `records` to the shards in a uniformly random order (see the module
  docstring); returns the shard sizes."""
  rng = random.Random(f"shuffle/{seed}")
  tf.io.gfile.makedirs(out_dir)
  buckets = [os.path.join(out_dir, f"tmp-bucket-{i:05d}.tfrecord")
             for i in range(num_shards)]
  writers = [tf.io.TFRecordWriter(p) for p in buckets]
  for record in records:
    writers[rng.randrange(num_shards)].write(record)
  for w in writers:
    w.close()

  def dealt():
    for path in buckets:
      bucket = [r for batch in tf.data.TFRecordDataset(path).batch(4096)
                .as_numpy_iterator() for r in batch]
      rng.shuffle(bucket)
      yield from bucket
      tf.io.gfile.remove(path)

  return write_records(dealt(), shard_paths(out_dir, num_shards))


def check_token_ids(files: list[str], vocab_size: int) -> None:
  """InputError naming the first shard holding a token id >= vocab_size."""
  for path in files:
    ds = tf.data.TFRecordDataset(path).batch(1024).map(
        lambda r: tf.reduce_max(tf.io.parse_example(
            r, {"input_ids": tf.io.RaggedFeature(tf.int64)})["input_ids"]))
    largest = max((int(m) for m in ds.as_numpy_iterator()), default=-1)
    if largest >= vocab_size:
      raise InputError(f"{path} holds token id {largest}, not below the vocabulary "
                       f"size {vocab_size}: it was prepared with another tokenizer")


@dataclasses.dataclass(frozen=True)
class ChunkSettings:
  """What turns a chunk of documents into examples, besides the tokenizer."""
  max_seq_length: int
  short_seq_prob: float
  dupe_factor: int
  seed: int
  objective: str
  whole_words: bool


def tokenize(docs: list[corpus.Document], tok: tokenizer.Tokenizer, tables,
             whole_words: bool) -> list[list[list[int]]]:
  """Documents of sentences of tokens; with `whole_words`, continuation tokens are
  marked (words.mark) from the corpus's segmentation or from the pieces."""
  sentences = [s for d in docs for s in d]
  segmented = [whole_words and isinstance(s, tuple) for s in sentences]
  batch = iter(tok.encode_batch(
      [corpus.text(s) for s, seg in zip(sentences, segmented) if not seg]))
  flat = []
  for sentence, seg in zip(sentences, segmented):
    if seg:
      ids, offsets = tok.encode_offsets(corpus.text(sentence))
      flat.append(words.mark(ids, words.segmented_starts(offsets, sentence)))
    elif whole_words:
      ids = next(batch)
      flat.append(words.mark(ids, words.piece_starts(ids, *tables)))
    else:
      flat.append(next(batch))
  out, k = [], 0
  for d in docs:
    out.append(flat[k:k + len(d)])
    k += len(d)
  return out


def process_chunk(index: int, docs: list[corpus.Document], s: ChunkSettings,
                  tok: tokenizer.Tokenizer, tables
                  ) -> tuple[list[pairs.Example], collections.Counter]:
  """Examples of chunk `index` and its counts; a pure function of its arguments
  (`tables`: words.piece_tables(tok))."""
  tokenized = tokenize(docs, tok, tables, s.whole_words)
  max_tokens = s.max_seq_length - (2 if s.objective == "none" else 3)
  counts = collections.Counter(documents=len(docs))
  for sentence in (t for d in tokenized for t in d):
    counts["sentences"] += 1
    counts["tokens"] += len(sentence)
    counts["unk"] += sum(t in (tok.unk_id, ~tok.unk_id) for t in sentence)
    counts["words"] += sum(t >= 0 for t in sentence)
    counts["long_sentences"] += len(sentence) > max_tokens
  examples = pairs.create_examples(
      tokenized, s.max_seq_length, s.short_seq_prob, s.dupe_factor,
      f"{s.seed}/{index}", tok.special, s.objective)
  return examples, counts


def _jobs(docs: Iterator[corpus.Document], size: int):
  """(index, documents) chunks."""
  chunk, index = [], 0
  for doc in docs:
    chunk.append(doc)
    if len(chunk) == size:
      yield index, chunk
      chunk, index = [], index + 1
  if chunk:
    yield index, chunk


# A pool worker's tokenizer and tables, loaded once by _init_worker.
_worker_tokenizer = None


def _init_worker(path: str) -> None:
  global _worker_tokenizer
  tok = tokenizer.load(path)
  _worker_tokenizer = tok, words.piece_tables(tok)


def _worker_chunk(index, docs, settings):
  return process_chunk(index, docs, settings, *_worker_tokenizer)


def _results(jobs, settings: ChunkSettings, tok: tokenizer.Tokenizer, workers: int):
  """process_chunk over `jobs`, in order. With workers > 1, in forked processes
  (they inherit the imported modules) that each load the tokenizer once; at most two
  chunks a worker are in flight, so memory stays bounded."""
  if workers <= 1:
    tables = words.piece_tables(tok)
    for index, docs in jobs:
      yield process_chunk(index, docs, settings, tok, tables)
    return
  with multiprocessing.get_context("fork").Pool(
      workers, initializer=_init_worker, initargs=(tok.files[0],)) as pool:
    pending = collections.deque()
    for index, docs in jobs:
      pending.append(pool.apply_async(_worker_chunk, (index, docs, settings)))
      if len(pending) >= 2 * workers:
        yield pending.popleft().get()
    while pending:
      yield pending.popleft().get()


def _sample(sentences: Iterable[str], n: int, seed: int) -> list[str]:
  """A uniform sample of n sentences in one pass (reservoir sampling)."""
  rng, sample = random.Random(f"tokenizer/{seed}"), []
  for i, s in enumerate(sentences):
    if i < n:
      sample.append(s)
    elif (j := rng.randrange(i + 1)) < n:
      sample[j] = s
  return sample


def _check_target(workdir: str, out_dir: str, overwrite: bool) -> None:
  """Refuses, before anything is written, a target that is not a writable directory
  or already holds prepared data (replaced only with `overwrite`, and never under a
  run's checkpoints: they need the data's tokenizer)."""
  outputs.check_dir(workdir)
  outputs.check_dir(out_dir, "the data directory")
  if epath.Path(out_dir, STATS_FILE).exists():
    if not overwrite:
      raise InputError(f"{out_dir} already holds prepared data; pass --overwrite to "
                       f"replace it (and the workdir's tokenizer), or use a new --workdir")
    if checkpoints.has_checkpoint(workdir):
      raise InputError(f"{workdir} holds checkpoints trained on its data and tokenizer; "
                       f"--overwrite would orphan them: prepare into a new --workdir")


def _remove_data(out_dir: str) -> None:
  """A data directory's prepared files, stats.json (the mark of a complete one) first."""
  for name in (STATS_FILE, "eval.tfrecord", "shard-*.tfrecord", "tmp-bucket-*.tfrecord"):
    for path in tf.io.gfile.glob(os.path.join(out_dir, name)):
      tf.io.gfile.remove(path)


def run(config, workdir: str, overwrite: bool = False) -> dict:
  """Prepares the data for `config`; returns the stats (also written to stats.json,
  last: a directory without it is not prepared data). Nothing is left behind by a
  failure: the files, directories and tokenizer it had made are removed again.
  `overwrite` replaces data already prepared there, and the workdir's tokenizer
  (unless it came from config.init_from)."""
  validate.check(config, training=False)
  out_dir = data_dir(config, workdir)
  _check_target(workdir, out_dir, overwrite)
  if overwrite:
    _remove_data(out_dir)
    if not config.init_from and (old := tokenizer.find(workdir)):
      epath.Path(old).unlink()
  new_dirs = [p for p in (workdir, out_dir) if not epath.Path(p).exists()]
  had_tokenizer = tokenizer.find(workdir) is not None
  try:
    return _prepare(config, workdir, out_dir)
  except BaseException:
    _remove_data(out_dir)
    if not had_tokenizer and (made := tokenizer.find(workdir)):
      epath.Path(made).unlink()
      epath.Path(made).parent.rmdir()
    for path in reversed(new_dirs):
      if epath.Path(path).exists():
        epath.Path(path).rmtree()
    raise


def _prepare(config, workdir: str, out_dir: str) -> dict:
  start = time.time()
  d = config.data
  read_counts = corpus.ReadCounts()

  def documents(counts, segmented=False):
    return corpus.iter_documents(d.input, d.max_documents, counts, d.text_field,
                                 d.tfds_data_dir, words=segmented)

  def tokenizer_sample():
    counts = corpus.ReadCounts()
    sample = _sample((corpus.text(s) for doc in documents(counts) for s in doc),
                     d.tokenizer_sentences, config.train.seed)
    if not any(s.strip() for s in sample):
      raise InputError(f"no text found in {d.input or 'the embedded corpus'}" + (
          f": {len(counts.skipped_files)} binary file(s) skipped"
          if counts.skipped_files else ""))
    return sample

  tok = tokenizer.get_or_train(workdir, tokenizer_sample, config.model.vocab_size,
                               d.tokenizer_sentences, config.train.seed)
  if tok.pad_id != 0:
    raise ValueError(f"the tokenizer's [PAD] has id {tok.pad_id}; rows are padded with 0")
  settings = ChunkSettings(d.max_seq_length, d.short_seq_prob, d.dupe_factor,
                           config.train.seed, d.objective, d.whole_word_masking)
  counts = collections.Counter()
  progress = tqdm.tqdm(unit="doc", desc="prepare", disable=None)

  docs = documents(read_counts, d.whole_word_masking)
  # The first documents are held out for evaluation, before any is trained on.
  held_out = list(itertools.islice(docs, d.eval_documents))

  def records():
    for index, (examples, chunk_counts) in enumerate(_results(
        _jobs(docs, d.chunk_documents), settings, tok, d.prepare_workers)):
      counts.update(chunk_counts)
      counts["examples"] += len(examples)
      counts["real_tokens"] += sum(len(e.input_ids) for e in examples)
      counts["label_1"] += sum(e.next_sentence_label for e in examples)
      progress.update(chunk_counts["documents"])
      rows = packing.pack_rows(examples, d.max_seq_length, d.max_examples_per_row)
      counts["rows"] += len(rows)
      masks = [None] * len(rows)
      if d.masking == "static":  # fixed now, per chunk: (seed, chunk) seeds the masks
        joined = [packing.concat(r) for r in rows]
        masks = masking.mask_rows(
            [j["input_ids"] for j in joined], d.max_seq_length, (config.train.seed, index),
            word_start=([j["word_start"] for j in joined]
                        if d.whole_word_masking else None),
            vocab_size=tok.vocab_size, mask_prob=d.mask_prob,
            max_predictions=d.max_predictions_per_seq, special=tok.special)
      yield from (serialize_row(r, d.whole_word_masking, m) for r, m in zip(rows, masks))

  sizes = shuffle_to_shards(records(), out_dir, d.num_shards, config.train.seed)
  progress.close()
  if not counts["documents"]:
    raise InputError(f"no text found in {d.input or 'the embedded corpus'}")
  if counts["rows"] < d.num_shards:
    raise InputError(f"only {counts['rows']} rows for {d.num_shards} shards")
  check_token_ids(shard_paths(out_dir, d.num_shards), tok.vocab_size)
  eval_examples = write_eval(held_out, out_dir, settings, tok, d.eval_examples)

  stats = {
      "documents": counts["documents"],
      "sentences": counts["sentences"],
      "tokens": counts["tokens"],
      "unk_rate": counts["unk"] / max(counts["tokens"], 1),
      "examples": counts["examples"],
      "objective": d.objective,
      # Fraction of label 1: B random (nsp), A and B swapped (sop), 0 (none).
      "label_fraction": counts["label_1"] / counts["examples"],
      "max_seq_length": d.max_seq_length,
      # Rows written: examples packed up to data.max_examples_per_row per row.
      "rows": counts["rows"],
      "max_examples_per_row": d.max_examples_per_row,
      "padding_fraction":
          1 - counts["real_tokens"] / (counts["rows"] * d.max_seq_length),
      "padding_fraction_unpacked":
          1 - counts["real_tokens"] / (counts["examples"] * d.max_seq_length),
      # Sentences longer than an example, split rather than truncated.
      "long_sentences": counts["long_sentences"],
      "whole_word_masking": d.whole_word_masking,
      # "static": masks written here, the same every epoch; "dynamic": drawn per batch.
      "masking": d.masking,
      **({"tokens_per_word": counts["tokens"] / max(counts["words"], 1)}
         if d.whole_word_masking else {}),
      "num_shards": d.num_shards,
      # Examples per shard: the input pipeline finds a resume position from them
      # without reading any data.
      "shard_sizes": sizes,
      # Held-out evaluation set (DATA_DIR/eval.tfrecord): its documents and examples.
      "eval_documents": len(held_out),
      "eval_examples": eval_examples,
      "vocab_size": tok.vocab_size,
      # What masking needs to know of the vocabulary the shards were tokenized with.
      "special_ids": dataclasses.asdict(tok.special),
      **dataclasses.asdict(read_counts),
      "seconds": round(time.time() - start, 1),
  }
  with tf.io.gfile.GFile(os.path.join(out_dir, STATS_FILE), "w") as f:
    json.dump(stats, f, indent=2)
  log.info("prepared %s: %s", out_dir, stats)
  return stats


def write_eval(docs: list, out_dir: str, settings: ChunkSettings,
               tok: tokenizer.Tokenizer, max_examples: int) -> int:
  """The held-out documents' examples (one pass, at most `max_examples`) to
  eval.tfrecord; returns how many."""
  if not docs:
    return 0
  examples, _ = process_chunk(-1, docs, dataclasses.replace(settings, dupe_factor=1),
                              tok, words.piece_tables(tok))
  examples = examples[:max_examples] if max_examples else examples
  write_records((serialize(e, settings.whole_words) for e in examples),
                [os.path.join(out_dir, EVAL_FILE)])
  return len(examples)


def shard_files(directory: str) -> list[str]:
  return sorted(tf.io.gfile.glob(os.path.join(directory, "shard-*.tfrecord")))
