"""The held-out evaluation set: fixed examples, fixed masks, MLM and NSP accuracy.

`prepare` holds out the first data.eval_documents documents of the corpus (never
trained on) and writes their examples to DATA_DIR/eval.tfrecord. Their masks are
drawn once from a fixed seed, and the set has a fixed size (data.eval_examples), so
every evaluation of every run scores the same predictions (MLPerf's practice) and
runs can be compared. The last batch is padded with zero-weight rows, never dropped.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bert_jax.data import input_pipeline
from bert_jax.pretrain import step as pretrain_step
from bert_jax.runtime import sharding

# Not train.seed: the eval masks must not change with the training run's seed.
MASK_SEED = (20_200_101, 0)


def load(path: str, **kwargs) -> list[dict]:
  """This process's rows of every eval batch (see input_pipeline.eval_batches)."""
  return input_pipeline.eval_batches(path, MASK_SEED, **kwargs)


def eval_sums(params, batch, *, model):
  """Sums over one batch (weights exclude padding rows and unused predictions)."""
  outputs = pretrain_step.apply_model(model, params, batch)
  w = batch["masked_weights"]
  mlm = outputs["mlm_logits"]
  ew = batch["example_weight"][:, None] * batch["next_sentence_weight"]  # [B, 1]
  nsp = outputs["nsp_logits"]
  return {
      "mlm_loss": (optax.softmax_cross_entropy_with_integer_labels(
          mlm, batch["masked_ids"]) * w).sum(),
      "mlm_correct": ((mlm.argmax(-1) == batch["masked_ids"]) * w).sum(),
      "mlm_count": w.sum(),
      "nsp_loss": (optax.softmax_cross_entropy_with_integer_labels(
          nsp, batch["next_sentence_label"]) * ew).sum(),
      "nsp_correct": ((nsp.argmax(-1) == batch["next_sentence_label"]) * ew).sum(),
      "nsp_count": ew.sum(),
  }


@dataclasses.dataclass
class EvalSet:
  """The loaded eval batches and the jitted per-batch sums."""
  batches: list
  sums_fn: callable
  batch_sharding: jax.sharding.NamedSharding
  with_nsp: bool

  accumulate_fn: callable

  @classmethod
  def create(cls, path: str, model, param_shardings, batch_sharding, *, with_nsp: bool,
             **load_args) -> "EvalSet":
    replicated = sharding.replicated(batch_sharding.mesh)
    sums = functools.partial(eval_sums, model=model)
    sums_fn = jax.jit(sums, in_shardings=(param_shardings, batch_sharding),
                      out_shardings=replicated)
    # Each batch adds to the running totals on the devices, so the batches run one
    # after another. (Independent computations with cross-process collectives may
    # run in a different order on each process and deadlock gloo.)
    accumulate_fn = jax.jit(
        lambda params, batch, totals: jax.tree.map(jnp.add, totals, sums(params, batch)),
        in_shardings=(param_shardings, batch_sharding, replicated),
        out_shardings=replicated)
    return cls(load(path, **load_args), sums_fn, batch_sharding, with_nsp, accumulate_fn)

  @property
  def num_examples(self) -> int:
    return int(sum(b["example_weight"].sum() for b in self.batches) * jax.process_count())

  def __call__(self, params) -> dict:
    """eval_loss, eval_mlm_accuracy (and the NSP/SOP figures) over the whole set."""
    totals = None
    for batch in self.batches:
      batch = sharding.to_global(batch, self.batch_sharding)
      totals = (self.sums_fn(params, batch) if totals is None
                else self.accumulate_fn(params, batch, totals))
    # Replicated: this process's copy is the value (no cross-process op to read it).
    t = {k: float(np.asarray(v.addressable_data(0))) for k, v in totals.items()}
    out = {"eval_mlm_loss": t["mlm_loss"] / max(t["mlm_count"], 1.0),
           "eval_mlm_accuracy": t["mlm_correct"] / max(t["mlm_count"], 1.0)}
    if self.with_nsp:
      out["eval_nsp_loss"] = t["nsp_loss"] / max(t["nsp_count"], 1.0)
      out["eval_nsp_accuracy"] = t["nsp_correct"] / max(t["nsp_count"], 1.0)
    out["eval_loss"] = out["eval_mlm_loss"] + out.get("eval_nsp_loss", 0.0)
    return out
