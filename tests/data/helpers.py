"""Test helpers built from the data modules' own functions (the product keeps no
function only tests call)."""

from bert_jax.data import corpus, input_pipeline, masking, prepare


def documents(sources: str, max_documents: int = 0, **kwargs) -> list:
  """corpus.iter_documents as a list."""
  return list(corpus.iter_documents(sources, max_documents, **kwargs))


def untag(line: str) -> str:
  """'迈向/v  充满/v  希望/n' -> '迈向充满希望'."""
  return "".join(corpus.untag_words(line))


def process_shards(files, num_streams: int, process_index: int, process_count: int):
  """Every shard one process reads."""
  return [f for g in input_pipeline.process_streams(num_streams, process_index,
                                                    process_count)
          for f in input_pipeline.stream_shards(files, g, num_streams)]


def mask_tokens(input_ids, seed, *, word_start=None, **kwargs) -> dict:
  """masking.mask_batch for one example [S]: row 0 of a batch of one."""
  out = masking.mask_batch(input_ids[None], seed,
                           word_start=None if word_start is None else word_start[None],
                           **kwargs)
  return {k: v[0] for k, v in out.items()}


def write_shards(examples, out_dir: str, num_shards: int, whole_words: bool = False):
  """Examples round-robin into `num_shards` shards, in order; the shard paths."""
  paths = prepare.shard_paths(out_dir, num_shards)
  prepare.write_records((prepare.serialize(e, whole_words) for e in examples), paths)
  return paths
