"""Embedding indexes on disk: `bert-jax embed` writes INDEX.npy (float32 [N, hidden],
L2-normalised rows) and beside it INDEX.npy.json saying what built it: the model
(absolute workdir, checkpoint step, a fingerprint of its params), pooling, max length,
count, dimension and a hash of the texts. `search` reads both and refuses an index
whose model or texts are not the ones it is given."""

import hashlib
import json
import logging
import os

from etils import epath
import jax
import numpy as np

from bert_jax.errors import InputError
from bert_jax.inference import encode as encode_lib
from bert_jax.interop import pretrained
from bert_jax.runtime import checkpoints, outputs

log = logging.getLogger(__name__)


# What the metadata holds (see `embed`).
_FIELDS = ("model", "pooling", "max_length", "count", "dim", "texts")


def metadata_path(index_path: str) -> str:
  return index_path + ".json"


def read_texts(path: str, what: str = "--input") -> list[str]:
  """One text a line; blank lines are skipped (by `embed` and `search` alike, so the
  index's rows stay the file's non-blank lines in order)."""
  if not epath.Path(path).is_file():
    raise InputError(f"{what} {path} does not exist or is not a file")
  try:
    lines = epath.Path(path).read_text(encoding="utf-8").splitlines()
  except UnicodeDecodeError as e:
    raise InputError(f"{what} {path} is not UTF-8 text ({e.reason} at byte "
                     f"{e.start})") from None
  texts = [line.strip() for line in lines if line.strip()]
  if not texts:
    raise InputError(f"{what} {path} holds no text (one text a line)")
  return texts


def texts_hash(texts: list[str]) -> str:
  return hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]


def fingerprint(params) -> str:
  """A hash of every parameter's name, shape, dtype and bytes: equal for the same
  weights however they were loaded, different for another model or another step."""
  h = hashlib.sha256()
  for path, x in jax.tree_util.tree_leaves_with_path(params):
    x = np.asarray(jax.device_get(x))
    h.update(f"{jax.tree_util.keystr(path)}{x.shape}{x.dtype}".encode())
    h.update(np.ascontiguousarray(x).tobytes())
  return h.hexdigest()[:16]


def load_model(workdir: str):
  """(Pretrained, its model's description for the metadata) of --workdir: the latest
  checkpoint of a workdir, or an HF / TF1 directory (step None)."""
  step = checkpoints.latest_step(workdir) if epath.Path(workdir).is_dir() else None
  loaded = pretrained.load(workdir, f"--workdir {workdir}", step)
  source = {"workdir": os.path.abspath(workdir), "step": step,
            "fingerprint": fingerprint(loaded.params)}
  return loaded, source


def embed(workdir: str, input_path: str, output_path: str, pooling: str = "cls",
          max_length: int = 128, batch_size: int = 64) -> dict:
  """Embeds `input_path` (one text a line) with --workdir's encoder into
  `output_path` and its metadata beside it; returns the metadata."""
  encode_lib.check_pooling(pooling)
  outputs.check_file(output_path, "--output")
  outputs.check_file(metadata_path(output_path), "--output's metadata")
  texts = read_texts(input_path)
  loaded, source = load_model(workdir)
  emb = encode_lib.encode(loaded.model, loaded.params, loaded.tokenizer, texts,
                          pooling=pooling, max_length=max_length, batch_size=batch_size)
  meta = {"model": source, "pooling": pooling, "max_length": max_length,
          "count": int(emb.shape[0]), "dim": int(emb.shape[1]),
          "texts": {"path": os.path.abspath(input_path), "sha256": texts_hash(texts)}}
  if jax.process_index() == 0:
    write(output_path, emb, meta)
  log.info("%d embeddings of dim %d (%s pooling) -> %s", *emb.shape, pooling, output_path)
  return meta


def write(index_path: str, emb: np.ndarray, meta: dict) -> None:
  """INDEX.npy and INDEX.npy.json (what `read` reads back)."""
  with epath.Path(index_path).open("wb") as f:
    np.save(f, emb)  # through a file object: np.save would add ".npy" to a name
  epath.Path(metadata_path(index_path)).write_text(json.dumps(meta, indent=2) + "\n")


def read(index_path: str) -> tuple[np.ndarray, dict]:
  """(embeddings, metadata) of an index `embed` wrote."""
  meta_path = metadata_path(index_path)
  if not epath.Path(index_path).is_file():
    raise InputError(f"--index {index_path} does not exist")
  if not epath.Path(meta_path).is_file():
    raise InputError(f"--index {index_path} has no {os.path.basename(meta_path)} beside "
                     f"it: make the index with `bert-jax embed`")
  try:
    meta = json.loads(epath.Path(meta_path).read_text())
    with epath.Path(index_path).open("rb") as f:
      emb = np.load(f)
  except ValueError as e:  # not JSON (JSONDecodeError is a ValueError), not .npy
    raise InputError(f"--index {index_path} or its metadata is not what `bert-jax "
                     f"embed` writes ({e})") from None
  missing = [k for k in _FIELDS if k not in meta]
  if missing:
    raise InputError(f"{meta_path} lacks {missing}: not what `bert-jax embed` writes")
  if emb.shape != (meta["count"], meta["dim"]):
    raise InputError(f"--index {index_path} holds an array of shape {emb.shape}; its "
                     f"metadata says {meta['count']} rows of {meta['dim']}")
  return emb, meta


def check_texts(meta: dict, texts: list[str], texts_path: str, index_path: str) -> None:
  """The texts are the ones the index was built from: same count, same content."""
  if len(texts) != meta["count"]:
    raise InputError(f"--texts {texts_path} has {len(texts)} texts, --index {index_path} "
                     f"{meta['count']} rows: give the file the index was made from "
                     f"({meta['texts']['path']})")
  if texts_hash(texts) != meta["texts"]["sha256"]:
    raise InputError(f"--texts {texts_path} is not the text the index was made from "
                     f"({meta['texts']['path']}): same count, other lines")


def check_model(meta: dict, source: dict, index_path: str) -> None:
  """The model at hand is the one that built the index (by params fingerprint)."""
  built = meta["model"]
  if source["fingerprint"] != built["fingerprint"]:
    raise InputError(
        f"--index {index_path} was made by another model ({built['workdir']} step "
        f"{built['step']}, fingerprint {built['fingerprint']}), not {source['workdir']} "
        f"step {source['step']} (fingerprint {source['fingerprint']}): embed the texts "
        f"again with this model")
