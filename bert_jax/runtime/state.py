"""The train state (step, params, optimizer state), its abstract shape and shardings.

Abstract first: `abstract_state` derives every leaf's shape and sharding without
materialising a parameter, and `init_state` jitted with those out_shardings creates
the params already sharded, so the full model never sits on one device.
"""

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from bert_jax.model import bert as model_lib
from bert_jax.runtime import sharding


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any


def init_state(model: nn.Module, tx: optax.GradientTransformation, rng,
               seq_len: int) -> TrainState:
  """Fresh state; jit it with out_shardings so params are born sharded."""
  ids = jnp.zeros((1, seq_len), jnp.int32)
  params = nn.meta.unbox(model.init(rng, ids)["params"])
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=tx.init(params))


def abstract_state(model, tx, mesh, rules, seq_len: int):
  """(abstract TrainState, its shardings) without materialising any parameter.

  Param shardings come from the logical axes of the boxed params; optimizer-state
  leaves shaped like params inherit them, the rest (counts, ...) are replicated.
  """
  boxed = model_lib.abstract_params(model, seq_len, boxed=True)
  param_sh = sharding.logical_shardings(boxed, mesh, rules)
  abstract = jax.eval_shape(
      lambda: init_state(model, tx, jax.random.key(0), seq_len))
  opt_sh = optax.tree_map_params(
      tx, lambda _, s: s, abstract.opt_state, param_sh,
      transform_non_params=lambda _: sharding.replicated(mesh),
      is_leaf=lambda x: isinstance(x, jax.sharding.NamedSharding))
  shardings = TrainState(step=sharding.replicated(mesh), params=param_sh,
                         opt_state=opt_sh)
  return abstract, shardings


def with_shardings(abstract_tree, shardings):
  """ShapeDtypeStructs carrying `shardings`: the restore target for another mesh."""
  return jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
      abstract_tree, shardings)
