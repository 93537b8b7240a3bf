"""Exact cosine search: `top_k(index, queries, k)` on the devices, and `search`, the
query of `bert-jax search` against an index `embed` made.

The index goes to the devices a chunk at a time (its rows split over every device);
per chunk a matmul with the queries and `lax.top_k`, merged into a running top k. The
last chunk is padded to the chunk's shape with rows scored -inf, so one program serves
every chunk. Ties go to the lower index, as in one global `lax.top_k`.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from bert_jax.errors import InputError
from bert_jax.inference import encode as encode_lib, index as index_lib


def _normalise(x: jax.Array) -> jax.Array:
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@functools.lru_cache(maxsize=None)
def _merge_step(k: int):
  """The jitted (best scores, best ids, queries, chunk, chunk start, rows) -> new
  best: one chunk's top k merged into the running one."""
  rows, replicated = encode_lib.data_parallel()

  def step(best_scores, best_ids, queries, chunk, start, n):
    # HIGHEST: exact f32 scores (TPUs otherwise multiply f32 in bf16 passes).
    scores = jnp.dot(queries, _normalise(chunk).T, precision=jax.lax.Precision.HIGHEST)
    ids = start + jnp.arange(chunk.shape[0], dtype=jnp.int32)
    scores = jnp.where(ids < n, scores, -jnp.inf)  # the last chunk's padding rows
    scores, pos = jax.lax.top_k(scores, min(k, chunk.shape[0]))
    # The running best first: on a tie the lower (earlier) index wins.
    scores = jnp.concatenate([best_scores, scores], axis=1)
    ids = jnp.concatenate([best_ids, ids[pos]], axis=1)
    scores, pos = jax.lax.top_k(scores, k)
    return scores, jnp.take_along_axis(ids, pos, axis=1)

  return jax.jit(step, in_shardings=(replicated, replicated, replicated, rows, None, None),
                 out_shardings=(replicated, replicated))


def _put(x: np.ndarray, sharding) -> jax.Array:
  """A host array every process holds in full -> a global array (multi-host too)."""
  return jax.make_array_from_callback(x.shape, sharding, lambda i: x[i])


def top_k(index, queries, k: int, chunk_size: int = 65536) -> tuple[np.ndarray, np.ndarray]:
  """(scores [Q, k], indices [Q, k]) of the k rows of `index` [N, D] with the highest
  cosine similarity to each of `queries` [Q, D] (or [D]), best first; exact, float32.
  chunk_size: index rows on the devices at a time (rounded up to a multiple of the
  device count)."""
  index = np.asarray(index, np.float32)
  queries = np.atleast_2d(np.asarray(queries, np.float32))
  if index.ndim != 2 or queries.ndim != 2 or queries.shape[1] != index.shape[1]:
    raise InputError(f"an index [N, D] and queries [Q, D] are needed, got "
                     f"{index.shape} and {queries.shape}")
  n = len(index)
  if not 1 <= k <= n:
    raise InputError(f"k={k} must be in [1, {n}] (the index's rows)")
  rows, replicated = encode_lib.data_parallel()
  devices = rows.mesh.size
  chunk = -(-max(min(chunk_size, n), k) // devices) * devices
  step = _merge_step(k)
  q = _put(np.asarray(_normalise(queries)), replicated)
  scores = _put(np.full((len(queries), k), -np.inf, np.float32), replicated)
  ids = _put(np.full((len(queries), k), -1, np.int32), replicated)
  with jax.set_mesh(rows.mesh):
    for start in range(0, n, chunk):
      block = np.zeros((chunk, index.shape[1]), np.float32)
      block[:min(chunk, n - start)] = index[start:start + chunk]
      scores, ids = step(scores, ids, q, _put(block, rows), np.int32(start), np.int32(n))
  return np.asarray(scores), np.asarray(ids)


def search(workdir: str, index_path: str, texts_path: str, query: str,
           k: int = 10) -> list[tuple[int, float, str]]:
  """(rank, score, text) of the k texts nearest `query` in the index `embed` made of
  `texts_path`, the query embedded by --workdir's model with the index's pooling and
  max length. An index of another model or other texts is refused."""
  if not query.strip():
    raise InputError("--query is empty")
  if k < 1:
    raise InputError(f"-k {k} must be at least 1")
  emb, meta = index_lib.read(index_path)
  texts = index_lib.read_texts(texts_path, "--texts")
  index_lib.check_texts(meta, texts, texts_path, index_path)
  loaded, source = index_lib.load_model(workdir)
  index_lib.check_model(meta, source, index_path)
  q = encode_lib.encode(loaded.model, loaded.params, loaded.tokenizer, [query],
                        pooling=meta["pooling"], max_length=meta["max_length"])
  scores, ids = top_k(emb, q, min(k, len(texts)))
  return [(rank, float(s), texts[i])
          for rank, (s, i) in enumerate(zip(scores[0], ids[0]), start=1)]


def print_results(results: list[tuple[int, float, str]]) -> None:
  """`rank score text` lines on stdout."""
  for rank, score, text in results:
    print(f"{rank} {score:.4f} {text}")
