"""The pretraining loop: data, sharded state, restore, steps, metrics, checkpoints.

Resume order: the latest checkpoint in WORKDIR, else a fresh init. Running the same
command again continues where the last run stopped.
"""

import json
import logging
import os
import time

import flax.linen as nn
import jax
from jax.experimental import multihost_utils
import tensorflow as tf

import bert_jax
from bert_jax import (checkpoints, input_pipeline, metrics, model as model_lib,
                      optimizer, prepare, sharding, tokenizer, train_step)
from bert_jax.errors import InputError

log = logging.getLogger(__name__)


def check_batch(global_batch: int, mesh) -> None:
  """Errors on a global batch the mesh or the processes cannot split."""
  dp = sharding.data_parallel_size(mesh)
  if global_batch % dp:
    raise InputError(f"train.global_batch_size={global_batch} is not divisible by the "
                     f"data-parallel size {dp} (mesh data x fsdp)")
  if global_batch % jax.process_count():
    raise InputError(f"train.global_batch_size={global_batch} is not divisible by "
                     f"{jax.process_count()} processes")


def ensure_data(config, workdir: str) -> list[str]:
  """Prepared shard files, running `prepare` on process 0 first if there are none."""
  data_dir = prepare.data_dir(config, workdir)
  stats_file = os.path.join(data_dir, prepare.STATS_FILE)
  if not tf.io.gfile.exists(stats_file):
    if config.data.prepared_dir:
      raise InputError(f"data.prepared_dir={data_dir} holds no prepared data")
    if jax.process_index() == 0:
      prepare.run(config, workdir)
    multihost_utils.sync_global_devices("bert_jax.prepare")
  with tf.io.gfile.GFile(stats_file) as f:
    prepared_len = json.load(f)["max_seq_length"]
  if prepared_len > config.data.max_seq_length:
    # Cutting prepared pairs would drop their final [SEP] and part of segment B.
    raise InputError(f"{data_dir} was prepared for max_seq_length={prepared_len}, longer "
                     f"than data.max_seq_length={config.data.max_seq_length}")
  return prepare.shard_files(data_dir)


def _check_same_shapes(params, expected, what: str) -> None:
  """InputError listing every parameter missing, unexpected or of another shape."""
  got = {jax.tree_util.keystr(k): v.shape
         for k, v in jax.tree_util.tree_leaves_with_path(params)}
  want = {jax.tree_util.keystr(k): v.shape
          for k, v in jax.tree_util.tree_leaves_with_path(expected)}
  problems = [f"{k}: missing" for k in sorted(want.keys() - got.keys())]
  problems += [f"{k}: unexpected" for k in sorted(got.keys() - want.keys())]
  problems += [f"{k}: {got[k]} vs model {want[k]}" for k in sorted(got.keys() & want.keys())
               if tuple(got[k]) != tuple(want[k])]
  if problems:
    raise InputError(f"{what} does not fit the configured model: " + "; ".join(problems))


def _adopt_tokenizer(config, workdir: str) -> None:
  """Continued pretraining must tokenize as the source did: copy its SentencePiece
  model into a workdir that has none yet (prepare then uses it). A source without
  one (a converted Google/HF checkpoint has a WordPiece vocab.txt) is refused unless
  the data is already prepared: a newly trained tokenizer would not match its
  embeddings."""
  source = config.init_from
  if not tf.io.gfile.exists(source):
    raise InputError(f"init_from={source} does not exist")
  src, dst = (os.path.join(d, tokenizer.MODEL_FILE) for d in (source, workdir))
  if tf.io.gfile.exists(dst) or config.data.prepared_dir:
    return
  if not tf.io.gfile.exists(src):
    raise InputError(
        f"init_from={source} has no {tokenizer.MODEL_FILE}, and preparing data with "
        f"its vocabulary (WordPiece) is not supported yet; a new SentencePiece model "
        f"would not match its embeddings. Put the matching model at {dst} or set "
        f"data.prepared_dir to data tokenized with its vocabulary")
  if jax.process_index() == 0:
    tf.io.gfile.makedirs(os.path.dirname(dst))
    tf.io.gfile.copy(src, dst)


def _init_from(path: str, abstract, shardings, tx) -> train_step.TrainState:
  """Params from anything `from_pretrained` reads, resharded; a fresh optimizer."""
  _, params = bert_jax.from_pretrained(path)
  # Scanned and unscanned layer layouts convert into each other.
  if "layers" in abstract.params and "layers" not in params:
    params = model_lib.stack_layers(params, len(
        [k for k in params if k.startswith("layer_")]))
  elif "layers" not in abstract.params and "layers" in params:
    params = model_lib.unstack_layers(params)
  _check_same_shapes(params, abstract.params, f"init_from={path}")
  log.info("initialising params from %s (fresh optimizer state)", path)
  fresh = jax.jit(lambda p: train_step.TrainState(
      step=jax.numpy.zeros((), jax.numpy.int32), params=p, opt_state=tx.init(p)),
                  in_shardings=(shardings.params,), out_shardings=shardings)
  return fresh(jax.device_put(params, shardings.params))


def run(config, workdir: str) -> dict:
  """Pretrains to config.train.num_steps; returns the last logged metrics."""
  tf.config.set_visible_devices([], "GPU")  # TF is only the input pipeline.
  mesh = sharding.make_mesh(config.mesh.shape)
  check_batch(config.train.global_batch_size, mesh)
  if jax.process_index() == 0:
    checkpoints.write_config(workdir, config)
  if config.init_from:
    _adopt_tokenizer(config, workdir)
  files = ensure_data(config, workdir)

  model = model_lib.BertForPreTraining(model_lib.BertConfig.from_dict(config.model))
  tx, lr_fn = optimizer.make(config.optimizer, config.train.num_steps)
  rules = tuple(tuple(r) for r in config.mesh.rules)
  seq_len = config.data.max_seq_length
  abstract, shardings = train_step.abstract_state(model, tx, mesh, rules, seq_len)
  log.info("model %s: %d parameters; mesh %s", config.model.size,
           model_lib.count_params(abstract.params), dict(mesh.shape))

  mngr = checkpoints.manager(workdir, config.train.keep_checkpoints)
  # Resume order: this workdir's latest checkpoint, else init_from's params (with a
  # fresh optimizer), else a fresh init.
  start = mngr.latest_step()
  if start is not None:
    log.info("resuming from step %d in %s", start, workdir)
    state = checkpoints.restore(
        mngr, start, checkpoints.with_shardings(abstract, shardings))
  elif config.init_from:
    start = 0
    state = _init_from(config.init_from, abstract, shardings, tx)
  else:
    start = 0
    init = jax.jit(lambda r: train_step.init_state(model, tx, r, seq_len),
                   out_shardings=shardings)
    state = init(jax.random.key(config.train.seed))

  ds = input_pipeline.make_dataset(
      files, global_batch=config.train.global_batch_size,
      num_streams=config.data.num_streams, seq_len=seq_len,
      vocab_size=config.model.vocab_size, mask_prob=config.data.mask_prob,
      max_predictions=config.data.max_predictions_per_seq, seed=config.train.seed,
      process_index=jax.process_index(), process_count=jax.process_count(),
      shuffle_buffer=config.data.shuffle_buffer, first_batch=start)
  batches = ds.as_numpy_iterator()
  batch_sharding = sharding.batch_sharding(mesh, rules)

  writer = metrics.Writer(workdir)
  rng = jax.random.key(config.train.seed + 1)
  num_steps = config.train.num_steps
  pending, last, tick = [], {}, time.time()
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    step_fn = train_step.jit_train_step(
        model, tx, shardings, batch_sharding, sharding.replicated(mesh), lr_fn)
    for step in range(start + 1, num_steps + 1):
      batch = sharding.to_global(next(batches), batch_sharding)
      state, step_metrics = step_fn(state, batch, rng)
      # Metrics stay on device until the log step: no host sync inside the loop.
      pending.append(step_metrics)
      # The first step of a run is logged too: its metrics are the starting point.
      if step % config.train.log_every == 0 or step in (start + 1, num_steps):
        last = metrics.summarize(jax.device_get(pending), time.time() - tick,
                                 config.train.global_batch_size * seq_len)
        writer.write(step, last)
        metrics.log(step, num_steps, last)
        pending, tick = [], time.time()
      if step % config.train.checkpoint_every == 0 or step == num_steps:
        checkpoints.save(mngr, state)
  mngr.wait_until_finished()
  mngr.close()
  writer.close()
  return last
