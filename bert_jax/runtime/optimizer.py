"""LAMB as in the BERT recipes: warm-up + polynomial decay, clipping, and LayerNorm
parameters and biases excluded from both weight decay and the layer-wise trust ratio.

optax.lamb applies its trust ratio to every parameter, so the chain is spelled out.
"""

import jax
import jax.numpy as jnp
import optax

from bert_jax.errors import InputError

# Leaf names that are LayerNorm parameters or biases.
_NO_DECAY = ("bias", "scale", "mlm_output_bias")


def schedule(learning_rate: float, warmup_steps: int, num_steps: int,
             power: float = 1.0) -> optax.Schedule:
  """0 -> learning_rate linearly over warmup_steps, then polynomially to 0 at num_steps."""
  warmup = optax.linear_schedule(0.0, learning_rate, max(warmup_steps, 1))
  decay = optax.polynomial_schedule(
      learning_rate, 0.0, power, max(num_steps - warmup_steps, 1))
  return optax.join_schedules([warmup, decay], [warmup_steps])


def time_schedule(learning_rate: float, warmup_steps: int, time_budget: float,
                  power: float = 1.0):
  """lr(count, seconds) for a wall-clock budget (Cramming, Geiping & Goldstein 2022;
  Izsak et al. 2021): linear warm-up over `warmup_steps` steps, times
  (1 - seconds / time_budget) ** power, so the rate reaches 0 exactly when the
  training time reaches the budget."""
  def lr(count, seconds):
    warm = jnp.minimum(1.0, count / max(warmup_steps, 1))
    left = jnp.clip(1.0 - seconds / time_budget, 0.0, 1.0)
    return learning_rate * warm * left ** power
  return lr


def scale_by_time_schedule(lr_fn) -> optax.GradientTransformationExtraArgs:
  """optax.scale_by_learning_rate for `time_schedule`: the training seconds come as
  the `train_seconds` extra arg of `update`. Same state as optax's (a step count), so
  `restart_schedule` applies."""
  def init(params):
    del params
    return optax.ScaleByScheduleState(count=jnp.zeros([], jnp.int32))

  def update(updates, state, params=None, *, train_seconds, **extra_args):
    del params, extra_args
    step_size = lr_fn(state.count, train_seconds)
    updates = jax.tree.map(lambda g: (-step_size * g).astype(g.dtype), updates)
    return updates, optax.ScaleByScheduleState(
        count=optax.safe_int32_increment(state.count))

  return optax.GradientTransformationExtraArgs(init, update)


def decay_mask(params):
  """True for parameters that get weight decay and the trust ratio."""
  def keep(path, _):
    return getattr(path[-1], "key", None) not in _NO_DECAY
  return jax.tree_util.tree_map_with_path(keep, params)


def _stacked(params):
  """True for leaves under the scanned `layers` subtree: axis 0 indexes layers."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: any(getattr(k, "key", None) == "layers" for k in path), params)


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformationExtraArgs:
  """optax.clip_by_global_norm (same state, same result up to rounding) as one scalar
  factor. optax divides every gradient by the norm under a select, which XLA:CPU
  writes out as one more pass over all gradients; a product with a scalar fuses into
  Adam's moment updates. A caller that has the gradients' norm already passes it as
  `grad_norm` to `tx.update` (a chain hands extra args on), saving a pass over all
  gradients: under update_if's cond XLA cannot share it with the caller's."""
  def update(updates, state, params=None, *, grad_norm=None, **extra_args):
    del params, extra_args
    if grad_norm is None:
      grad_norm = optax.tree.norm(updates)
    scale = jnp.where(grad_norm < max_norm, 1.0, max_norm / grad_norm)
    return jax.tree.map(lambda g: g * scale.astype(g.dtype), updates), state

  return optax.GradientTransformationExtraArgs(optax.init_empty_state, update)


def layerwise_trust_ratio() -> optax.GradientTransformation:
  """optax.scale_by_trust_ratio's ratio ||w|| / ||u|| (1 where either is 0), taken per
  layer also when layers are stacked by nn.scan.

  A scanned checkpoint keeps all layers of a kernel in one [L, ...] array; LAMB's
  ratio must still be per layer, so stacked leaves are vmapped over L. The norms are
  plain sums of squares: optax's safe_norm also selects over the whole tensor and
  sums it again (for gradients through the norm, which an optimizer never takes),
  two more passes over every kernel and update in a memory-bound step.
  """
  def norm(x):
    return jnp.sqrt(jnp.sum(jnp.square(x)))

  def one(u, p):
    p_norm, u_norm = norm(p), norm(u)
    return u * jnp.where((p_norm == 0) | (u_norm == 0), 1.0, p_norm / u_norm).astype(u.dtype)

  def update(updates, state, params):
    return jax.tree.map(lambda u, p, s: jax.vmap(one)(u, p) if s else one(u, p),
                        updates, params, _stacked(params)), state

  return optax.GradientTransformation(optax.init_empty_state, update)


def _is_layer(key) -> bool:
  """An unstacked encoder layer's name, `layer_3`."""
  return isinstance(key, str) and key.startswith("layer_") and key[6:].isdigit()


def _depth(path, num_layers: int):
  """ELECTRA's depth of a parameter (Clark et al. 2020, `_get_layer_lrs`): the
  embeddings 0, encoder layer i at i + 1 (a stacked `layers` leaf: 1..L along axis
  0), the pooler L + 1, any head L + 2."""
  keys = [getattr(k, "key", None) for k in path]
  for key in keys:
    if key == "embeddings":
      return 0
    if key == "layers":
      return jnp.arange(1, num_layers + 1)
    if _is_layer(key):
      return int(key[6:]) + 1
    if key == "pooler":
      return num_layers + 1
  return num_layers + 2


def scale_by_layer_decay(decay: float) -> optax.GradientTransformation:
  """Layer-wise learning-rate decay for fine-tuning (ELECTRA; BEiT): the update of a
  parameter at depth d (`_depth`) is scaled by decay ** (L + 2 - d), so the head
  moves at the full rate and each layer below at `decay` times the one above; the
  lower layers keep more of what pretraining learned. Stacked layers are scaled
  per layer along axis 0."""
  def num_layers(updates):
    keys = [(getattr(k, "key", None), u.shape)
            for p, u in jax.tree_util.tree_leaves_with_path(updates) for k in p]
    stacked = [shape[0] for key, shape in keys if key == "layers"]
    return stacked[0] if stacked else len({key for key, _ in keys if _is_layer(key)})

  def update(updates, state, params=None):
    del params
    n = num_layers(updates)

    def one(path, u):
      s = decay ** (n + 2 - _depth(path, n))
      if isinstance(s, jax.Array):  # [L]: broadcast over the stacked axis
        s = s.reshape((-1,) + (1,) * (u.ndim - 1))
      return u * jnp.asarray(s, u.dtype)
    return jax.tree_util.tree_map_with_path(one, updates), state

  return optax.GradientTransformation(optax.init_empty_state, update)


def make(opt_config, num_steps: int, time_budget: float = 0.0
         ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The optimizer for `opt_config` and its learning-rate schedule, for pretraining
  and fine-tuning alike: `name` "lamb" (the default: BERT's pretraining recipe) or
  "adamw" (its fine-tuning recipe); warm-up over `warmup_steps`, or over
  `warmup_fraction` of num_steps where the config has that instead; then polynomial
  decay (`decay_power`, default 1: linear) to 0 at num_steps, or, with a
  `time_budget` in seconds, to 0 when the training time reaches it (`time_schedule`:
  the schedule then takes (count, seconds), and `update` the `train_seconds` extra
  arg). LayerNorm and biases are excluded from weight decay and from LAMB's trust
  ratio. `layer_decay` below 1 (fine-tuning) scales each layer's rate
  (`scale_by_layer_decay`)."""
  name = opt_config.get("name", "lamb")
  if name not in ("lamb", "adamw"):
    raise InputError(f"optimizer.name={name!r}; choose adamw or lamb")
  if "warmup_steps" in opt_config:
    warmup = opt_config.warmup_steps
  else:
    warmup = int(opt_config.warmup_fraction * num_steps)
  power = opt_config.get("decay_power", 1.0)
  if time_budget:
    lr = time_schedule(opt_config.learning_rate, warmup, time_budget, power)
    scale = scale_by_time_schedule(lr)
  else:
    lr = schedule(opt_config.learning_rate, warmup, num_steps, power)
    scale = optax.scale_by_learning_rate(lr)
  trust = [optax.masked(layerwise_trust_ratio(), decay_mask)] if name == "lamb" else []
  layer_decay = opt_config.get("layer_decay", 1.0)
  by_layer = [scale_by_layer_decay(layer_decay)] if layer_decay < 1 else []
  tx = optax.chain(
      clip_by_global_norm(opt_config.clip_norm),
      optax.scale_by_adam(b1=opt_config.b1, b2=opt_config.b2, eps=opt_config.eps),
      optax.add_decayed_weights(opt_config.weight_decay, mask=decay_mask),
      *trust,
      scale,
      *by_layer,
  )
  return tx, lr


def update_if(ok, tx: optax.GradientTransformation, grads, opt_state, params,
              grad_norm=None, **extra_args):
  """(params, opt_state) after one update of `tx` when `ok`, else as they were;
  `grad_norm`, the gradients' global norm if known, goes to clip_by_global_norm, and
  `extra_args` (train_seconds) to the chain.

  A lax.cond, not jnp.where(ok, new, old) over both trees: with where, the new Adam
  moments and the update each read the old moments, so XLA copied every donated
  moment before overwriting it in place (412 copies at BERT-base, 90 ms of a 2.2 s
  CPU step; A/B in BUILD.md).
  """
  def update(operands):
    grads, opt_state, params = operands
    updates, opt_state = optax.with_extra_args_support(tx).update(
        grads, opt_state, params, grad_norm=grad_norm, **extra_args)
    return optax.apply_updates(params, updates), opt_state

  return jax.lax.cond(ok, update, lambda operands: (operands[2], operands[1]),
                      (grads, opt_state, params))


def restart_schedule(opt_state):
  """Phase 2 of BERT's recipe keeps Adam's moments but runs its own schedule: the
  schedule's step count goes back to 0. Adam's own count is kept (its bias
  correction belongs to the moments it has accumulated)."""
  is_schedule = lambda x: isinstance(x, optax.ScaleByScheduleState)
  return jax.tree.map(
      lambda x: x._replace(count=jax.numpy.zeros_like(x.count)) if is_schedule(x) else x,
      opt_state, is_leaf=is_schedule)
