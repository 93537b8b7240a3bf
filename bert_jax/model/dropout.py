"""Dropout whose keep mask is a counter-based hash, computed where it is used.

`nn.Dropout` draws its mask with jax.random (threefry, lowered to a rolled loop on
CPU), which makes several passes over a mask-sized array for every dropout. Here the
mask bit of an element is a hash of its example (its row of the global batch), its
index inside the example and two random words drawn per call: a handful of integer
ops that XLA fuses into the consumer of the mask, forward and backward. Like
nn.Dropout it is inverted (kept values are scaled by 1 / (1 - rate)) and takes its
randomness from the "dropout" rng stream.

An example's mask depends on its global row alone, not on the array it sits in: not
on how the batch is sharded, nor on how gradient accumulation splits it into
microbatches (runtime/step.py traces each microbatch inside `global_rows`), so the
accumulated update equals the unaccumulated one.
"""

import contextlib
import contextvars
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

# Global batch rows of the arrays being traced ([B] uint32), or None: rows 0..B-1.
# A trace-time setting, like nn.logical_axis_rules: the step sets it around the
# loss of a microbatch, so no model signature has to carry it.
_ROWS = contextvars.ContextVar("bert_jax_dropout_rows", default=None)


@contextlib.contextmanager
def global_rows(rows: jax.Array):
  """Dropout traced inside draws the masks of these global batch rows."""
  token = _ROWS.set(rows)
  try:
    yield
  finally:
    _ROWS.reset(token)


def _mix(h):
  """murmur3's 32-bit finaliser: every input bit flips each output bit with p ~ 1/2."""
  h ^= h >> 16
  h *= jnp.uint32(0x85EBCA6B)
  h ^= h >> 13
  h *= jnp.uint32(0xC2B2AE35)
  return h ^ (h >> 16)


def keep_mask(key, shape, rate: float, rows: jax.Array | None = None) -> jax.Array:
  """Boolean mask of an array [B, ...], True with probability 1 - rate (to 2^-32),
  from a PRNG key; `rows` [B]: each example's row in the global batch (default
  0..B-1)."""
  seed = jax.random.bits(key, (2,), jnp.uint32)
  if rows is None:
    rows = jax.lax.iota(jnp.uint32, shape[0])
  per_example = math.prod(shape[1:])
  # The row is mixed on its own, so rows x per_example never has to fit in 32 bits.
  row_bits = _mix(rows.astype(jnp.uint32) * jnp.uint32(0x9E3779B9) + seed[1])
  index = jax.lax.iota(jnp.uint32, per_example).reshape(1, *shape[1:])
  row_bits = row_bits.reshape(-1, *(1,) * (len(shape) - 1))
  bits = _mix(_mix(index * jnp.uint32(0x9E3779B9) + seed[0]) ^ row_bits)
  return bits >= jnp.uint32(min(round(rate * 2**32), 2**32 - 1))


class Dropout(nn.Module):
  """Inverted dropout with hash masks; `rate` is the probability of dropping."""
  rate: float

  @nn.compact
  def __call__(self, x, deterministic: bool):
    if deterministic or self.rate == 0:
      return x
    keep = keep_mask(self.make_rng("dropout"), x.shape, self.rate, _ROWS.get())
    return jnp.where(keep, x / (1 - self.rate), jnp.zeros_like(x))
