import jax
import numpy as np
import pytest

from bert_jax import input_pipeline, pairs, prepare, sharding, tokenizer
from bert_jax.errors import InputError

SEQ, PRED, VOCAB = 32, 5, 500


def test_process_shards_are_disjoint_and_cover():
  files = [f"shard-{i}" for i in range(7)]
  parts = [input_pipeline.process_shards(files, p, 2) for p in range(2)]
  assert not set(parts[0]) & set(parts[1])
  assert sorted(parts[0] + parts[1]) == files
  with pytest.raises(InputError, match="cannot feed"):
    input_pipeline.process_shards(files[:1], 0, 2)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
  """Examples whose token after [CLS] is a unique id (>= 5), split into 4 shards."""
  examples = []
  for i in range(200):
    a = [tokenizer.NUM_SPECIAL + i] + [7] * (i % 9)
    b = [8] * (3 + i % 5)
    examples.append(pairs._pack(a, b, i % 2))  # pylint: disable=protected-access
  out = tmp_path_factory.mktemp("shards")
  return prepare.write_shards(examples, str(out), 4)


def _unmasked_ids(batch):
  ids = batch["input_ids"].copy()
  rows, cols = np.nonzero(batch["masked_weights"])
  ids[rows, batch["masked_positions"][rows, cols]] = batch["masked_ids"][rows, cols]
  return ids


def _example_ids(files, process_index, process_count, batches=10):
  ds = input_pipeline.make_dataset(
      input_pipeline.process_shards(files, process_index, process_count),
      local_batch=8, seq_len=SEQ, vocab_size=VOCAB, mask_prob=0.15,
      max_predictions=PRED, seed=0, process_index=process_index,
      process_count=process_count, shuffle_buffer=16)
  seen = set()
  for batch in ds.take(batches).as_numpy_iterator():
    assert batch["input_ids"].shape == (8, SEQ)
    assert batch["masked_positions"].shape == (8, PRED)
    assert batch["next_sentence_label"].shape == (8,)
    np.testing.assert_array_equal(batch["attention_mask"], batch["input_ids"] != 0)
    seen.update(int(x) for x in _unmasked_ids(batch)[:, 1])
  return seen


def test_two_processes_read_disjoint_examples(shards):
  seen0 = _example_ids(shards, 0, 2)
  seen1 = _example_ids(shards, 1, 2)
  assert seen0 and seen1 and not seen0 & seen1


def test_batches_become_global_arrays(shards):
  mesh = sharding.make_mesh((2, 2, 2))
  ds = input_pipeline.make_dataset(shards, local_batch=8, seq_len=SEQ, vocab_size=VOCAB,
                                   mask_prob=0.15, max_predictions=PRED, seed=0)
  batch = next(ds.as_numpy_iterator())
  spec = sharding.batch_sharding(mesh, (("batch", ("data", "fsdp")),))
  arrays = sharding.to_global(batch, spec)
  assert arrays["input_ids"].shape == (8, SEQ)
  assert arrays["input_ids"].sharding.spec[0] == ("data", "fsdp")
  # Split over 4 data-parallel shards, replicated over tensor.
  assert {s.data.shape for s in arrays["input_ids"].addressable_shards} == {(2, SEQ)}
  np.testing.assert_array_equal(jax.device_get(arrays["input_ids"]), batch["input_ids"])
