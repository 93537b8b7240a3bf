"""The fine-tuning loop and `predict`.

run: pretrained encoder (from_pretrained: pretrain workdir, converted Orbax, HF or
TF1 dir) + a new task head -> sharded AdamW/LAMB training for `train.epochs` epochs,
evaluation after each, the best epoch's params kept in WORKDIR/checkpoints, and
WORKDIR/eval_results.json with the final and best metrics. predict: the kept params
on a new file -> one JSON line per example.

A task (classification, tagging, squad) is a module with read / label_list /
num_outputs / featurize / loss / evaluate / predictions, PER_TOKEN and BEST_METRIC.
"""

import contextlib
import dataclasses
import json
import logging
import math
import os
import time

import flax.linen as nn
import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import tensorflow as tf

import bert_jax
from bert_jax import (checkpoints, classification, finetune_step, heads, metrics,
                      model as model_lib, sharding, squad, tagging, task_data, tokenizer,
                      train_step)
from bert_jax.errors import InputError

log = logging.getLogger(__name__)

TASKS = {"classification": classification, "tagging": tagging, "qa": squad}
SETUP_FILE = "finetune.json"  # task, labels, model shape, config: what predict needs
RESULTS_FILE = "eval_results.json"


def load_pretrained(path: str):
  """(BertConfig, params, tokenizer) of a pretrained model, or a one-line InputError."""
  if not path:
    raise InputError("init_from is required: a pretrain workdir, a converted Orbax "
                     "dir, or a Hugging Face / Google TF1 checkpoint directory")
  if not tf.io.gfile.exists(path):
    raise InputError(f"init_from={path} does not exist")
  try:
    loaded = bert_jax.from_pretrained(path)
  except FileNotFoundError as e:
    raise InputError(f"init_from={path}: {e}") from None
  tok = loaded[2] if len(loaded) > 2 else tokenizer.from_dir(path)
  if tok is None:
    raise InputError(f"init_from={path} has no tokenizer (tokenizer/spm.model, "
                     f"spm.model or vocab.txt): inputs could not be tokenized as in "
                     f"pretraining")
  return loaded[0].cfg, loaded[1], tok


def encoder_params(params: dict, abstract: dict, source: str) -> dict:
  """The encoder groups of `params` that the task model has, checked against its
  shapes; an InputError naming whatever is missing or misshapen."""
  want = [k for k in abstract if heads.is_encoder(k)]
  missing = [k for k in want if k not in params]
  if missing:
    raise InputError(f"init_from={source} has no encoder weights for {missing} "
                     f"(found {sorted(params)})")
  encoder = {k: params[k] for k in want}
  shapes = lambda t: {jax.tree_util.keystr(p): x.shape
                      for p, x in jax.tree_util.tree_leaves_with_path(t)}
  checkpoints.check_shapes(shapes(encoder), shapes({k: abstract[k] for k in want}),
                           f"the encoder of init_from={source}")
  return encoder


def _new_params(params: dict) -> dict:
  return {jax.tree_util.keystr(p): list(x.shape)
          for p, x in jax.tree_util.tree_leaves_with_path(params)
          if not heads.is_encoder(p[0].key)}


def _copy_tokenizer(tok, workdir: str) -> None:
  """Carries the tokenizer into WORKDIR/tokenizer, where tokenizer.from_dir finds it."""
  for src in tok.files:
    dst = os.path.join(workdir, tokenizer.VOCAB_FILE if src.endswith(".txt")
                       else tokenizer.MODEL_FILE)
    tf.io.gfile.makedirs(os.path.dirname(dst))
    tf.io.gfile.copy(src, dst, overwrite=True)
    casing = os.path.join(os.path.dirname(src), "tokenizer_config.json")
    if src.endswith(".txt") and tf.io.gfile.exists(casing):
      tf.io.gfile.copy(casing, os.path.join(os.path.dirname(dst), "tokenizer_config.json"),
                       overwrite=True)


def _manager(workdir: str, best_metric: str) -> ocp.CheckpointManager:
  """Keeps one checkpoint: the one with the best eval metric (no latest-N)."""
  return checkpoints.manager(workdir, keep=0, async_save=False, keep_best=1,
                             best_metric=best_metric)


def _check_batch(size: int, name: str, mesh) -> None:
  dp = sharding.data_parallel_size(mesh)
  if size % dp or size % jax.process_count():
    raise InputError(f"{name}={size} is not divisible by the data-parallel size {dp} "
                     f"(mesh data x fsdp) and the {jax.process_count()} processes")


def initial_state(config, runner, model, pretrained_params) -> train_step.TrainState:
  """A fresh sharded state whose encoder is `pretrained_params`' (bit for bit) when
  config.init_encoder, random otherwise; the head is always new."""
  init = jax.jit(
      lambda r: train_step.init_state(model, runner.tx, r, config.data.max_seq_length),
      out_shardings=runner.shardings)
  state = init(jax.random.key(config.train.seed))
  if not config.init_encoder:
    log.info("encoder NOT restored (init_encoder=False): random weights, with the "
             "architecture and tokenizer of %s", config.init_from)
    return state
  encoder = encoder_params(pretrained_params, runner.abstract.params, config.init_from)
  encoder = jax.device_put(encoder, {k: runner.shardings.params[k] for k in encoder})
  log.info("encoder restored from %s", config.init_from)
  # Adam's moments start at zero whatever the params, so the fresh opt_state fits.
  return state.replace(params={**state.params, **encoder})


class Runner:
  """The sharded model of one run: mesh, shardings and the jitted steps."""

  def __init__(self, config, model, tx=None, loss_fn=None, lr_fn=None):
    self.mesh = sharding.make_mesh(config.mesh.shape)
    self.rules = tuple(tuple(r) for r in config.mesh.rules)
    _check_batch(config.train.batch_size, "train.batch_size", self.mesh)
    _check_batch(config.train.eval_batch_size, "train.eval_batch_size", self.mesh)
    self.tx = tx or finetune_step.make_optimizer(config.optimizer, 1)[0]
    self.abstract, self.shardings = train_step.abstract_state(
        model, self.tx, self.mesh, self.rules, config.data.max_seq_length)
    self.batch_sharding = sharding.batch_sharding(self.mesh, self.rules)
    self.eval_batch_size = config.train.eval_batch_size
    with self.context():
      self.train, self.evaluate = finetune_step.jit_steps(
          model, self.tx, loss_fn, lr_fn, self.shardings, self.batch_sharding,
          sharding.replicated(self.mesh))

  @contextlib.contextmanager
  def context(self):
    with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
      yield

  def global_batch(self, batch: dict) -> dict:
    return sharding.to_global(batch, self.batch_sharding)

  def logits(self, params, arrays: dict) -> np.ndarray:
    """The head's logits for every row of `arrays`, on the host."""
    out = []
    with self.context():
      for batch in task_data.batches(arrays, self.eval_batch_size, None,
                                     jax.process_index(), jax.process_count()):
        out.append(_to_host(self.evaluate(params, self.global_batch(batch))))
    return np.concatenate(out)[:task_data.num_rows(arrays)]


def _to_host(x) -> np.ndarray:
  if jax.process_count() > 1:
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(jax.device_get(x))


def _featurize(task, examples, tok, labels, config, what: str):
  """The task's features of `examples`; cuts (truncation) are logged as warnings."""
  arrays, meta, counts = task.featurize(examples, tok, labels, config.data)
  cut = {k: v for k, v in counts.items() if v and k != "windows"}
  if cut:
    log.warning("%s: %s", what, ", ".join(f"{k} {v}" for k, v in cut.items()))
  return arrays, meta, counts


def _write_json(path: str, obj) -> None:
  if jax.process_index() == 0:
    with tf.io.gfile.GFile(path, "w") as f:
      json.dump(obj, f, indent=2, ensure_ascii=False)


def run(config, workdir: str) -> dict:
  """Fine-tunes; returns the contents of WORKDIR/eval_results.json."""
  tf.config.set_visible_devices([], "GPU")
  task = TASKS[config.task]
  if tf.io.gfile.exists(os.path.join(workdir, "checkpoints")):
    raise InputError(f"{workdir} already holds a fine-tuned model; use a new workdir")
  for name in ("train_file", "eval_file"):
    if not config[name]:
      raise InputError(f"{name} is required")
  cfg, params, tok = load_pretrained(config.init_from)
  if config.data.max_seq_length > cfg.max_position_embeddings:
    raise InputError(f"data.max_seq_length={config.data.max_seq_length} exceeds the "
                     f"model's max_position_embeddings={cfg.max_position_embeddings}")
  if tok.vocab_size > cfg.vocab_size:
    raise InputError(f"the tokenizer of {config.init_from} has {tok.vocab_size} tokens, "
                     f"the model's vocab_size is {cfg.vocab_size}")

  train_ex = task.read(config.train_file)
  labels = task.label_list(train_ex)
  eval_ex = task.read(config.eval_file)
  train_arrays, _, train_counts = _featurize(
      task, train_ex, tok, labels, config, config.train_file)
  eval_arrays, eval_meta, eval_counts = _featurize(
      task, eval_ex, tok, labels, config, config.eval_file)

  model = heads.BertWithHead(cfg, num_outputs=task.num_outputs(labels),
                             per_token=task.PER_TOKEN)
  steps_per_epoch = math.ceil(task_data.num_rows(train_arrays) / config.train.batch_size)
  num_steps = config.train.epochs * steps_per_epoch
  tx, lr_fn = finetune_step.make_optimizer(config.optimizer, num_steps)
  runner = Runner(config, model, tx, task.loss, lr_fn)

  if jax.process_index() == 0:
    checkpoints.write_config(workdir, config)
    _copy_tokenizer(tok, workdir)
  _write_json(os.path.join(workdir, SETUP_FILE), {
      "task": config.task, "labels": labels, "model": dataclasses.asdict(cfg)})

  state = initial_state(config, runner, model, params)
  del params
  new = _new_params(runner.abstract.params)
  log.info("new task head (random init): %s", new)

  mngr = _manager(workdir, task.BEST_METRIC)
  writer = metrics.Writer(workdir)
  rng = jax.random.key(config.train.seed + 1)
  history, pending, tick, step = [], [], time.time(), 0
  tokens_per_step = config.train.batch_size * config.data.max_seq_length
  for epoch in range(1, config.train.epochs + 1):
    with runner.context():
      for batch in task_data.batches(train_arrays, config.train.batch_size,
                                     config.train.seed * 1000 + epoch,
                                     jax.process_index(), jax.process_count()):
        state, step_metrics = runner.train(state, runner.global_batch(batch), rng)
        step += 1
        pending.append(step_metrics)
        if step % config.train.log_every == 0 or step in (1, num_steps):
          summary = metrics.summarize(jax.device_get(pending), time.time() - tick,
                                      tokens_per_step)
          writer.write(step, summary)
          log.info("step %d/%d loss %.4f acc %.4f lr %.2e %.1f steps/s", step, num_steps,
                   summary["loss"], summary["accuracy"], summary["learning_rate"],
                   summary["steps_per_sec"])
          pending, tick = [], time.time()
    logits = runner.logits(state.params, eval_arrays)
    result = task.evaluate(eval_ex, eval_meta, logits, labels, config.data)
    writer.write(step, {f"eval_{k}": v for k, v in result.items()})
    history.append({"epoch": epoch, "step": step, **result})
    log.info("epoch %d eval: %s", epoch,
             " ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                      for k, v in result.items()))
    checkpoints.save(mngr, state, metrics={k: float(v) for k, v in result.items()})
  mngr.wait_until_finished()
  kept = mngr.all_steps()[-1]  # the best epoch's (the only one kept)
  mngr.close()
  writer.close()
  results = {
      "task": config.task, "init_from": config.init_from,
      "init_encoder": config.init_encoder, "best_metric": task.BEST_METRIC,
      "final": history[-1], "best": next(h for h in history if h["step"] == kept),
      "epochs": history, "new_params": new,
      "warnings": {"train": train_counts, "eval": eval_counts},
  }
  _write_json(os.path.join(workdir, RESULTS_FILE), results)
  return results


def restore(workdir: str):
  """(task module, labels, model, params restored on `runner`'s mesh, tokenizer,
  config) of a fine-tuned workdir; params are its best epoch's."""
  path = os.path.join(workdir, SETUP_FILE)
  if not tf.io.gfile.exists(path):
    raise InputError(f"{workdir} holds no fine-tuned model ({SETUP_FILE} is missing)")
  with tf.io.gfile.GFile(path) as f:
    setup = json.load(f)
  config = ml_collections.ConfigDict(checkpoints.read_config(workdir))
  task = TASKS[setup["task"]]
  model = heads.BertWithHead(model_lib.BertConfig.from_dict(setup["model"]),
                             num_outputs=task.num_outputs(setup["labels"]),
                             per_token=task.PER_TOKEN)
  runner = Runner(config, model)
  mngr = _manager(workdir, task.BEST_METRIC)
  step = mngr.latest_step()  # the only one kept: the best
  if step is None:
    raise InputError(f"{workdir}/checkpoints holds no checkpoint")
  target = checkpoints.with_shardings(runner.abstract.params, runner.shardings.params)
  params = mngr.restore(step, args=ocp.args.Composite(
      params=ocp.args.StandardRestore(target)))["params"]
  mngr.close()
  return task, setup["labels"], runner, params, tokenizer.from_dir(workdir), config


def predict(workdir: str, input_path: str, output_path: str) -> list[dict]:
  """Predictions of a fine-tuned workdir's best params for `input_path` (the training
  format; labels/answers optional), one JSON object a line into `output_path`."""
  task, labels, runner, params, tok, config = restore(workdir)
  examples = task.read(input_path, labelled=False)
  arrays, meta, _ = _featurize(task, examples, tok, None, config, input_path)
  rows = task.predictions(examples, meta, runner.logits(params, arrays), labels,
                          config.data)
  if jax.process_index() == 0:
    with tf.io.gfile.GFile(output_path, "w") as f:
      for row in rows:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
  log.info("%d predictions -> %s", len(rows), output_path)
  return rows
