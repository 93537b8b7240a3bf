"""What the three fine-tuning tasks share on the host: [CLS]/[SEP] packing, padding
to fixed-shape arrays, label lookup with located errors, and batching.

A task turns its examples into `features`: a dict of numpy arrays with one row per
model input (`input_ids`, `token_type_ids`, `attention_mask` [N, S] and the task's
targets). Every batch is padded to the full batch size with rows of `weight` 0, so
one compiled step serves every batch and no example is dropped.
"""

from typing import Iterator, Sequence

import numpy as np

from bert_jax.errors import InputError


def join_segments(tok, first: list[int], second: list[int] | None, max_len: int):
  """[CLS] first [SEP] (second [SEP]) in at most max_len ids, cutting the longer
  segment first (BERT's rule). Returns (ids, token_type_ids, was_truncated)."""
  room = max_len - (3 if second is not None else 2)
  if room < 1:
    raise InputError(f"max_seq_length={max_len} leaves no room for text")
  a, b = list(first), list(second or [])
  truncated = len(a) + len(b) > room
  while len(a) + len(b) > room:
    (a if len(a) >= len(b) else b).pop()
  ids = [tok.cls_id, *a, tok.sep_id]
  types = [0] * len(ids)
  if second is not None:
    ids += [*b, tok.sep_id]
    types += [1] * (len(b) + 1)
  return ids, types, truncated


def to_arrays(rows: Sequence[dict], max_len: int, pad_id: int) -> dict[str, np.ndarray]:
  """Rows of per-example lists/scalars -> [N, ...] int32 arrays; lists are padded to
  max_len (`input_ids` with pad_id, targets with -1 = ignored, the rest with 0), and
  `attention_mask` is derived from the unpadded `input_ids` length."""
  out = {}
  for key in rows[0]:
    values = [r[key] for r in rows]
    if isinstance(values[0], (list, tuple)):
      fill = pad_id if key == "input_ids" else (-1 if key.endswith("labels") else 0)
      arr = np.full((len(rows), max_len), fill, np.int32)
      for i, v in enumerate(values):
        arr[i, :len(v)] = v
      out[key] = arr
    else:
      out[key] = np.asarray(values, np.int32)
  out["attention_mask"] = np.zeros((len(rows), max_len), np.int32)
  for i, r in enumerate(rows):
    out["attention_mask"][i, :len(r["input_ids"])] = 1
  return out


def label_id(labels: Sequence[str], label: str, where: str) -> int:
  """Index of `label`; an InputError at `where` (file:line) for one training never saw."""
  try:
    return labels.index(label)
  except ValueError:
    raise InputError(f"{where}: label {label!r} does not occur in the training file "
                     f"(labels: {', '.join(labels)})") from None


def require_examples(examples: list, path: str) -> list:
  if not examples:
    raise InputError(f"{path} holds no examples")
  return examples


def num_rows(features: dict) -> int:
  return len(features["input_ids"])


def batches(features: dict, batch_size: int, seed: int | None = None,
            process_index: int = 0, process_count: int = 1) -> Iterator[dict]:
  """Global batches of `batch_size` rows (this process's contiguous part of each),
  shuffled with `seed` when given, the last one padded with `weight` 0 rows.

  Every process holds all features (fine-tuning sets are small), so the batches do
  not depend on the process count.
  """
  n = num_rows(features)
  order = np.arange(n) if seed is None else np.random.default_rng(seed).permutation(n)
  local = batch_size // process_count
  for start in range(0, n, batch_size):
    rows = order[start:start + batch_size]
    weight = np.zeros(batch_size, np.float32)
    weight[:len(rows)] = 1.0
    rows = np.concatenate([rows, np.zeros(batch_size - len(rows), rows.dtype)])
    mine = slice(process_index * local, (process_index + 1) * local)
    batch = {k: v[rows[mine]] for k, v in features.items()}
    batch["weight"] = weight[mine]
    yield batch
