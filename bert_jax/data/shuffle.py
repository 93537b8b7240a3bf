"""Records -> shards in a uniformly random order, written by any number of processes
in bounded memory, byte for byte the same whatever the process count.

Every record carries a random 8-byte key drawn from its chunk's seed, so the key does
not depend on which process made the record. The shards hold all records sorted by
key (ties by their bytes), which is a uniform shuffle, cut into num_shards runs of
consecutive records whose sizes differ by at most one. The sort is external:
  1. scatter: each process appends its records, key first, to bucket files chosen by
     the key's first byte: tmp-bucket-BBB-PPPPP (bucket, process; each record after
     its 4-byte length);
  2. each process writes its own block of consecutive shards: it reads the buckets
     that hold their records (every process's piece of each), sorts each in memory
     and deals the records out by position. A bucket over SORT_BYTES is split by its
     keys' next byte first, so memory never holds more than about SORT_BYTES however
     large the corpus.
"""

import bisect
import collections
import os
import random

import tensorflow as tf

KEY_BYTES = 8
NUM_BUCKETS = 256  # one per value of a key byte
# Most bytes of records a bucket may hold to be sorted in memory (Python keeps each
# as a bytes object: ~1.2x this in RSS).
SORT_BYTES = 256 << 20


def keys(seed: int, chunk: int, n: int) -> list[bytes]:
  """The sort keys of chunk `chunk`'s n records."""
  blob = random.Random(f"shuffle/{seed}/{chunk}").randbytes(KEY_BYTES * n)
  return [blob[i:i + KEY_BYTES] for i in range(0, len(blob), KEY_BYTES)]


def bucket_path(out_dir: str, bucket: int, process: int) -> str:
  return os.path.join(out_dir, f"tmp-bucket-{bucket:03d}-{process:05d}")


def _framed(records) -> bytes:
  """Records as the temporary files hold them: each after its 4-byte length."""
  return b"".join(len(r).to_bytes(4, "little") + r for r in records)


def _read(paths: list[str], block: int = 16 << 20):
  """The records of temporary files, read a block at a time."""
  for path in paths:
    with tf.io.gfile.GFile(path, "rb") as f:
      data, pos = b"", 0
      while chunk := f.read(block):
        data, pos = data[pos:] + chunk, 0
        while pos + 4 <= len(data):
          end = pos + 4 + int.from_bytes(data[pos:pos + 4], "little")
          if end > len(data):
            break
          yield data[pos + 4:end]
          pos = end


class Scatter:
  """Step 1 for one process: `add` keyed records, `close` for the records and bytes
  that went to each bucket."""

  def __init__(self, out_dir: str, process: int):
    self.out_dir, self.process = out_dir, process
    self.files = {}
    self.records = [0] * NUM_BUCKETS
    self.bytes = [0] * NUM_BUCKETS

  def add(self, keyed: list[bytes]) -> None:
    by_bucket = collections.defaultdict(list)
    for record in keyed:
      by_bucket[record[0]].append(record)
    for b, records in by_bucket.items():
      if b not in self.files:
        self.files[b] = tf.io.gfile.GFile(bucket_path(self.out_dir, b, self.process), "wb")
      self.files[b].write(_framed(records))
      self.records[b] += len(records)
      self.bytes[b] += sum(map(len, records))

  def close(self) -> tuple[list[int], list[int]]:
    for f in self.files.values():
      f.close()
    return self.records, self.bytes


def _in_key_order(paths: list[str], size: int, split_prefix: str, depth: int = 1):
  """The records of `paths` (keyed, all with the same first `depth` key bytes) in key
  order, without their keys."""
  if size <= SORT_BYTES or depth == KEY_BYTES:
    for record in sorted(_read(paths)):
      yield record[KEY_BYTES:]
    return
  parts, sizes = {}, collections.Counter()  # by the next key byte
  for record in _read(paths):
    b = record[depth]
    if b not in parts:
      path = f"{split_prefix}-{b:03d}"
      parts[b] = path, tf.io.gfile.GFile(path, "wb")
    parts[b][1].write(_framed([record]))
    sizes[b] += len(record)
  for b, (path, f) in sorted(parts.items()):
    f.close()
    yield from _in_key_order([path], sizes[b], path, depth + 1)
    tf.io.gfile.remove(path)


def shard_bounds(total: int, num_shards: int) -> list[int]:
  """Position of each shard's first record in the key order, and the total."""
  return [s * total // num_shards for s in range(num_shards + 1)]


def own_shards(num_shards: int, process: int, process_count: int) -> range:
  """The consecutive shards one process writes."""
  return range(process * num_shards // process_count,
               (process + 1) * num_shards // process_count)


def write_shards(out_dir: str, paths: list[str], shards: range, bounds: list[int],
                 records: list[list[int]], sizes: list[list[int]], process: int) -> None:
  """Step 2: writes paths[s] for s in `shards`, given the records and bytes each
  process scattered to each bucket (records[p][b], sizes[p][b]). A bucket that only
  this process reads is removed once read; the others are left for the caller to
  remove when all processes are done."""
  if not shards:
    return
  lo, hi = bounds[shards.start], bounds[shards.stop]
  start, shard, writer = 0, None, None
  for b in range(NUM_BUCKETS):
    end = start + sum(r[b] for r in records)
    if start < hi and end > lo:
      pieces = [bucket_path(out_dir, b, p) for p, r in enumerate(records) if r[b]]
      prefix = os.path.join(out_dir, f"tmp-split-{b:03d}-{process:05d}")
      size = sum(s[b] for s in sizes)
      for position, record in enumerate(_in_key_order(pieces, size, prefix), start):
        if not lo <= position < hi:
          continue
        if shard is None or position >= bounds[shard + 1]:
          if writer:
            writer.close()
          shard = bisect.bisect_right(bounds, position) - 1
          writer = tf.io.TFRecordWriter(paths[shard])
        writer.write(record)
      if lo <= start and end <= hi:
        for p in pieces:
          tf.io.gfile.remove(p)
    start = end
  writer.close()
