"""Contrastive fine-tuning for similarity and search: the encoder becomes a sentence
embedder (`task_model.BertEmbedder`), trained with in-batch negatives.

Files are classification's formats (CSV/TSV/JSONL) with `text` and `text_pair`, the
text's positive (a query and its document, a headline and its body), and an optional
`negative`: a hard negative, a text that looks like the positive but is not (DPR,
Karpukhin et al. 2020, takes BM25's best wrong passage). A training row without
`text_pair` is its own positive under another dropout mask: unsupervised SimCSE (Gao
et al. 2021), which needs the config's `dropout` > 0. The loss is InfoNCE: row i's text
must pick its own positive among every positive and hard negative of the batch,
softmax(cos / temperature). Evaluation ranks each eval text's positive among all
the eval file's positives: recall@1, recall@10 and mean reciprocal rank.
"""

import functools

import jax.numpy as jnp
import numpy as np
import optax

from bert_jax.errors import InputError
from bert_jax.finetune import features
from bert_jax.finetune.tasks import classification
from bert_jax.model import task_model

PER_TOKEN = False
BEST_METRIC = "mrr"
RECALL_AT = (1, 10)


def read(path: str, labelled: bool = True) -> list[classification.Example]:
  """Examples of a file: `text` and an optional `text_pair` (labels are ignored)."""
  del labelled  # a text's positive is its label; unsupervised rows have none
  return classification.read(path, labelled=False)


def check_eval(examples: list[classification.Example]) -> None:
  """Evaluation ranks positives: every eval row needs one."""
  missing = next((e for e in examples if e.text_pair is None), None)
  if missing is not None:
    raise InputError(f"{missing.where}: an eval row needs a text_pair (the positive "
                     "to retrieve)")


def label_list(examples: list[classification.Example]) -> list[str]:
  del examples
  return []


def num_outputs(labels: list[str]) -> int:
  del labels
  return 0


def make_model(cfg, labels, config) -> task_model.BertEmbedder:
  """The encoder (its dropout already the config's: SimCSE's noise) and its pooling."""
  del labels
  return task_model.BertEmbedder(cfg, pooling=config.similarity.pooling)


def make_loss(config):
  return functools.partial(loss, temperature=config.similarity.temperature)


def featurize(examples: list[classification.Example], tok, labels, data_config):
  """(arrays, meta, counts): [N, 2, S] model inputs, a text and its positive (the
  text again where there is no pair); [N, 3, S] with the hard negatives when any row
  has one, `negative_weight` 0 where a row has none."""
  del labels
  texts = tok.encode_batch([e.text for e in examples])
  pairs = tok.encode_batch([e.text_pair or e.text for e in examples])
  encoded_sides = [texts, pairs]
  # An empty negative (a CSV's blank cell) is none: the text's own would stand in.
  has_negative = [bool(e.negative) for e in examples]
  if any(has_negative):
    encoded_sides.append(tok.encode_batch([e.negative or e.text for e in examples]))
  sides, truncated = [], 0
  for encoded in encoded_sides:
    rows = []
    for ids in encoded:
      ids, types, cut = features.join_segments(tok, ids, None, data_config.max_seq_length)
      truncated += cut
      rows.append({"input_ids": ids, "token_type_ids": types})
    sides.append(features.to_arrays(rows, data_config.max_seq_length, tok.pad_id))
  arrays = {k: np.stack([side[k] for side in sides], axis=1) for k in sides[0]}
  if len(sides) == 3:
    arrays["negative_weight"] = np.array(has_negative, np.float32)
  return arrays, None, {"truncated_texts": truncated}


def loss(embeddings, batch, temperature: float):
  """InfoNCE with in-batch negatives over rows of weight > 0: `embeddings` [B, 2, H]
  (unit rows) or [B, 3, H] with hard negatives; row i's positive is column i of
  cos(texts, candidates) / temperature, the candidates being every positive and then
  every hard negative. Padding rows are neither queries nor candidates."""
  weights = batch["weight"]
  candidates, valid = embeddings[:, 1], weights > 0
  if embeddings.shape[1] == 3:
    candidates = jnp.concatenate([candidates, embeddings[:, 2]])
    valid = jnp.concatenate([valid, valid & (batch["negative_weight"] > 0)])
  logits = embeddings[:, 0] @ candidates.T / temperature
  logits = jnp.where(valid[None, :], logits, -1e9)
  labels = jnp.arange(logits.shape[0])
  xent = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  total = jnp.maximum(weights.sum(), 1.0)
  value = (xent * weights).sum() / total
  correct = (logits.argmax(-1) == labels) * weights
  return value, {"loss": value, "accuracy": correct.sum() / total}


def ranks(scores: np.ndarray) -> np.ndarray:
  """1-based rank of candidate i for query i from scores [queries, candidates];
  ties count against it (rank = candidates scoring at least as high, itself
  included)."""
  scores = np.asarray(scores)
  own = np.diag(scores)[:, None]
  return (scores >= own).sum(1)


def retrieval_metrics(ranked: np.ndarray) -> dict:
  out = {f"recall_at_{k}": float(np.mean(ranked <= k)) for k in RECALL_AT}
  out["mrr"] = float(np.mean(1.0 / ranked))
  out["examples"] = len(ranked)
  return out


def evaluate(examples, meta, embeddings, labels, data_config) -> dict:
  del examples, meta, labels, data_config
  embeddings = np.asarray(embeddings, np.float32)
  return retrieval_metrics(ranks(embeddings[:, 0] @ embeddings[:, 1].T))


def predictions(examples, meta, embeddings, labels, data_config) -> list[dict]:
  """Each text's embedding, and its cosine with its pair where there is one."""
  del meta, labels, data_config
  embeddings = np.asarray(embeddings, np.float32)
  out = []
  for e, (a, b) in zip(examples, embeddings[:, :2]):  # a hard negative is not output
    row = {"text": e.text, "embedding": [round(float(x), 6) for x in a]}
    if e.text_pair is not None:
      row["text_pair"] = e.text_pair
      row["cosine"] = round(float(a @ b), 6)
    out.append(row)
  return out
