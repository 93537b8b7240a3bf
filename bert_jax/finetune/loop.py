"""The fine-tuning loop and `predict`.

run: pretrained encoder (from_pretrained: pretrain workdir, converted Orbax, HF or
TF1 dir) + a new task head -> sharded AdamW/LAMB training for `train.epochs` epochs,
evaluation after each, the best epoch's params kept in WORKDIR/checkpoints, and
WORKDIR/eval_results.json with the final and best metrics. predict: the kept params
on a new file -> one JSON line per example.

The step, mesh and shardings are the shared runtime's (bert_jax.runtime.setup); the
task brings its loss. A task (classification, tagging, qa, similarity) is a module
with read / label_list / num_outputs / featurize / loss / evaluate / predictions,
PER_TOKEN and BEST_METRIC; optionally make_model(cfg, labels, config) (None or
absent: the encoder plus a linear head), make_loss(config) (default: its `loss`) and
check_eval(examples).
"""

import dataclasses
import functools
import json
import logging
import math
import os

from etils import epath
import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from bert_jax.configs import validate
from bert_jax.data import tokenizer
from bert_jax.distill import task as distill_task, teacher as distill_teacher
from bert_jax.errors import InputError
from bert_jax.finetune import features, step as finetune_step
from bert_jax.finetune.tasks import classification, qa, similarity, tagging
from bert_jax.interop import pretrained
from bert_jax.model import bert as model_lib, task_model
from bert_jax.runtime import (checkpoints, optimizer, outputs, setup as setup_lib,
                              state as state_lib, writers)

log = logging.getLogger(__name__)

TASKS = {"classification": classification, "tagging": tagging, "qa": qa,
         "similarity": similarity}

# (widest hidden_size, peak learning rate, epochs) for a config that leaves them at 0.
# BERT-base and -large take 2e-5 ... 5e-5 for 2-4 epochs (Devlin et al. 2019); the
# BERT miniatures 1e-4 ... 5e-4 (Turc et al. 2019). 128 wide, tagging People's Daily
# entities (BUILD.md § Distillation): 5e-5 learned nothing; 3e-3 left a 4-layer
# encoder predicting only "O" and gave 2-layer ones F1 0.14-0.18, where 1e-3 gave
# 0.41 (4 layers) and 0.26-0.45 (2 layers).
SIZE_DEFAULTS = ((128, 1e-3, 10), (256, 1e-3, 6), (512, 3e-4, 4), (768, 5e-5, 3),
                 (float("inf"), 3e-5, 3))
SETUP_FILE = checkpoints.FINETUNE_FILE  # task, labels, model shape: what predict needs
RESULTS_FILE = "eval_results.json"
# Featurization counts that describe the data (kept in the results), not losses that
# deserve a warning: qa's context windows; in Chinese, most characters share a piece.
FACT_COUNTS = ("windows", "words_inside_a_piece")


def load_pretrained(path: str):
  """(BertConfig, params, tokenizer) of a pretrained model, or a one-line InputError."""
  if not path:
    raise InputError("init_from is required: a pretrain workdir, a converted Orbax "
                     "dir, or a Hugging Face / Google TF1 checkpoint directory")
  loaded = pretrained.load(path, f"init_from={path}")
  return loaded.model.cfg, loaded.params, loaded.tokenizer


def size_defaults(hidden_size: int) -> tuple[float, int]:
  """(peak learning rate, epochs) for an encoder of this width (SIZE_DEFAULTS)."""
  return next((lr, epochs) for widest, lr, epochs in SIZE_DEFAULTS
              if hidden_size <= widest)


def with_size_defaults(config, cfg: model_lib.BertConfig):
  """`config` with a learning rate or epoch count of 0 set by the model's width."""
  config = config.copy_and_resolve_references()
  lr, epochs = size_defaults(cfg.hidden_size)
  if not config.optimizer.learning_rate:
    config.optimizer.learning_rate = lr
  if not config.train.epochs:
    config.train.epochs = epochs
  log.info("learning rate %.1e, %d epochs (hidden size %d)",
           config.optimizer.learning_rate, config.train.epochs, cfg.hidden_size)
  return config


def encoder_params(params: dict, abstract: dict, source: str) -> dict:
  """The encoder groups of `params` that the task model has, checked against its
  shapes; an InputError naming whatever is missing or misshapen."""
  want = [k for k in abstract if task_model.is_encoder(k)]
  missing = [k for k in want if k not in params]
  if missing:
    raise InputError(f"init_from={source} has no encoder weights for {missing} "
                     f"(found {sorted(params)})")
  encoder = {k: params[k] for k in want}
  checkpoints.check_shapes(checkpoints.shapes(encoder),
                           checkpoints.shapes({k: abstract[k] for k in want}),
                           f"the encoder of init_from={source}")
  return encoder


def _new_params(params: dict) -> dict:
  return {jax.tree_util.keystr(p): list(x.shape)
          for p, x in jax.tree_util.tree_leaves_with_path(params)
          if not task_model.is_encoder(p[0].key)}


def _manager(workdir: str, best_metric: str) -> ocp.CheckpointManager:
  """Keeps one checkpoint: the one with the best eval metric (no latest-N)."""
  return checkpoints.manager(workdir, keep=0, async_save=False, keep_best=1,
                             best_metric=best_metric)


def make_model(task, cfg: model_lib.BertConfig, labels, config):
  """The task's model: its own (make_model), or the encoder plus a linear head; with
  the config's fine-tuning dropout in place of the checkpoint's."""
  cfg = dataclasses.replace(cfg, hidden_dropout=config.dropout,
                            attention_dropout=config.dropout)
  model = task.make_model(cfg, labels, config) if hasattr(task, "make_model") else None
  if model is None:
    model = task_model.BertWithHead(cfg, num_outputs=task.num_outputs(labels),
                                    per_token=task.PER_TOKEN)
  return model


def setup(config, model, task, num_steps: int = 1,
          teacher: distill_task.Teacher | None = None) -> setup_lib.Setup:
  """The runtime's Setup for fine-tuning `model` on `task` for `num_steps`; with a
  `teacher`, task distillation (its params are then the step's fourth argument)."""
  tx, lr_fn = optimizer.make(config.optimizer, num_steps)
  task_loss = task.make_loss(config) if hasattr(task, "make_loss") else task.loss
  loss_fn = functools.partial(finetune_step.loss, model=model, task_loss=task_loss)
  frozen = None
  if teacher is not None:
    loss_fn = functools.partial(
        distill_task.loss, logits=finetune_step.logits, model=model,
        teacher=teacher.model, task_loss=task_loss,
        task_weights=task.weights, weights=config.distill)
    frozen = distill_teacher.shardings(teacher.model, config.data.max_seq_length)
  return setup_lib.build(
      config.mesh, model, tx, lr_fn, loss_fn, seq_len=config.data.max_seq_length,
      batch_sizes={"train.batch_size": config.train.batch_size,
                   "train.eval_batch_size": config.train.eval_batch_size},
      frozen_shardings=frozen)


def load_teacher(config, cfg: model_lib.BertConfig) -> distill_task.Teacher | None:
  """Task distillation's teacher (config.teacher, a fine-tuned workdir of this task),
  checked against the student (cfg, the tokenizer of init_from); None without one."""
  path = config.get("teacher")
  if not path:
    return None
  if not epath.Path(path, SETUP_FILE).exists():
    raise InputError(f"teacher={path} holds no fine-tuned model ({SETUP_FILE} is "
                     f"missing): task distillation needs a fine-tuned teacher")
  task, labels, s, params, tok, _ = restore(path)
  if task is not TASKS[config.task]:
    raise InputError(f"teacher={path} was fine-tuned for {task.__name__.split('.')[-1]}, "
                     f"not task={config.task}")
  if isinstance(s.model, task_model.BertCRFTagger):
    raise InputError(f"teacher={path} is a CRF tagger (tagging.crf): task distillation "
                     "matches per-token tag distributions, which a CRF's potentials are not")
  distill_teacher.check_vocabulary(s.model.cfg, tok, cfg.vocab_size, config.init_from,
                                   path)
  model = distill_teacher.frozen_model(s.model, config.distill.teacher_dtype
                                       or cfg.dtype)
  log.info("distilling from teacher %s (%s, labels %s)", path, model.cfg.dtype, labels)
  return distill_task.Teacher(model, params, labels)


def initial_state(config, s: setup_lib.Setup, pretrained_params) -> state_lib.TrainState:
  """A fresh sharded state whose encoder is `pretrained_params`' (bit for bit) when
  config.init_encoder, random otherwise; the head is always new."""
  state = s.init(config.train.seed)
  if not config.init_encoder:
    log.info("encoder NOT restored (init_encoder=False): random weights, with the "
             "architecture and tokenizer of %s", config.init_from)
    return state
  encoder = encoder_params(pretrained_params, s.abstract.params, config.init_from)
  encoder = jax.device_put(encoder, {k: s.shardings.params[k] for k in encoder})
  log.info("encoder restored from %s", config.init_from)
  # Adam's moments start at zero whatever the params, so the fresh opt_state fits.
  return state.replace(params={**state.params, **encoder})


class Predictor:
  """The task model's logits for every row of a feature set, batched over the mesh."""

  def __init__(self, s: setup_lib.Setup, batch_size: int):
    self.setup, self.batch_size = s, batch_size
    self._logits = s.jit_eval(functools.partial(finetune_step.logits, s.model),
                              out_shardings=s.batch_sharding)

  def __call__(self, params, arrays: dict) -> np.ndarray:
    out = []
    with self.setup.context():
      for batch in features.batches(arrays, self.batch_size, None,
                                    jax.process_index(), jax.process_count()):
        out.append(_to_host(self._logits(params, self.setup.global_batch(batch))))
    return np.concatenate(out)[:features.num_rows(arrays)]


def _to_host(x) -> np.ndarray:
  if jax.process_count() > 1:
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(jax.device_get(x))


def _featurize(task, examples, tok, labels, config, what: str):
  """The task's features of `examples`; cuts (truncation) are logged as warnings."""
  arrays, meta, counts = task.featurize(examples, tok, labels, config.data)
  cut = {k: v for k, v in counts.items() if v and k not in FACT_COUNTS}
  if cut:
    log.warning("%s: %s", what, ", ".join(f"{k} {v}" for k, v in cut.items()))
  return arrays, meta, counts


def _write_json(path: str, obj) -> None:
  if jax.process_index() == 0:
    epath.Path(path).write_text(json.dumps(obj, indent=2, ensure_ascii=False))


def run(config, workdir: str) -> dict:
  """Fine-tunes; returns the contents of WORKDIR/eval_results.json."""
  validate.check(config)
  outputs.check_dir(workdir)
  task = TASKS[config.task]
  if epath.Path(workdir, SETUP_FILE).exists():
    raise InputError(f"{workdir} already holds a fine-tuned model; use a new workdir")
  if epath.Path(workdir, checkpoints.CONFIG_FILE).exists() and "model" in (
      checkpoints.read_config(workdir)):
    raise InputError(f"{workdir} holds a pretraining run; fine-tune into a new --workdir "
                     f"(with --config.init_from={workdir})")
  for name in ("train_file", "eval_file"):
    if not config[name]:
      raise InputError(f"{name} is required")
  cfg, params, tok = load_pretrained(config.init_from)
  config = with_size_defaults(config, cfg)
  if config.data.max_seq_length > cfg.max_position_embeddings:
    raise InputError(f"data.max_seq_length={config.data.max_seq_length} exceeds the "
                     f"model's max_position_embeddings={cfg.max_position_embeddings}")
  if tok.vocab_size > cfg.vocab_size:
    raise InputError(f"the tokenizer of {config.init_from} has {tok.vocab_size} tokens, "
                     f"the model's vocab_size is {cfg.vocab_size}")

  teacher = load_teacher(config, cfg)
  train_ex = task.read(config.train_file)
  # A student answers in its teacher's classes.
  labels = teacher.labels if teacher else task.label_list(train_ex)
  eval_ex = task.read(config.eval_file)
  if hasattr(task, "check_eval"):
    task.check_eval(eval_ex)
  train_arrays, _, train_counts = _featurize(
      task, train_ex, tok, labels, config, config.train_file)
  eval_arrays, eval_meta, eval_counts = _featurize(
      task, eval_ex, tok, labels, config, config.eval_file)

  model = make_model(task, cfg, labels, config)
  steps_per_epoch = math.ceil(features.num_rows(train_arrays) / config.train.batch_size)
  num_steps = config.train.epochs * steps_per_epoch
  s = setup(config, model, task, num_steps, teacher)
  predict_logits = Predictor(s, config.train.eval_batch_size)
  step_args = () if teacher is None else (distill_teacher.place(
      teacher.params, teacher.model, s, config.data.max_seq_length),)
  del teacher

  if jax.process_index() == 0:
    checkpoints.write_config(workdir, config)
    for path in tok.files:
      tokenizer.copy_into(path, workdir)
  _write_json(os.path.join(workdir, SETUP_FILE), {
      "task": config.task, "labels": labels, "model": dataclasses.asdict(cfg)})

  state = initial_state(config, s, params)
  del params
  new = _new_params(s.abstract.params)
  log.info("new task head (random init): %s", new)

  mngr = _manager(workdir, task.BEST_METRIC)
  logger = writers.Logger(workdir, num_steps, tokens_per_step=(
      config.train.batch_size * config.data.max_seq_length))
  rng = jax.random.key(config.train.seed + 1)
  history, step = [], 0
  try:
    for epoch in range(1, config.train.epochs + 1):
      with s.context():
        for batch in features.batches(train_arrays, config.train.batch_size,
                                      config.train.seed * 1000 + epoch,
                                      jax.process_index(), jax.process_count()):
          state, step_metrics = s.step_fn(state, s.global_batch(batch), rng, *step_args)
          step += 1
          logger.add(step, step_metrics,
                     log=step % config.train.log_every == 0 or step in (1, num_steps))
      result = task.evaluate(eval_ex, eval_meta, predict_logits(state.params, eval_arrays),
                             labels, config.data)
      logger.write_eval(step, {f"eval_{k}": v for k, v in result.items()})
      history.append({"epoch": epoch, "step": step, **result})
      checkpoints.save(mngr, state, metrics={k: float(v) for k, v in result.items()})
    mngr.wait_until_finished()
    kept = mngr.all_steps()[-1]  # the best epoch's (the only one kept)
  finally:
    logger.close()
    mngr.close()
  results = {
      "task": config.task, "init_from": config.init_from,
      "teacher": config.get("teacher") or None,
      "init_encoder": config.init_encoder, "best_metric": task.BEST_METRIC,
      "final": history[-1], "best": next(h for h in history if h["step"] == kept),
      "epochs": history, "new_params": new,
      "warnings": {"train": train_counts, "eval": eval_counts},
  }
  _write_json(os.path.join(workdir, RESULTS_FILE), results)
  return results


def restore(workdir: str):
  """(task module, labels, setup, params restored on its mesh, tokenizer, config) of a
  fine-tuned workdir; params are its best epoch's."""
  path = epath.Path(workdir, SETUP_FILE)
  if not path.exists():
    raise InputError(f"{workdir} holds no fine-tuned model ({SETUP_FILE} is missing)")
  saved = json.loads(path.read_text())
  config = ml_collections.ConfigDict(checkpoints.read_config(workdir))
  task = TASKS[saved["task"]]
  model = make_model(task, model_lib.BertConfig.from_dict(saved["model"]),
                     saved["labels"], config)
  s = setup(config, model, task)
  mngr = _manager(workdir, task.BEST_METRIC)
  step = mngr.latest_step()  # the only one kept: the best
  if step is None:
    raise InputError(f"{workdir}/checkpoints holds no checkpoint")
  target = state_lib.with_shardings(s.abstract.params, s.shardings.params)
  params = mngr.restore(step, args=ocp.args.Composite(
      params=ocp.args.StandardRestore(target)))["params"]
  mngr.close()
  return task, saved["labels"], s, params, tokenizer.from_dir(workdir), config


def predict(workdir: str, input_path: str, output_path: str) -> list[dict]:
  """Predictions of a fine-tuned workdir's best params for `input_path` (the training
  format; labels/answers optional), one JSON object a line into `output_path`."""
  outputs.check_file(output_path, "--output")
  task, labels, s, params, tok, config = restore(workdir)
  examples = task.read(input_path, labelled=False)
  arrays, meta, _ = _featurize(task, examples, tok, None, config, input_path)
  logits = Predictor(s, config.train.eval_batch_size)(params, arrays)
  rows = task.predictions(examples, meta, logits, labels, config.data)
  if jax.process_index() == 0:
    epath.Path(output_path).write_text(
        "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
  log.info("%d predictions -> %s", len(rows), output_path)
  return rows
