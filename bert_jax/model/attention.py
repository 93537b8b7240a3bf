"""Multi-head self-attention over `jax.nn.dot_product_attention`.

Q/K/V kernels are [embed, heads, head_dim] and the output kernel [heads, head_dim,
embed], so tensor parallelism splits heads without reshapes inside the layer.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from bert_jax.model import dropout as dropout_lib
from bert_jax.model import matmul


# The collection attention sows its probabilities [B, heads, S, S] into when the
# caller makes it mutable (distillation's attention-map loss); then attention is
# spelled out, since dot_product_attention does not return them.
MAPS = "attention_maps"


def padding_mask(attention_mask: jax.Array) -> jax.Array:
  """[B, S] with 1 = real token -> boolean [B, 1, 1, S]: every query sees real keys."""
  return attention_mask.astype(bool)[:, None, None, :]


def packing_mask(example_ids: jax.Array) -> jax.Array:
  """[B, S] example number of each token (0 = padding) -> boolean [B, 1, S, S]: a
  token sees only the real tokens of its own example (packed rows)."""
  same = example_ids[:, :, None] == example_ids[:, None, :]
  return (same & (example_ids[:, None, :] > 0))[:, None]


def _heads_first(t: jax.Array, perm) -> jax.Array:
  """[B, S, H, D] permuted by `perm` (batch, heads, then two more) -> [B * H, ., .]."""
  t = t.transpose(perm)
  return t.reshape(-1, *t.shape[2:])


class SelfAttention(nn.Module):
  num_heads: int
  dropout: float
  initializer_range: float
  dtype: str = "float32"
  param_dtype: str = "float32"

  @nn.compact
  def __call__(self, x, mask, deterministic: bool):
    hidden = x.shape[-1]
    if hidden % self.num_heads:
      raise ValueError(f"hidden size {hidden} is not divisible by {self.num_heads} heads")
    head_dim = hidden // self.num_heads
    proj = lambda shape, k_axes, b_axes, name: matmul.Dense(
        shape, k_axes, b_axes, self.initializer_range, self.dtype,
        self.param_dtype, name=name)

    q, k, v = (proj((hidden, self.num_heads, head_dim),
                    ("embed", "heads", "kv"), ("heads", "kv"), name)(x)
               for name in ("query", "key", "value"))
    use_dropout = not deterministic and self.dropout > 0
    if use_dropout or self.is_mutable_collection(MAPS):
      # dot_product_attention has no dropout on the probabilities, so the
      # training path spells attention out (XLA fuses it the same way).
      # Batched dots over batch x heads with row-major operands (see matmul.py).
      b, s = x.shape[:2]
      logits = matmul.batch_matmul(_heads_first(q, (0, 2, 1, 3)),  # [BH, S, D]
                                   _heads_first(k, (0, 2, 3, 1)))  # [BH, D, S]
      logits = logits.reshape(b, self.num_heads, s, s).astype(jnp.float32)
      logits = logits / jnp.sqrt(jnp.float32(head_dim))
      logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
      probs = jax.nn.softmax(logits, axis=-1)
      self.sow(MAPS, "probs", probs)
      probs = dropout_lib.Dropout(self.dropout)(
          probs, deterministic=not use_dropout).astype(v.dtype)
      out = matmul.batch_matmul(probs.reshape(-1, s, s), _heads_first(v, (0, 2, 1, 3)))
      out = out.reshape(b, self.num_heads, s, head_dim).transpose(0, 2, 1, 3)
    else:
      out = jax.nn.dot_product_attention(q, k, v, mask=mask)
    return proj((self.num_heads, head_dim, hidden),
                ("heads", "kv", "embed"), ("embed",), "out")(out)
