"""One setup for every training run: mesh, logical-axis rules, abstract state,
shardings and the jitted train step.

Pretraining and fine-tuning each call `build` with their model, optimizer and loss
(and, for ahead-of-time lowering, their batch spec); `bert-jax benchmark` and
`bert-jax plan` take the pretraining step from the same place, so the step that is
benchmarked and planned is the one that trains. Trace and call inside
`with setup.context():`.
"""

import contextlib
import dataclasses
from typing import Callable

import flax.linen as nn
import jax
import optax

from bert_jax.errors import InputError
from bert_jax.runtime import sharding, state as state_lib, step as step_lib


@dataclasses.dataclass(frozen=True)
class Setup:
  """What the train step is built from, and the jitted step itself."""
  mesh: jax.sharding.Mesh
  rules: tuple
  model: nn.Module
  tx: optax.GradientTransformation
  lr_fn: optax.Schedule
  seq_len: int
  abstract: state_lib.TrainState  # shapes and dtypes of the state
  shardings: state_lib.TrainState
  batch_sharding: jax.sharding.NamedSharding
  abstract_batch: dict | None  # ShapeDtypeStructs of one global batch, sharded
  step_fn: Callable  # (state, batch, rng[, frozen]) -> (state, metrics); state donated

  @property
  def replicated(self) -> jax.sharding.NamedSharding:
    return sharding.replicated(self.mesh)

  def context(self) -> contextlib.ExitStack:
    """The mesh and logical-axis rules the model is traced under."""
    stack = contextlib.ExitStack()
    stack.enter_context(jax.set_mesh(self.mesh))
    stack.enter_context(nn.logical_axis_rules(self.rules))
    return stack

  def lower(self) -> jax.stages.Lowered:
    """The step lowered for the abstract sharded state and batch (for compiling
    ahead of time, memory analysis, HLO fingerprints)."""
    if self.abstract_batch is None:
      raise ValueError("this setup was built without a batch spec")
    abstract = state_lib.with_shardings(self.abstract, self.shardings)
    with self.context():
      return self.step_fn.lower(abstract, self.abstract_batch, jax.random.key(0))

  def init(self, seed: int) -> state_lib.TrainState:
    """A fresh state, born sharded."""
    init = jax.jit(
        lambda r: state_lib.init_state(self.model, self.tx, r, self.seq_len),
        out_shardings=self.shardings)
    return init(jax.random.key(seed))

  def restore_target(self) -> state_lib.TrainState:
    """The abstract state carrying this mesh's shardings (what checkpoints restore
    into)."""
    return state_lib.with_shardings(self.abstract, self.shardings)

  def global_batch(self, batch: dict) -> dict:
    """This process's rows of a batch -> global arrays sharded over the mesh."""
    return sharding.to_global(batch, self.batch_sharding)

  def jit_eval(self, fn: Callable, out_shardings=None) -> Callable:
    """fn(params, batch) jitted with the params' and batch's shardings; its output
    replicated unless `out_shardings` says otherwise."""
    return jax.jit(fn, in_shardings=(self.shardings.params, self.batch_sharding),
                   out_shardings=self.replicated if out_shardings is None
                   else out_shardings)


def check_batch(size: int, name: str, mesh) -> None:
  """Errors on a global batch the mesh or the processes cannot split."""
  dp = sharding.data_parallel_size(mesh)
  if size % dp:
    raise InputError(f"{name}={size} is not divisible by the data-parallel size {dp} "
                     f"(mesh data x fsdp)")
  if size % jax.process_count():
    raise InputError(f"{name}={size} is not divisible by {jax.process_count()} "
                     f"processes")


def build(mesh_config, model: nn.Module, tx: optax.GradientTransformation,
          lr_fn: optax.Schedule, loss_fn: step_lib.LossFn, *, seq_len: int,
          batch_sizes: dict[str, int],
          batch_spec: Callable[[jax.sharding.NamedSharding], dict] | None = None,
          microbatches: int = 1, totals_fn: step_lib.TotalsFn | None = None,
          frozen_shardings=None) -> Setup:
  """The Setup of one run. `batch_sizes` (config name -> global rows) are checked
  against the mesh; `batch_spec(batch_sharding)` gives the abstract batch. With
  `microbatches` > 1 the step accumulates gradients (runtime/step.py; the loss's
  `totals_fn` is then required). `frozen_shardings(mesh, rules)`: the shardings of
  frozen params the step takes as a fourth argument (a distillation teacher)."""
  mesh = sharding.make_mesh(mesh_config.shape)
  for name, size in batch_sizes.items():
    check_batch(size, name, mesh)
    if microbatches > 1:
      check_batch(size // microbatches, f"{name} / train.microbatches", mesh)
  rules = tuple(tuple(r) for r in mesh_config.rules)
  abstract, shardings = state_lib.abstract_state(model, tx, mesh, rules, seq_len)
  batch_sharding = sharding.batch_sharding(mesh, rules)
  step_fn = step_lib.jit_train_step(
      loss_fn, tx, lr_fn, shardings, batch_sharding, sharding.replicated(mesh),
      microbatches, totals_fn,
      frozen_shardings and frozen_shardings(mesh, rules))
  return Setup(mesh, rules, model, tx, lr_fn, seq_len, abstract, shardings,
               batch_sharding, batch_spec(batch_sharding) if batch_spec else None,
               step_fn)
