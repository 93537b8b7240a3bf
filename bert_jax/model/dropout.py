"""Dropout whose keep mask is a counter-based hash, computed where it is used.

`nn.Dropout` draws its mask with jax.random (threefry, lowered to a rolled loop on
CPU), which makes several passes over a mask-sized array for every dropout. Here the
mask bit of element i is a hash of i and two random words drawn per call: a handful
of integer ops that XLA fuses into the consumer of the mask, forward and backward.
Like nn.Dropout it is inverted (kept values are scaled by 1 / (1 - rate)) and takes
its randomness from the "dropout" rng stream; the masks do not depend on how the
array is sharded.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp


def _mix(h):
  """murmur3's 32-bit finaliser: every input bit flips each output bit with p ~ 1/2."""
  h ^= h >> 16
  h *= jnp.uint32(0x85EBCA6B)
  h ^= h >> 13
  h *= jnp.uint32(0xC2B2AE35)
  return h ^ (h >> 16)


def keep_mask(key, shape, rate: float) -> jax.Array:
  """Boolean mask, True with probability 1 - rate (to 2^-32), from a PRNG key."""
  seed = jax.random.bits(key, (2,), jnp.uint32)
  index = jax.lax.iota(jnp.uint32, math.prod(shape)).reshape(shape)
  bits = _mix(_mix(index * jnp.uint32(0x9E3779B9) + seed[0]) ^ seed[1])
  return bits >= jnp.uint32(min(round(rate * 2**32), 2**32 - 1))


class Dropout(nn.Module):
  """Inverted dropout with hash masks; `rate` is the probability of dropping."""
  rate: float

  @nn.compact
  def __call__(self, x, deterministic: bool):
    if deterministic or self.rate == 0:
      return x
    keep = keep_mask(self.make_rng("dropout"), x.shape, self.rate)
    return jnp.where(keep, x / (1 - self.rate), jnp.zeros_like(x))
