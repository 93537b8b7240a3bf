"""How checkpoints write replicated arrays (the rest of checkpointing is tested end to
end in tests/pretrain)."""

import jax
import numpy as np

from bert_jax.runtime import checkpoints
from bert_jax.runtime import sharding
from bert_jax.runtime import state as state_lib


def test_only_large_replicated_arrays_are_split_among_replicas(tmp_path, monkeypatch):
  """Orbax slices each replica's part of a replicated array on its device (a compile
  per device and shape): worth it only from 1 MiB a part. The values restore intact."""
  mesh = sharding.make_mesh((8, 1, 1), jax.devices())
  replicated = sharding.replicated(mesh)
  big = 8 * 2**20 // 4  # float32s: 1 MiB per replica on 8 devices
  params = {"small": np.arange(1024, dtype=np.float32).reshape(8, 128),
            "big": np.arange(big, dtype=np.float32).reshape(big // 256, 256)}
  params = jax.device_put(params, replicated)
  slices = []
  slice_in_dim = jax.lax.slice_in_dim

  def counted(operand, *args, **kwargs):
    slices.append(operand.shape)
    return slice_in_dim(operand, *args, **kwargs)

  monkeypatch.setattr(jax.lax, "slice_in_dim", counted)
  state = state_lib.TrainState(step=1, params=params, opt_state={"count": params["small"]})
  mngr = checkpoints.manager(str(tmp_path), async_save=False)
  checkpoints.save(mngr, state)
  monkeypatch.undo()
  assert slices == [params["big"].shape] * 8

  abstract = lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=replicated)
  restored, _ = checkpoints.restore(mngr, 1, state.replace(
      params=jax.tree.map(abstract, state.params),
      opt_state=jax.tree.map(abstract, state.opt_state)))
  mngr.close()
  for name, value in params.items():
    np.testing.assert_array_equal(restored.params[name], value)
