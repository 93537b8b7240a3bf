"""`bert-jax benchmark --what input`: how fast the pretraining input pipeline makes
masked batches from prepared shards on disk, next to transformers' MLM collator.

The pipeline measured is the one `pretrain` builds (same function, same config):
shards read per stream, parsed, masked, batched. Prints one JSON line with
seqs_per_sec, tokens_per_sec (every position, padding included) and the padding
fraction of the batches read. The peer, when transformers is installed, is
`DataCollatorForLanguageModeling` (numpy, the same examples already in memory, so
it pays no reading or parsing): its default path, as users run it.
"""

import json
import os
import time

import numpy as np

from bert_jax.data import input_pipeline
from bert_jax.pretrain import loop as pretrain


def _time(batches, seconds: float, warmup: int = 5):
  """(rows, seconds, padding fraction) of the batches produced in `seconds`."""
  for _ in range(warmup):
    next(batches)
  rows, real, positions, start = 0, 0, 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    batch = next(batches)
    mask = batch["attention_mask"]
    rows += mask.shape[0]
    real += int(mask.sum())
    positions += mask.size
  return rows, time.perf_counter() - start, 1 - real / positions


def _peer(files, config, seconds: float, workdir: str) -> dict | None:
  try:
    import transformers  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  seq_len, batch = config.data.max_seq_length, config.train.global_batch_size
  examples = [{"input_ids": np.pad(ids, (0, seq_len - len(ids)))}
              for ids in input_pipeline.read_input_ids(files[:2], 4 * batch)]
  vocab = os.path.join(workdir, "peer_vocab.txt")
  with open(vocab, "w") as f:  # BERT's special tokens at our ids, plain tokens after
    f.write("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [
        f"t{i}" for i in range(config.model.vocab_size - 5)]) + "\n")
  collator = transformers.DataCollatorForLanguageModeling(
      transformers.BertTokenizerFast(vocab), mlm_probability=config.data.mask_prob,
      return_tensors="np")

  def batches():
    i = 0
    while True:
      yield {"attention_mask": collator(examples[i:i + batch])["input_ids"] != 0}
      i = (i + batch) % (len(examples) - batch + 1)

  rows, took, _ = _time(batches(), seconds, warmup=2)
  return {"name": "transformers.DataCollatorForLanguageModeling (numpy, in memory)",
          "seqs_per_sec": round(rows / took, 1)}


def run(config, workdir: str, seconds: float = 10.0) -> dict:
  input_pipeline.keep_tensorflow_on_cpu()
  files, stats = pretrain.ensure_data(config, workdir)
  ds = pretrain.dataset(config, files, stats)
  rows, took, padding = _time(ds.as_numpy_iterator(), seconds)
  result = {
      "what": "input",
      "seqs_per_sec": round(rows / took, 1),
      "tokens_per_sec": round(rows * config.data.max_seq_length / took, 1),
      "padding_fraction": round(padding, 4),
      "global_batch": config.train.global_batch_size,
      "seq_len": config.data.max_seq_length,
      "num_streams": config.data.num_streams,
      "cpu_count": os.cpu_count(),
  }
  peer = _peer(files, config, seconds, workdir)
  if peer:
    result["peer"] = peer
    result["ratio_vs_peer"] = round(result["seqs_per_sec"] / peer["seqs_per_sec"], 2)
  print(json.dumps(result))
  return result
