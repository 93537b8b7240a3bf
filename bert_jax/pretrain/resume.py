"""What a resume may change. A workdir that holds a run (checkpoints, or data prepared
for it) continues only under a config that differs from its config.json in the
fields below; anything else (the model's shape, the data, its masking, the optimizer,
the batch) is refused before the command writes anything (BUILD.md § Resuming).
"""

import json

from etils import epath

from bert_jax.errors import InputError
from bert_jax.runtime import checkpoints

# Field names, or group prefixes ending in "." (the whole group).
RESUMABLE = (
    # How long, and how often it logs, evaluates, saves and profiles.
    "train.num_steps", "train.time_budget", "train.target_mlm_accuracy",
    "train.log_every", "train.eval_every",
    "train.checkpoint_every", "train.keep_checkpoints", "train.keep_best_checkpoints",
    "train.max_nonfinite_steps", "train.profile_steps", "train.liveness_timeout",
    # Where it runs: checkpoints restore onto another mesh.
    "mesh.",
    # Compute only: the parameters and their tree stay the same (accumulation's
    # update equals the unsplit one).
    "model.remat", "model.dtype", "train.microbatches",
    # Preparation speed, and the evaluation set's reading (not the training data).
    "data.prepare_workers", "data.tokenizer_threads", "data.eval_examples", "data.eval_mask_prob",
    "data.eval_max_predictions",
    # Another prepared directory is read from its start (a logged warning).
    "data.prepared_dir",
    # Only a fresh workdir starts from init_from.
    "init_from", "init_from_optimizer",
)


def _flat(tree: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[prefix + k] = v
  return out


def holds_run(workdir: str, data_dir: str) -> bool:
  return (checkpoints.has_checkpoint(workdir)
          or epath.Path(data_dir, "stats.json").exists())


def check(config, workdir: str, data_dir: str) -> None:
  """Raises InputError when `workdir` holds a run that `config` cannot continue."""
  if (not epath.Path(workdir, checkpoints.CONFIG_FILE).exists()
      or not holds_run(workdir, data_dir)):
    return
  old = _flat(checkpoints.read_config(workdir))
  new = _flat(json.loads(config.to_json_best_effort()))
  # Fields a newer version added are not in an older config.json: nothing to compare.
  changed = [k for k in new if k in old and old[k] != new[k]
             and not any(k == r or (r.endswith(".") and k.startswith(r)) for r in RESUMABLE)]
  if changed:
    k = changed[0]
    more = f" (and {len(changed) - 1} more fields)" if len(changed) > 1 else ""
    raise InputError(
        f"{workdir} holds a run with {k}={old[k]!r}, this config says {new[k]!r}{more}; "
        f"a resume may change only how long it trains, how often it logs, evaluates "
        f"and saves, the mesh, model.remat, model.dtype and train.microbatches (BUILD.md § Resuming): use "
        f"a new --workdir for another run")
