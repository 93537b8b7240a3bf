"""LAMB as in the BERT recipes: warm-up + polynomial decay, clipping, and LayerNorm
parameters and biases excluded from both weight decay and the layer-wise trust ratio.

optax.lamb applies its trust ratio to every parameter, so the chain is spelled out.
"""

import jax
import optax

# Leaf names that are LayerNorm parameters or biases.
_NO_DECAY = ("bias", "scale", "mlm_output_bias")


def schedule(learning_rate: float, warmup_steps: int, num_steps: int,
             power: float = 1.0) -> optax.Schedule:
  """0 -> learning_rate linearly over warmup_steps, then polynomially to 0 at num_steps."""
  warmup = optax.linear_schedule(0.0, learning_rate, max(warmup_steps, 1))
  decay = optax.polynomial_schedule(
      learning_rate, 0.0, power, max(num_steps - warmup_steps, 1))
  return optax.join_schedules([warmup, decay], [warmup_steps])


def decay_mask(params):
  """True for parameters that get weight decay and the trust ratio."""
  def keep(path, _):
    return getattr(path[-1], "key", None) not in _NO_DECAY
  return jax.tree_util.tree_map_with_path(keep, params)


def make(opt_config, num_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The optimizer for `config.optimizer` and its learning-rate schedule."""
  lr = schedule(opt_config.learning_rate, opt_config.warmup_steps, num_steps,
                opt_config.decay_power)
  tx = optax.chain(
      optax.clip_by_global_norm(opt_config.clip_norm),
      optax.scale_by_adam(b1=opt_config.b1, b2=opt_config.b2, eps=opt_config.eps),
      optax.add_decayed_weights(opt_config.weight_decay, mask=decay_mask),
      optax.masked(optax.scale_by_trust_ratio(), decay_mask),
      optax.scale_by_learning_rate(lr),
  )
  return tx, lr
