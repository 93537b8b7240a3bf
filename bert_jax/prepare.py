"""`bert-jax prepare`: corpus -> tokenizer -> NSP examples -> TFRecord shards + stats.

Output, under DATA_DIR (WORKDIR/data unless data.prepared_dir is set):
  shard-00000-of-00008.tfrecord ...   tf.train.Examples: input_ids, segment_ids,
                                      next_sentence_label (unpadded, unmasked)
  stats.json                          counts, [UNK] rate, padding fraction
Masking happens later, in the input pipeline, so every epoch sees new masks.
"""

import dataclasses
import json
import logging
import os
import time

import numpy as np
import tensorflow as tf

from bert_jax import corpus, pairs, tokenizer

log = logging.getLogger(__name__)

STATS_FILE = "stats.json"


def data_dir(config, workdir: str) -> str:
  return config.data.prepared_dir or os.path.join(workdir, "data")


def _feature(values) -> tf.train.Feature:
  return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def write_shards(examples: list[pairs.Example], out_dir: str, num_shards: int) -> list[str]:
  """Writes examples round-robin so shard sizes differ by at most one."""
  tf.io.gfile.makedirs(out_dir)
  paths = [os.path.join(out_dir, f"shard-{i:05d}-of-{num_shards:05d}.tfrecord")
           for i in range(num_shards)]
  writers = [tf.io.TFRecordWriter(p) for p in paths]
  for i, ex in enumerate(examples):
    proto = tf.train.Example(features=tf.train.Features(feature={
        "input_ids": _feature(ex.input_ids),
        "segment_ids": _feature(ex.segment_ids),
        "next_sentence_label": _feature([ex.next_sentence_label]),
    }))
    writers[i % num_shards].write(proto.SerializeToString())
  for w in writers:
    w.close()
  return paths


def run(config, workdir: str) -> dict:
  """Prepares the data for `config`; returns the stats (also written to stats.json)."""
  start = time.time()
  out_dir = data_dir(config, workdir)
  docs = corpus.documents(config.data.input, config.data.max_documents)
  tok = tokenizer.get_or_train(
      workdir, lambda: (s for d in docs for s in d), config.model.vocab_size,
      config.data.tokenizer_sentences, config.train.seed)
  if tok.pad_id != 0:
    raise ValueError(f"the tokenizer's [PAD] has id {tok.pad_id}; rows are padded with 0")
  sentences = [s for d in docs for s in d]
  flat = tok.encode_batch(sentences)
  tokenized, k = [], 0
  for d in docs:
    tokenized.append(flat[k:k + len(d)])
    k += len(d)
  examples = pairs.create_examples(
      tokenized, config.data.max_seq_length, config.data.short_seq_prob,
      config.data.dupe_factor, config.train.seed, tok.special)
  if len(examples) < config.data.num_shards:
    raise ValueError(f"only {len(examples)} examples for {config.data.num_shards} shards")
  write_shards(examples, out_dir, config.data.num_shards)

  num_tokens = sum(len(s) for s in flat)
  real = np.array([len(e.input_ids) for e in examples])
  stats = {
      "documents": len(docs),
      "sentences": len(sentences),
      "tokens": num_tokens,
      "unk_rate": sum(s.count(tok.unk_id) for s in flat) / max(num_tokens, 1),
      "examples": len(examples),
      "next_sentence_random_fraction":
          float(np.mean([e.next_sentence_label for e in examples])),
      "max_seq_length": config.data.max_seq_length,
      "padding_fraction": float(1 - real.sum() / (len(real) * config.data.max_seq_length)),
      "num_shards": config.data.num_shards,
      # Examples per shard: the input pipeline finds a resume position from them
      # without reading any data.
      "shard_sizes": [len(examples[i::config.data.num_shards])
                      for i in range(config.data.num_shards)],
      "vocab_size": tok.vocab_size,
      # What masking needs to know of the vocabulary the shards were tokenized with.
      "special_ids": dataclasses.asdict(tok.special),
      "seconds": round(time.time() - start, 1),
  }
  with tf.io.gfile.GFile(os.path.join(out_dir, STATS_FILE), "w") as f:
    json.dump(stats, f, indent=2)
  log.info("prepared %s: %s", out_dir, stats)
  return stats


def shard_files(directory: str) -> list[str]:
  return sorted(tf.io.gfile.glob(os.path.join(directory, "shard-*.tfrecord")))
