"""`bert-jax prepare`: text sources -> tokenizer -> examples -> TFRecord shards + stats.

Output, under DATA_DIR (WORKDIR/data unless data.prepared_dir is set):
  shard-00000-of-00008.tfrecord ...   tf.train.Examples: input_ids, segment_ids,
                                      next_sentence_label (unpadded, unmasked), and
                                      word_start with whole-word masking
  stats.json                          counts, [UNK] rate, padding fraction, ...
Masking happens later, in the input pipeline, so every epoch sees new masks.

Documents are read as a stream and cut into chunks of data.chunk_documents; each
chunk is tokenized, paired (data.objective), packed and serialized with its own seed,
by data.prepare_workers processes, so the output does not depend on the worker count.
Every process of a job reads the stream and does chunks i, i + n, ... (process i of
n); process 0 trains the tokenizer first and writes stats.json last. The rows get a
global shuffle on their way to the shards (shuffle.py), so the shards, stats (but
`seconds`) and tokenizer are byte for byte the same whatever the process count.
Processes wait for each other on the distributed runtime's key-value store, never in a
device collective (gloo gives up after 30 s, while tokenizing takes hours).
"""

import collections
import dataclasses
import functools
import itertools
import json
import logging
import multiprocessing
import os
import random
import threading
import time
from typing import Iterable, Iterator

from etils import epath
# The distributed runtime's state (as Orbax reads it): its client, and this process's
# place, without starting a backend as jax.process_index() would.
from jax._src import distributed as jax_distributed
import numpy as np
import tensorflow as tf
import tqdm

from bert_jax.configs import validate
from bert_jax.data import corpus
from bert_jax.data import masking
from bert_jax.data import packing
from bert_jax.data import pairs
from bert_jax.data import shuffle
from bert_jax.data import tokenizer
from bert_jax.data import words
from bert_jax.errors import InputError
from bert_jax.runtime import checkpoints, outputs

log = logging.getLogger(__name__)

STATS_FILE = "stats.json"
EVAL_FILE = "eval.tfrecord"  # held-out examples, see evaluate.py


def data_dir(config, workdir: str) -> str:
  return config.data.prepared_dir or os.path.join(workdir, "data")


def _varint(n: int) -> bytes:
  out = bytearray()
  while n >= 0x80:
    out.append(n & 0x7F | 0x80)
    n >>= 7
  out.append(n)
  return bytes(out)


@functools.cache
def _entry_header(name: str, n: int) -> bytes:
  """What precedes an n-byte packed Int64List in a tf.train.Example: its map entry
  (key 1, Feature value 2) up to the list's values."""
  key = b"\x0a" + _varint(len(name)) + name.encode()
  int64_list = b"\x0a" + _varint(n)
  feature = b"\x1a" + _varint(len(int64_list) + n) + int64_list
  entry = key + b"\x12" + _varint(len(feature) + n) + feature
  return b"\x0a" + _varint(len(entry) + n) + entry


def _flat(lists) -> tuple[np.ndarray, list[int]]:
  """Lists of ints end to end, and their lengths."""
  lists = list(lists)
  lengths = [len(x) for x in lists]
  return np.fromiter(itertools.chain.from_iterable(lists), np.int64, sum(lengths)), lengths


def _varints(values: np.ndarray, per_row: list[int]) -> tuple[bytes, np.ndarray]:
  """Non-negative ints as protobuf varints, end to end, and the byte offsets where
  the rows (of `per_row` values each) start, and where the last one ends."""
  v = values.astype(np.uint64)
  most = max(1, (int(v.max(initial=0)).bit_length() + 6) // 7)  # bytes of the largest
  if most <= 4:  # ids and lengths: the same arithmetic in half the memory traffic
    v = v.astype(np.uint32)
  byte = np.arange(most, dtype=v.dtype)
  size = 1 + (v[:, None] >= (v.dtype.type(1) << (7 * byte[1:]))).sum(1)
  ends = np.cumsum(size)
  # Every value's `most` 7-bit digits, "more" on all but its last; the digits it has,
  # row after row, are the varints end to end.
  more = (byte < (size - 1)[:, None]).astype(v.dtype) << v.dtype.type(7)
  digits = (v[:, None] >> (v.dtype.type(7) * byte)) & v.dtype.type(0x7F) | more
  out = digits.astype(np.uint8)[byte < size[:, None]]
  return out.tobytes(), np.concatenate([[0], ends])[np.cumsum([0] + per_row)]


def serialize_rows(examples: pairs.Examples, rows: list[list[int]],
                   whole_words: bool = False, masks: list[dict] | None = None
                   ) -> list[bytes]:
  """Shard records: per row of one or more (packed) examples (indices into
  `examples`) the tf.train.Example of its features, tokens end to end and one label
  and length per example; with static masking its masked ids and predictions
  (masking.mask_rows). Encoded here, a chunk's values at a time in numpy, in half
  the time of building a tf.train.Example per row."""
  per_row = [len(row) for row in rows]
  ordered = examples.take(np.fromiter(itertools.chain.from_iterable(rows), np.int64,
                                      sum(per_row)))
  row_tokens = np.diff(ordered.offsets[np.cumsum([0] + per_row)]).tolist()
  columns = {
      "input_ids": (_flat(m["input_ids"] for m in masks)[0] if masks
                    else ordered.input_ids, row_tokens),
      "segment_ids": (ordered.segment_ids, row_tokens),
      "next_sentence_label": (ordered.labels, per_row),
      "example_lengths": (ordered.lengths, per_row),
  }
  if masks:
    columns["masked_positions"] = _flat(m["masked_positions"] for m in masks)
    columns["masked_ids"] = _flat(m["masked_ids"] for m in masks)
  if whole_words:
    columns["word_start"] = (ordered.word_start, row_tokens)
  # A record is [features header][entry header, values] per column: its pieces are
  # gathered from one pool of the columns' varints and the distinct headers, so no
  # Python runs per row (but slicing the records out).
  pool, used = [], 0

  def pooled(blob: bytes) -> int:
    nonlocal used
    pool.append(blob)
    used += len(blob)
    return used - len(blob)

  def headers(make, sizes):  # pooled start and length of make(size) for every size
    distinct, which = np.unique(sizes, return_inverse=True)
    made = [make(int(n)) for n in distinct]
    return (np.array([pooled(h) for h in made], np.int64)[which],
            np.array([len(h) for h in made], np.int64)[which])

  piece_start = np.zeros((len(rows), 1 + 2 * len(columns)), np.int64)
  piece_length = np.zeros_like(piece_start)
  for c, (name, (values, per)) in enumerate(columns.items(), 1):
    blob, bounds = _varints(values, per)
    payload = pooled(blob) + bounds[:-1], np.diff(bounds)
    header = headers(functools.partial(_entry_header, name), payload[1])
    (piece_start[:, 2 * c - 1], piece_length[:, 2 * c - 1]) = header
    (piece_start[:, 2 * c], piece_length[:, 2 * c]) = payload
  # Example.features: field 1, as long as the rest.
  piece_start[:, 0], piece_length[:, 0] = headers(lambda n: b"\x0a" + _varint(n),
                                                  piece_length.sum(1))
  pool = np.frombuffer(b"".join(pool), np.uint8)
  records = pool[pairs.ranges(piece_start.ravel(), piece_length.ravel())].tobytes()
  ends = np.cumsum(piece_length.sum(1)).tolist()
  return [records[a:b] for a, b in zip([0] + ends, ends)]


def serialize_row(row: list[pairs.Example], whole_words: bool = False,
                  masks: dict | None = None) -> bytes:
  """One row's record (serialize_rows) of these examples."""
  return serialize_rows(pairs.Examples.from_list(row), [list(range(len(row)))],
                        whole_words, [masks] if masks else None)[0]


def serialize(ex: pairs.Example, whole_words: bool = False) -> bytes:
  return serialize_row([ex], whole_words)


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


@dataclasses.dataclass(frozen=True)
class ChunkSettings:
  """What turns a chunk of documents into examples, besides the tokenizer (and
  the threads it encodes with, which change only the speed)."""
  max_seq_length: int
  short_seq_prob: float
  dupe_factor: int
  seed: int
  objective: str
  whole_words: bool
  tokenizer_threads: int = 0


def tokenize(docs: list[corpus.Document], tok: tokenizer.Tokenizer, tables,
             whole_words: bool, threads: int = 0) -> list[list[list[int]]]:
  """Documents of sentences of tokens; with `whole_words`, continuation tokens are
  marked (words.mark) from the corpus's segmentation or from the pieces."""
  sentences = [s for d in docs for s in d]
  segmented = [whole_words and isinstance(s, tuple) for s in sentences]
  batch = iter(tok.encode_batch(
      [corpus.text(s) for s, seg in zip(sentences, segmented) if not seg], threads))
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
                  ) -> tuple[pairs.Examples, collections.Counter]:
  """Examples of chunk `index` and its counts; a pure function of its arguments
  (`tables`: words.piece_tables(tok))."""
  tokenized = tokenize(docs, tok, tables, s.whole_words, s.tokenizer_threads)
  max_tokens = s.max_seq_length - (2 if s.objective == "none" else 3)
  sentences = [t for d in tokenized for t in d]
  lengths = [len(t) for t in sentences]
  # Counted by C loops over the lists (list.count, map): building one array of the
  # tokens costs more. Continuation tokens are negative (words.mark).
  continuing = sum(sum(map((0).__gt__, t)) for t in sentences) if s.whole_words else 0
  counts = collections.Counter(
      documents=len(docs), sentences=len(lengths), tokens=sum(lengths),
      unk=sum(t.count(tok.unk_id) + t.count(~tok.unk_id) for t in sentences),
      words=sum(lengths) - continuing,
      long_sentences=sum(n > max_tokens for n in lengths))
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
  """(index, examples, counts) of process_chunk over `jobs`, in order. With
  workers > 1, in forked processes (they inherit the imported modules) that each load
  the tokenizer once; at most two chunks a worker are in flight, so memory stays
  bounded."""
  if workers <= 1:
    tables = words.piece_tables(tok)
    for index, docs in jobs:
      yield index, *process_chunk(index, docs, settings, tok, tables)
    return
  with multiprocessing.get_context("fork").Pool(
      workers, initializer=_init_worker, initargs=(tok.files[0],)) as pool:
    pending = collections.deque()
    for index, docs in jobs:
      pending.append((index, pool.apply_async(_worker_chunk, (index, docs, settings))))
      if len(pending) >= 2 * workers:
        index, result = pending.popleft()
        yield index, *result.get()
    for index, result in pending:
      yield index, *result.get()


def chunk_records(index: int, examples: pairs.Examples, d, tok: tokenizer.Tokenizer,
                  seed: int) -> list[bytes]:
  """Chunk `index`'s examples packed into rows (data config `d`), with static masks
  drawn from (seed, index), serialized."""
  rows = packing.pack_rows(examples.lengths, d.max_seq_length, d.max_examples_per_row)
  masks = None
  if d.masking == "static":
    joined = [examples.take(r) for r in rows]
    masks = masking.mask_rows(
        [j.input_ids for j in joined], d.max_seq_length, (seed, index),
        word_start=[j.word_start for j in joined] if d.whole_word_masking else None,
        vocab_size=tok.vocab_size, mask_prob=d.mask_prob,
        max_predictions=d.max_predictions_per_seq, special=tok.special)
  return serialize_rows(examples, rows, d.whole_word_masking, masks)


def _sample(sentences: Iterable[str], n: int, seed: int) -> list[str]:
  """A uniform sample of n sentences in one pass (reservoir sampling)."""
  rng, sample = random.Random(f"tokenizer/{seed}"), []
  for i, s in enumerate(sentences):
    if i < n:
      sample.append(s)
    elif (j := rng.randrange(i + 1)) < n:
      sample[j] = s
  return sample


class LocalStore:
  """A key-value store within one Python process: the default for a prepare run
  alone (and for processes simulated by threads). Same methods as the distributed
  runtime's client."""

  def __init__(self):
    self._values = {}
    self._changed = threading.Condition()

  def key_value_set(self, key: str, value: str) -> None:
    with self._changed:
      self._values[key] = value
      self._changed.notify_all()

  def blocking_key_value_get(self, key: str, timeout_in_ms: int) -> str:
    with self._changed:
      if not self._changed.wait_for(lambda: key in self._values, timeout_in_ms / 1000):
        raise TimeoutError(f"no {key} after {timeout_in_ms} ms")
      return self._values[key]


@dataclasses.dataclass(frozen=True)
class Job:
  """The processes preparing together: this one's index, their count, and the
  key-value store they wait on."""
  index: int = 0
  count: int = 1
  store: object = dataclasses.field(default_factory=LocalStore)


def jax_job() -> Job:
  """This process's place in its jax.distributed job (main.py starts one), or alone."""
  state = jax_distributed.global_state
  if state.client is None:
    return Job()
  return Job(state.process_id, state.num_processes, state.client)


# How long a process waits for the others: process 0 alone reads the whole corpus for
# the tokenizer's sample, and a corpus takes hours to tokenize.
TIMEOUT_MS = 24 * 3600 * 1000
# Where the processes of a prepare wait for each other, in order, and who reports
# there: process 0 ("first": the tokenizer is ready, stats.json is written) or all.
_STAGES = {"tokenizer": "first", "scattered": "all", "written": "all", "stats": "first"}
_FAILED = "failed: "


class Meetings:
  """Named points, in order, where the processes of a job wait for each other's
  reports on its key-value store. `stages`: name -> who reports there ("first":
  process 0, "all"). Keys are taken once per job: a second run under the same
  `prefix` finds them taken (an error, not a mix-up)."""

  def __init__(self, job: Job, prefix: str = "bert_jax/prepare", stages=None):
    self.job, self.prefix, self.stages = job, prefix, stages or _STAGES
    self.reported = set()

  def _who(self, stage: str) -> range:
    return range(1 if self.stages[stage] == "first" else self.job.count)

  def _report(self, stage: str, value: str) -> None:
    self.reported.add(stage)
    self.job.store.key_value_set(f"{self.prefix}/{stage}/{self.job.index}", value)

  def meet(self, stage: str, value: str = "ok") -> list[str]:
    """Reports `value` at `stage` (if this process reports there) and waits for
    every report there; an InputError if a process reported a failure."""
    if self.job.index in self._who(stage):
      self._report(stage, value)
    values = [self.job.store.blocking_key_value_get(f"{self.prefix}/{stage}/{i}",
                                                    TIMEOUT_MS)
              for i in self._who(stage)]
    for i, v in enumerate(values):
      if v.startswith(_FAILED):
        raise InputError(f"process {i} could not prepare the data: {v[len(_FAILED):]}")
    return values

  def fail(self, error: BaseException) -> None:
    """Reports `error` at every stage still ahead of this process, so that no other
    waits for it in vain: a failure anywhere reaches every process."""
    for stage in self.stages:
      if self.job.index in self._who(stage) and stage not in self.reported:
        self._report(stage, _FAILED + " ".join(str(error).split()))


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
  """A data directory's prepared files, stats.json (the mark of a complete one) first,
  and what an interrupted prepare left."""
  for name in (STATS_FILE, EVAL_FILE, "shard-*.tfrecord", "tmp-*"):
    for path in tf.io.gfile.glob(os.path.join(out_dir, name)):
      tf.io.gfile.remove(path)


def run(config, workdir: str, overwrite: bool = False, job: Job | None = None) -> dict:
  """Prepares the data for `config` with every process of `job` (default: jax_job());
  returns the stats (also written to stats.json, by process 0 once all are done: a
  directory without it is not prepared data). A failure on any process fails all,
  with its cause; process 0 then removes the files, directories and tokenizer it had
  made (a process still writing may leave a file: no run reads it without
  stats.json, and the next prepare removes it). `overwrite` replaces data already
  prepared there, and the workdir's tokenizer (unless it came from config.init_from).
  All processes must see the same workdir (a shared file system)."""
  job = job or jax_job()
  meetings = Meetings(job)
  out_dir = data_dir(config, workdir)
  lead = job.index == 0
  try:
    validate.check(config, training=False)
    if lead:
      _check_target(workdir, out_dir, overwrite)
  except BaseException as e:
    meetings.fail(e)
    raise
  if lead and overwrite and not config.init_from and (old := tokenizer.find(workdir)):
    epath.Path(old).unlink()
  # What process 0 would remove again after a failure.
  new_dirs = [p for p in (workdir, out_dir) if lead and not epath.Path(p).exists()]
  had_tokenizer = tokenizer.find(workdir) is not None
  try:
    return _prepare(config, workdir, out_dir, job, meetings)
  except BaseException as e:
    meetings.fail(e)
    if lead:
      _remove_data(out_dir)
      if not had_tokenizer and (made := tokenizer.find(workdir)):
        epath.Path(made).unlink()
        epath.Path(made).parent.rmdir()
      for path in reversed(new_dirs):
        if epath.Path(path).exists():
          epath.Path(path).rmtree()
    raise


def _prepare(config, workdir: str, out_dir: str, job: Job, meetings: Meetings) -> dict:
  start = time.time()
  d = config.data
  source = d.input or "the embedded corpus"  # for messages
  lead = job.index == 0

  def documents(counts, segmented=False):
    return corpus.iter_documents(d.input, d.max_documents, counts, d.text_field,
                                 d.tfds_data_dir, words=segmented)

  def tokenizer_sample():
    if not lead:
      raise InputError(f"process {job.index} sees no tokenizer in {workdir} after "
                       f"process 0 made it: the processes must share the workdir")
    counts = corpus.ReadCounts()
    sample = _sample((corpus.text(s) for doc in documents(counts) for s in doc),
                     d.tokenizer_sentences, config.train.seed)
    if not any(s.strip() for s in sample):
      raise InputError(f"no text found in {source}" + (
          f": {len(counts.skipped_files)} binary file(s) skipped"
          if counts.skipped_files else ""))
    return sample

  if lead:
    _remove_data(out_dir)
    tf.io.gfile.makedirs(out_dir)
  else:
    meetings.meet("tokenizer")
  tok = tokenizer.get_or_train(workdir, tokenizer_sample, config.model.vocab_size,
                               d.tokenizer_sentences, config.train.seed,
                               d.tokenizer_model_type)
  if tok.pad_id != 0:
    raise ValueError(f"the tokenizer's [PAD] has id {tok.pad_id}; rows are padded with 0")
  if lead:
    meetings.meet("tokenizer")
  settings = ChunkSettings(d.max_seq_length, d.short_seq_prob, d.dupe_factor,
                           config.train.seed, d.objective, d.whole_word_masking,
                           d.tokenizer_threads)

  # Step 1: this process's chunks -> rows, scattered to buckets by their sort keys.
  counts = collections.Counter()
  read_counts = corpus.ReadCounts()
  docs = documents(read_counts, d.whole_word_masking)
  # The first documents are held out for evaluation, before any is trained on.
  held_out = list(itertools.islice(docs, d.eval_documents))
  mine = ((i, chunk) for i, chunk in _jobs(docs, d.chunk_documents)
          if i % job.count == job.index)
  scatter = shuffle.Scatter(out_dir, job.index)
  progress = tqdm.tqdm(unit="doc", desc="prepare", disable=None)
  for index, examples, chunk_counts in _results(mine, settings, tok, d.prepare_workers):
    counts.update(chunk_counts)
    counts["examples"] += len(examples)
    counts["real_tokens"] += int(examples.lengths.sum())
    counts["label_1"] += int(examples.labels.sum())
    records = chunk_records(index, examples, d, tok, config.train.seed)
    counts["rows"] += len(records)
    scatter.add([k + r for k, r in zip(
        shuffle.keys(config.train.seed, index, len(records)), records)])
    progress.update(chunk_counts["documents"])
  progress.close()
  bucket_records, bucket_bytes = scatter.close()
  reports = [json.loads(r) for r in meetings.meet("scattered", json.dumps(
      {"counts": counts, "records": bucket_records, "bytes": bucket_bytes}))]
  counts = sum((collections.Counter(r["counts"]) for r in reports), collections.Counter())
  if not counts["documents"]:
    # "No text" would be false here: lines without a blank one between them are one
    # document, and evaluation holds out the first documents.
    if held_out:
      raise InputError(
          f"{source} has {len(held_out)} document(s), all "
          f"held out for evaluation (data.eval_documents={d.eval_documents}): none is "
          f"left to train on. Lower data.eval_documents, or separate a text file's "
          f"documents by blank lines")
    raise InputError(f"no text found in {source}")
  if counts["rows"] < d.num_shards:
    raise InputError(f"only {counts['rows']} rows for {d.num_shards} shards")

  # Step 2: this process's block of shards, from the buckets of every process.
  bounds = shuffle.shard_bounds(counts["rows"], d.num_shards)
  shuffle.write_shards(out_dir, shard_paths(out_dir, d.num_shards),
                       shuffle.own_shards(d.num_shards, job.index, job.count), bounds,
                       [r["records"] for r in reports], [r["bytes"] for r in reports],
                       job.index)
  meetings.meet("written")
  if not lead:
    return json.loads(meetings.meet("stats")[0])
  for path in tf.io.gfile.glob(os.path.join(out_dir, "tmp-*")):
    tf.io.gfile.remove(path)
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
      "shard_sizes": [b - a for a, b in zip(bounds, bounds[1:])],
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
  meetings.meet("stats", json.dumps(stats))
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
  n = min(len(examples), max_examples) if max_examples else len(examples)
  write_records(serialize_rows(examples, [[i] for i in range(n)], settings.whole_words),
                [os.path.join(out_dir, EVAL_FILE)])
  return n


def shard_files(directory: str) -> list[str]:
  return sorted(tf.io.gfile.glob(os.path.join(directory, "shard-*.tfrecord")))
