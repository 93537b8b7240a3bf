import jax
import numpy as np
import pytest

from bert_jax.data import input_pipeline
from bert_jax.data import pairs
from bert_jax.data import prepare
from bert_jax.runtime import sharding
from bert_jax.data import tokenizer
from bert_jax.errors import InputError
from tests.data import helpers

SEQ, PRED, VOCAB, STREAMS = 32, 5, 500, 4


def test_process_shards_are_disjoint_and_cover():
  files = [f"shard-{i}" for i in range(8)]
  parts = [helpers.process_shards(files, STREAMS, p, 2) for p in range(2)]
  assert not set(parts[0]) & set(parts[1])
  assert sorted(parts[0] + parts[1]) == files
  assert list(input_pipeline.process_streams(8, 1, 4)) == [2, 3]
  with pytest.raises(InputError, match="cannot feed"):
    input_pipeline.stream_shards(files[:3], 0, STREAMS)
  with pytest.raises(InputError, match="not a multiple of 3 processes"):
    input_pipeline.process_streams(STREAMS, 0, 3)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
  """Examples whose token after [CLS] is a unique id (>= 5), split into 4 shards."""
  examples = []
  for i in range(200):
    a = [tokenizer.NUM_SPECIAL + i] + [7] * (i % 9)
    b = [8] * (3 + i % 5)
    examples.append(pairs.pair_example(
        a, b, i % 2, tokenizer.SENTENCEPIECE_IDS))
  out = tmp_path_factory.mktemp("shards")
  return helpers.write_shards(examples, str(out), 4)


def _unmasked_ids(batch):
  ids = batch["input_ids"].copy()
  rows, cols = np.nonzero(batch["masked_weights"])
  ids[rows, batch["masked_positions"][rows, cols]] = batch["masked_ids"][rows, cols]
  return ids


def _batches(files, process_index=0, process_count=1, num=10, first_batch=0, sizes=None):
  ds = input_pipeline.make_dataset(
      files, global_batch=8, num_streams=STREAMS, seq_len=SEQ, vocab_size=VOCAB,
      mask_prob=0.15, max_predictions=PRED, seed=0, process_index=process_index,
      process_count=process_count, shuffle_buffer=16, first_batch=first_batch,
      sizes=sizes)
  return list(ds.take(num).as_numpy_iterator())


def test_batch_layout(shards):
  for batch in _batches(shards, num=3):
    assert batch["input_ids"].shape == (8, SEQ)
    assert batch["masked_positions"].shape == (8, PRED)
    assert batch["next_sentence_label"].shape == (8, 1)  # one example per row
    np.testing.assert_array_equal(batch["attention_mask"], batch["input_ids"] != 0)
    assert (batch["input_ids"][:, 0] == tokenizer.CLS_ID).all()


def test_two_processes_read_disjoint_examples(shards):
  seen = [{int(x) for b in _batches(shards, p, 2) for x in _unmasked_ids(b)[:, 1]}
          for p in range(2)]
  assert seen[0] and seen[1] and not seen[0] & seen[1]


@pytest.mark.parametrize("process_count", [2, 4])
def test_global_batches_do_not_depend_on_process_count(shards, process_count):
  # Process p's rows are block p of the global batch, masks included.
  whole = _batches(shards)
  parts = [_batches(shards, p, process_count) for p in range(process_count)]
  for step, batch in enumerate(whole):
    for key, value in batch.items():
      np.testing.assert_array_equal(
          value, np.concatenate([part[step][key] for part in parts]), key)


def test_resume_yields_the_uninterrupted_batches(shards):
  # 50 examples per stream, 2 rows per batch: an epoch is 25 batches. Resume points
  # mid-epoch, mid-block (blocks of 16) and on epoch boundaries, and sizes given or
  # counted, all continue exactly as the uninterrupted run.
  whole = _batches(shards, num=60)
  sizes = input_pipeline.shard_sizes(shards)
  assert sizes == [50] * 4
  for first in (1, 13, 25, 37):
    resumed = _batches(shards, num=60 - first, first_batch=first,
                       sizes=sizes if first % 2 else None)
    for step, batch in enumerate(resumed, start=first):
      for key, value in batch.items():
        np.testing.assert_array_equal(value, whole[step][key], f"{first} {step} {key}")


def test_every_epoch_is_a_new_permutation(shards):
  # Row 0 and 1 of each batch come from stream 0 (shard 0: examples 0, 4, ..., 196).
  ids = [int(x) - tokenizer.NUM_SPECIAL
         for b in _batches(shards, num=50) for x in _unmasked_ids(b)[:2, 1]]
  epoch1, epoch2 = ids[:50], ids[50:]
  assert sorted(epoch1) == sorted(epoch2) == list(range(0, 200, 4))
  assert epoch1 != epoch2 and epoch1 != sorted(epoch1)


def test_batches_become_global_arrays(shards):
  mesh = sharding.make_mesh((2, 2, 2))
  batch = _batches(shards, num=1)[0]
  spec = sharding.batch_sharding(mesh, (("batch", ("data", "fsdp")),))
  arrays = sharding.to_global(batch, spec)
  assert arrays["input_ids"].shape == (8, SEQ)
  assert arrays["input_ids"].sharding.spec[0] == ("data", "fsdp")
  # Split over 4 data-parallel shards, replicated over tensor.
  assert {s.data.shape for s in arrays["input_ids"].addressable_shards} == {(2, SEQ)}
  np.testing.assert_array_equal(jax.device_get(arrays["input_ids"]), batch["input_ids"])


def test_whole_word_shards_mask_whole_words(tmp_path):
  # Every word is 3 pieces: A at positions 1-9, B at 11-19.
  mark = lambda ids: [t if i % 3 == 0 else ~t for i, t in enumerate(ids)]
  examples = [pairs.pair_example(mark(list(range(10, 19))), mark(list(range(20, 29))), 0,
                          tokenizer.SENTENCEPIECE_IDS) for _ in range(64)]
  files = helpers.write_shards(examples, str(tmp_path), 4, whole_words=True)
  for batch in _batches(files, num=4):
    for row in range(8):
      chosen = batch["masked_positions"][row][batch["masked_weights"][row] > 0]
      words = {(p - 1) // 3 if p < 10 else (p - 11) // 3 + 3 for p in chosen}
      assert len(chosen) == 3 * len(words) > 0, chosen


def test_static_masks_are_the_same_every_epoch(tmp_path, tiny_config):
  config = tiny_config.copy_and_resolve_references()
  config.unlock()
  config.data.update(max_documents=60, eval_documents=0, num_shards=4, num_streams=4,
                     masking="static", max_examples_per_row=1, dupe_factor=1)
  stats = prepare.run(config, str(tmp_path))
  assert stats["masking"] == "static"
  files = prepare.shard_files(str(tmp_path / "data"))
  per_epoch = sum(stats["shard_sizes"]) // 8
  ds = input_pipeline.make_dataset(
      files, global_batch=8, num_streams=4, seq_len=128, vocab_size=stats["vocab_size"],
      mask_prob=0.15, max_predictions=20, seed=0, sizes=stats["shard_sizes"],
      static_masks=True)
  batches = list(ds.take(2 * per_epoch + 2).as_numpy_iterator())
  seen = {}
  for b in batches:
    assert b["masked_weights"].sum() > 0
    for i in range(8):
      key = (tuple(_unmasked_ids(b)[i]), b["next_sentence_label"][i, 0])
      masked = (tuple(b["input_ids"][i]), tuple(b["masked_positions"][i]))
      # An example read again (next epoch) has exactly the masks it had.
      assert seen.setdefault(key, masked) == masked
  assert len(seen) < 8 * len(batches)  # examples did come round again


def test_prefetch_to_device_keeps_order_and_places_batches():
  mesh = sharding.make_mesh((-1, 1, 1))
  batch_sh = sharding.batch_sharding(mesh, (("batch", ("data", "fsdp")),))
  host = [{"x": np.full((8, 2), i, np.int32)} for i in range(5)]
  got = list(input_pipeline.prefetch_to_device(iter(host), batch_sh, size=2))
  assert [int(b["x"][0, 0]) for b in got] == [0, 1, 2, 3, 4]
  assert all(b["x"].sharding == batch_sh for b in got)


def test_a_corrupt_shard_is_one_input_error(tmp_path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  path = tmp_path / "shard-00000-of-00001.tfrecord"
  with tf.io.TFRecordWriter(str(path)) as w:
    for i in range(4):
      w.write(b"record %d" % i)
  data = path.read_bytes()
  path.write_bytes(data[:20] + b"\xff" * 8 + data[28:])  # a record's length CRC broken
  ds = tf.data.TFRecordDataset(str(path)).batch(2)
  with pytest.raises(InputError, match=f"cannot read the prepared data in {tmp_path}"):
    list(input_pipeline.numpy_batches(ds, str(tmp_path)))
