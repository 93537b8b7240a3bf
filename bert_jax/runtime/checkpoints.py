"""Orbax checkpoints of a workdir: save, restore onto any mesh, shape checks.

Layout: WORKDIR/checkpoints/<step>/{params,opt_state,data}. Params and optimizer
state are separate items so fine-tuning and export can restore params alone; `data`
is the input pipeline's position (JSON), so a resume continues the data exactly. Restores go into
abstract targets that carry the *current* shardings, so a checkpoint restores onto
any mesh.
"""

import contextlib
import json
import logging
import os
import shutil

from etils import epath
import jax
import orbax.checkpoint as ocp

from bert_jax.errors import InputError, TrainingStopped
from bert_jax.model import bert as model_lib

CONFIG_FILE = "config.json"
# A fine-tuned workdir's task, labels and model shape (written by finetune.loop; read
# here too, so `from_pretrained` finds the encoder in it).
FINETUNE_FILE = "finetune.json"


def set_replica_slice_floor(min_bytes: int) -> None:
  """Orbax splits the write of a replicated array among its replicas, each slicing
  its part on its device: one XLA compile per device and slice shape. For small parts
  that costs far more than it saves (BUILD.md § Resuming: a tiny model's first save on
  8 CPU devices made 96 such compiles), so only parts of `min_bytes` or more are
  split (0: all, Orbax's default). The files written are the same."""
  handler = ocp.type_handlers.ArrayHandler(
      min_slice_bytes_for_replica_parallel=min_bytes,
      # The default handler's per-array metadata store (no public constructor).
      array_metadata_store=getattr(ocp.type_handlers.get_type_handler(jax.Array),
                                   "_array_metadata_store", None))
  absl_logger = logging.getLogger("absl")  # Orbax warns of every replaced handler
  level = absl_logger.level
  absl_logger.setLevel(logging.ERROR)
  try:
    ocp.type_handlers.register_type_handler(jax.Array, handler, override=True)
  finally:
    absl_logger.setLevel(level)


set_replica_slice_floor(1 << 20)


def manager(workdir: str, keep: int = 3, async_save: bool = True, keep_best: int = 0,
            best_metric: str = "", best_mode: str = "max") -> ocp.CheckpointManager:
  """The workdir's CheckpointManager: keeps the latest `keep` checkpoints and, with
  `keep_best`, also the best `keep_best` by the eval metric `best_metric` passed to
  `save` (`best_mode` "max" or "min"). Orbax writes each step into a temporary
  directory renamed when complete, so a crash mid-save never leaves a checkpoint
  that `latest_step` would pick up."""
  policies = [ocp.checkpoint_managers.LatestN(keep)]
  # Orbax writes the metrics passed to `save` only when best_fn is set.
  best_fn = (lambda metrics: metrics[best_metric]) if keep_best else None
  if keep_best:
    # BestN sorts ascending and keeps the tail: reverse it when lower is better.
    policies.append(ocp.checkpoint_managers.BestN(
        get_metric_fn=best_fn, reverse=best_mode == "min",
        n=keep_best, keep_checkpoints_without_metrics=False))
  return ocp.CheckpointManager(
      # Orbax wants absolute local paths; gs:// paths pass through.
      os.path.join(workdir if "://" in workdir else os.path.abspath(workdir),
                   "checkpoints"),
      item_handlers={"params": ocp.StandardCheckpointHandler(),
                     "opt_state": ocp.StandardCheckpointHandler(),
                     "data": ocp.JsonCheckpointHandler()},
      options=ocp.CheckpointManagerOptions(
          create=True, enable_async_checkpointing=async_save, best_fn=best_fn,
          preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies)))


def save(mngr: ocp.CheckpointManager, state, data_position: dict | None = None,
         metrics: dict | None = None, force: bool = False) -> None:
  """Starts an (async) save of `state` at state.step, with the input pipeline's
  position (a small JSON item) and the eval metrics that rank it. A failed write
  (a full disk, lost permissions; an async one shows at the next save) stops
  training with a clear error; the finished checkpoints stay as they were."""
  items = {"params": ocp.args.StandardSave(state.params),
           "opt_state": ocp.args.StandardSave(state.opt_state)}
  if data_position is not None:
    items["data"] = ocp.args.JsonSave(data_position)
  with _save_errors(mngr, int(state.step)):
    mngr.save(int(state.step), args=ocp.args.Composite(**items), metrics=metrics,
              force=force)


def wait(mngr: ocp.CheckpointManager) -> None:
  """Waits for the save in flight, with `save`'s error on failure."""
  with _save_errors(mngr, None):
    mngr.wait_until_finished()


@contextlib.contextmanager
def _save_errors(mngr: ocp.CheckpointManager, step: int | None):
  try:
    yield
  except OSError as e:
    what = f"step {step}" if step is not None else "a checkpoint"
    raise TrainingStopped(
        f"saving {what} to {mngr.directory} failed ({e}); the complete checkpoints "
        f"{mngr.all_steps()} are intact, a relaunch resumes from the latest") from e


@contextlib.contextmanager
def _reading(directory, step: int):
  """Orbax's errors on a damaged or foreign checkpoint (missing files, unreadable
  metadata, a tree of another shape) as one InputError naming the checkpoint."""
  try:
    yield
  except InputError:
    raise
  except (ValueError, KeyError, OSError) as e:
    cause = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    cause = cause.split(" [tensorstore_spec")[0]  # TensorStore appends its whole spec
    raise InputError(f"cannot read the checkpoint at step {step} in {directory}: "
                     f"{cause}") from e


def restore(mngr: ocp.CheckpointManager, step: int, abstract_state):
  """(state, data position or None) of `step`; `abstract_state` leaves carry the
  target shardings, so the checkpoint lands on the current mesh whatever mesh, device
  count or process count wrote it. Shapes are checked first: a checkpoint of another
  model is an InputError naming every mismatching parameter."""
  with _reading(mngr.directory, step):
    metadata = mngr.item_metadata(step)
    check_shapes(shapes(metadata["params"].tree), shapes(abstract_state.params),
                 f"the checkpoint at step {step} in {mngr.directory}")
    items = {"params": ocp.args.StandardRestore(abstract_state.params),
             "opt_state": ocp.args.StandardRestore(abstract_state.opt_state)}
    # (Orbax gives no metadata for JSON items: look for the item's directory.)
    if epath.Path(mngr.directory, str(step), "data").exists():
      items["data"] = ocp.args.JsonRestore()
    restored = mngr.restore(step, args=ocp.args.Composite(**items))
  state = abstract_state.replace(step=jax.numpy.asarray(step, jax.numpy.int32),
                                 params=restored["params"],
                                 opt_state=restored["opt_state"])
  return state, restored.get("data")


def shapes(tree) -> dict:
  """Parameter name -> shape, for `check_shapes`."""
  return {jax.tree_util.keystr(k): v.shape for k, v in jax.tree_util.tree_leaves_with_path(
      tree, is_leaf=lambda x: hasattr(x, "shape"))}


def check_shapes(got: dict, want: dict, what: str) -> None:
  """InputError listing every parameter missing, unexpected or of another shape
  (dicts of name -> shape)."""
  problems = [f"{k}: missing" for k in sorted(want.keys() - got.keys())]
  problems += [f"{k}: unexpected" for k in sorted(got.keys() - want.keys())]
  problems += [f"{k}: {tuple(got[k])} vs model {tuple(want[k])}"
               for k in sorted(got.keys() & want.keys()) if tuple(got[k]) != tuple(want[k])]
  if problems:
    raise InputError(f"{what} does not fit the configured model: " + "; ".join(problems))


def check_writable(workdir: str, abstract_state) -> None:
  """Finds an unwritable workdir or a disk without room for one checkpoint before
  training starts, rather than at the first save."""
  directory = os.path.join(workdir, "checkpoints")
  # One probe per process: processes of a job probe the same directory at once.
  probe = os.path.join(directory, f".write-probe-{jax.process_index()}")
  try:
    epath.Path(directory).mkdir(parents=True, exist_ok=True)
    epath.Path(probe).write_text("ok")
    epath.Path(probe).unlink()
  except OSError as e:
    raise InputError(f"cannot write checkpoints to {directory}: {e}") from e
  if "://" in workdir:
    return
  need = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(abstract_state))
  free = free_bytes(directory)
  if free < need:
    raise InputError(f"{directory} has {free / 2**30:.2f} GiB free; one checkpoint of "
                     f"this model and optimizer needs {need / 2**30:.2f} GiB")


def free_bytes(directory: str) -> int:
  return shutil.disk_usage(directory).free


def has_checkpoint(workdir: str) -> bool:
  """Whether WORKDIR/checkpoints holds any step (without opening a manager)."""
  return any(epath.Path(workdir, "checkpoints").glob("[0-9]*"))


def write_config(workdir: str, config) -> None:
  epath.Path(workdir).mkdir(parents=True, exist_ok=True)
  epath.Path(workdir, CONFIG_FILE).write_text(config.to_json_best_effort(indent=2))


def read_config(workdir: str) -> dict:
  return json.loads(epath.Path(workdir, CONFIG_FILE).read_text())


def restore_params(workdir: str, config: dict, step: int | None = None):
  """(model, params) of a pretrain workdir's checkpoint, on the first local device.
  Groups of the checkpoint that BertForPreTraining has not (a distilled student's
  hidden_projection) are left out."""
  model = model_lib.BertForPreTraining(model_lib.BertConfig.from_dict(config["model"]))
  return model, _restore_on_first_device(workdir, model, step)


def restore_encoder(workdir: str, cfg: model_lib.BertConfig, step: int | None = None):
  """(BertEncoder, params) of a fine-tuned workdir's checkpoint, on the first local
  device: the task model's encoder groups, checked against `cfg`'s shapes, whatever
  task head it was trained with (the head is left out)."""
  model = model_lib.BertEncoder(cfg)
  return model, _restore_on_first_device(workdir, model, step)


def _restore_on_first_device(workdir: str, model, step: int | None) -> dict:
  """`model`'s params from WORKDIR's checkpoint (latest or `step`); the checkpoint
  may hold more top-level groups (a task head), which are skipped."""
  # Closed on every way out, a damaged checkpoint's InputError included.
  with manager(workdir, async_save=False) as mngr:
    step = mngr.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {workdir}/checkpoints")
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device),
        model_lib.abstract_params(model))
    names = list(target)
    with _reading(mngr.directory, step):
      saved = mngr.item_metadata(step)["params"].tree
      check_shapes(shapes({k: saved[k] for k in target if k in saved}), shapes(target),
                   f"the model of the checkpoint at step {step} in {mngr.directory}")
      # The rest too (Orbax restores whole trees; a head is small), dropped below.
      rest = {k: jax.tree.map(
          lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), v)
              for k, v in saved.items() if k not in target}
      target = {**rest, **target}
      params = mngr.restore(step, args=ocp.args.Composite(
          params=ocp.args.StandardRestore(target)))["params"]
  return {k: params[k] for k in names}


def latest_step(workdir: str) -> int | None:
  """The latest complete checkpoint step of WORKDIR, None when it has none (no
  checkpoints/ directory is made)."""
  if not has_checkpoint(workdir):
    return None
  with manager(workdir, async_save=False) as mngr:
    return mngr.latest_step()
