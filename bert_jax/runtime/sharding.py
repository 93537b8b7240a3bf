"""Device mesh from config and logical-axis -> mesh shardings.

Mesh axes are (data, fsdp, tensor). Arrays name their dimensions with logical axes
("batch", "embed", "heads", ...); the rules in `config.mesh.rules` alone decide which
mesh axis each lands on.
"""

import math

import flax.linen as nn
import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P
import numpy as np

from bert_jax.errors import InputError

AXES = ("data", "fsdp", "tensor")


def resolve_shape(shape, num_devices: int) -> tuple[int, ...]:
  """Fills a single -1 with the devices left over; checks the product."""
  shape = list(shape)
  if len(shape) != len(AXES):
    raise InputError(f"mesh.shape {tuple(shape)} must have {len(AXES)} entries {AXES}")
  if shape.count(-1) > 1:
    raise InputError(f"mesh.shape {tuple(shape)} has more than one -1")
  if -1 in shape:
    rest = math.prod(s for s in shape if s != -1)
    if num_devices % rest:
      raise InputError(f"mesh.shape {tuple(shape)} does not divide {num_devices} devices")
    shape[shape.index(-1)] = num_devices // rest
  if math.prod(shape) != num_devices:
    raise InputError(f"mesh.shape {tuple(shape)} needs {math.prod(shape)} devices, "
                     f"{num_devices} are available")
  return tuple(shape)


def make_mesh(shape, devices=None) -> Mesh:
  devices = jax.devices() if devices is None else devices
  shape = resolve_shape(shape, len(devices))
  # Auto axes: XLA propagates shardings from the in/out shardings we give jit.
  return jax.make_mesh(shape, AXES, axis_types=(AxisType.Auto,) * len(AXES),
                       devices=devices)


def data_parallel_size(mesh: Mesh) -> int:
  """Ways the batch is split: data x fsdp (each fsdp shard sees its own examples)."""
  return mesh.shape["data"] * mesh.shape["fsdp"]


def logical_shardings(boxed_tree, mesh: Mesh, rules):
  """Shardings for a tree of nn.Partitioned boxes (e.g. from eval_shape(model.init))."""
  specs = nn.get_partition_spec(boxed_tree)
  return nn.logical_to_mesh_sharding(specs, mesh, rules)


def batch_sharding(mesh: Mesh, rules) -> NamedSharding:
  """Sharding of every [batch, ...] input array."""
  return NamedSharding(mesh, nn.logical_to_mesh_axes(("batch",), rules))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def to_global(local_batch: dict[str, np.ndarray], sharding: NamedSharding) -> dict:
  """This process's rows -> global jax.Arrays (the multi-host-correct jnp.array)."""
  return {k: jax.make_array_from_process_local_data(sharding, v)
          for k, v in local_batch.items()}

