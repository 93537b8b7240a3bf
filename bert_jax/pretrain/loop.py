"""The pretraining loop: data, sharded state, restore, steps, metrics, checkpoints.

Resume order: the latest checkpoint in WORKDIR (params, optimizer state, step and the
data position, so the run continues bit for bit), else config.init_from, else a fresh
init. Running the same command again continues where the last run stopped; SIGTERM
or a preemption notice saves at the current step and exits cleanly.
"""

import dataclasses
import json
import logging
import os
import time

from etils import epath
import jax

from bert_jax.data import input_pipeline, prepare, tokenizer
from bert_jax.errors import InputError
from bert_jax.interop import pretrained
from bert_jax.model import bert as model_lib
from bert_jax.pretrain import (budget as budget_lib, diagnostics, evaluate, references,
                               resume, step as pretrain_step)
from bert_jax.runtime import (checkpoints, flops, liveness as liveness_lib, nonfinite,
                              optimizer, preemption, profiler, setup as setup_lib,
                              state as state_lib, writers)

log = logging.getLogger(__name__)


def ensure_data(config, workdir: str) -> tuple[list[str], dict]:
  """Prepared shard files and their stats, running `prepare` (every process its share)
  first if there are none."""
  data_dir = prepare.data_dir(config, workdir)
  stats_file = os.path.join(data_dir, prepare.STATS_FILE)
  if not epath.Path(stats_file).exists():
    if config.data.prepared_dir:
      raise InputError(f"data.prepared_dir={data_dir} holds no prepared data")
    prepare.run(config, workdir)
  stats = json.loads(epath.Path(stats_file).read_text())
  prepared_len = stats["max_seq_length"]
  if prepared_len > config.data.max_seq_length:
    # Cutting prepared pairs would drop their final [SEP] and part of segment B.
    raise InputError(f"{data_dir} was prepared for max_seq_length={prepared_len}, longer "
                     f"than data.max_seq_length={config.data.max_seq_length}")
  if stats["max_examples_per_row"] > config.data.max_examples_per_row:
    raise InputError(f"{data_dir} packs up to {stats['max_examples_per_row']} examples "
                     f"per row; set data.max_examples_per_row to at least that")
  if stats["vocab_size"] > config.model.vocab_size:
    raise InputError(f"{data_dir} was tokenized with {stats['vocab_size']} tokens, more "
                     f"than model.vocab_size={config.model.vocab_size}")
  return prepare.shard_files(data_dir), stats


def special_ids(stats: dict) -> tokenizer.SpecialIds:
  """The special ids the shards were written with."""
  return tokenizer.SpecialIds(**stats["special_ids"])


def _adopt_tokenizer(config, workdir: str) -> None:
  """Continued pretraining must tokenize as the source did: copy its tokenizer (our
  SentencePiece model, or the WordPiece vocab.txt of an imported Google/HF
  checkpoint) into a workdir that has none yet; `prepare` then uses it."""
  source = config.init_from
  if not epath.Path(source).exists():
    raise InputError(f"init_from={source} does not exist")
  if tokenizer.find(workdir) or config.data.prepared_dir:
    return
  src = tokenizer.find(source)
  if src is None:
    raise InputError(
        f"init_from={source} has no tokenizer (spm.model or vocab.txt), and a new one "
        f"would not match its embeddings. Put the matching one in {workdir}/tokenizer/ "
        f"or set data.prepared_dir to data tokenized with its vocabulary")
  if jax.process_index() == 0:
    tokenizer.copy_into(src, workdir)
    log.info("using the tokenizer of %s: %s", source, src)


def _init_from(config, target, s: setup_lib.Setup) -> state_lib.TrainState:
  """The start state for config.init_from (the workdir has no checkpoint yet).

  A pretrain workdir whose checkpoint has optimizer state, with init_from_optimizer
  (phase 1 -> phase 2): params and optimizer state restored onto this mesh, step 0,
  the new schedule starting at 0. Anything else `from_pretrained` reads: its params,
  a fresh optimizer.
  """
  path = config.init_from
  if config.init_from_optimizer and epath.Path(
      os.path.join(path, checkpoints.CONFIG_FILE)).exists():
    with checkpoints.manager(path, async_save=False) as source:
      step = source.latest_step()
      if step is not None and source.item_metadata(step).get("opt_state") is not None:
        state, _ = checkpoints.restore(source, step, target)
        log.info("initialising params and optimizer state from %s (step %d); the "
                 "learning-rate schedule starts again", path, step)
        return state.replace(step=jax.numpy.zeros((), jax.numpy.int32),
                             opt_state=optimizer.restart_schedule(state.opt_state))
  params = pretrained.from_pretrained(path).params
  # Scanned and unscanned layer layouts convert into each other.
  if "layers" in s.abstract.params and "layers" not in params:
    params = model_lib.stack_layers(params, len(
        [k for k in params if k.startswith("layer_")]))
  elif "layers" not in s.abstract.params and "layers" in params:
    params = model_lib.unstack_layers(params)
  checkpoints.check_shapes(
      checkpoints.shapes(params), checkpoints.shapes(s.abstract.params),
      f"init_from={path}")
  log.info("initialising params from %s (fresh optimizer state)", path)
  fresh = jax.jit(lambda p: state_lib.TrainState(
      step=jax.numpy.zeros((), jax.numpy.int32), params=p, opt_state=s.tx.init(p)),
                  in_shardings=(s.shardings.params,), out_shardings=s.shardings)
  return fresh(jax.device_put(params, s.shardings.params))


def run(config, workdir: str, setup: setup_lib.Setup | None = None, frozen=None,
        fresh_state=None) -> dict:
  """Pretrains to config.train.num_steps; returns the last logged metrics.

  Distillation runs this loop with its own `setup` (student model and loss), the
  teacher's params as `frozen` (the step's fourth argument) and `fresh_state()`
  for a workdir without a checkpoint."""
  input_pipeline.keep_tensorflow_on_cpu()
  s = setup or pretrain_step.setup(config)  # checks the config first
  # Everything that can refuse the command runs before config.json is (re)written.
  resume.check(config, workdir, prepare.data_dir(config, workdir))
  if config.init_from:
    _adopt_tokenizer(config, workdir)
  files, stats = ensure_data(config, workdir)
  checkpoints.check_writable(workdir, s.abstract)
  if jax.process_index() == 0:
    checkpoints.write_config(workdir, config)
  log.info("model %s: %d parameters; mesh %s", config.model.size,
           model_lib.count_params(s.abstract.params), dict(s.mesh.shape))

  mngr = checkpoints.manager(workdir, config.train.keep_checkpoints,
                             keep_best=config.train.keep_best_checkpoints,
                             best_metric="eval_loss", best_mode="min")
  state, start, first_batch, seconds = _restore_or_init(config, workdir, mngr, s,
                                                         fresh_state)
  step_args = () if frozen is None else (frozen,)
  eval_path = _eval_path(config, workdir)
  eval_set = eval_path and _eval_set(config, eval_path, stats, s)

  ds = dataset(config, files, stats, first_batch)
  # The next batches are copied to the devices while the current step runs.
  batches = input_pipeline.prefetch_to_device(
      input_pipeline.numpy_batches(ds, prepare.data_dir(config, workdir)), s.batch_sharding)

  logger = writers.Logger(
      workdir, config.train.num_steps, **throughput(config, s),
      time_budget=config.train.time_budget,
      hide=("nsp_accuracy",) if stats["objective"] == "none" else ())
  if eval_path and start == 0:
    # Logged once per run, as step 0: what counting alone gets right. Every process
    # counts (the same host work), so none waits in a collective for another.
    refs = _references(config, files, stats, eval_path)
    logger.write_eval(0, refs)  # process 0 writes
  trace = profiler.Trace(workdir, config.train.profile_steps, config.train.num_steps)
  stop = preemption.StopRequest()
  streak = nonfinite.Streak(config.train.max_nonfinite_steps)
  rng = jax.random.key(config.train.seed + 1)
  num_steps = config.train.num_steps
  budget = budget_lib.Budget(config.train.time_budget, seconds,
                             config.train.global_batch_size // jax.process_count())
  target, started = config.train.target_mlm_accuracy, time.perf_counter()
  position = lambda step, step_metrics: data_position(
      config, step - start + first_batch, budget.seconds(step_metrics))
  liveness = liveness_lib.Liveness(config.train.liveness_timeout)
  try:
    with s.context():
      for step in range(start + 1, num_steps + 1):
        batch = budget.stamp(next(batches), s)
        if step == start + 1 or step % config.train.log_every == 0:
          liveness.check(step)  # before the step's collectives: names a hung process
        trace.before(step)
        state, step_metrics = s.step_fn(state, batch, rng, *step_args)
        trace.after(step, step_metrics)
        last = step == num_steps or budget.spent(step_metrics)
        # The first step of a run is logged too: its metrics are the starting point.
        logger.add(step, step_metrics, log=(step % config.train.log_every == 0
                                            or step == start + 1 or last))
        streak.add(step, step_metrics["skipped"])
        stopping = stop(step)
        saving = stopping or step % config.train.checkpoint_every == 0 or last
        eval_metrics, reached = None, False
        with budget.paused():  # evaluation and checkpoint waits are not training time
          # With keep_best_checkpoints every checkpoint is evaluated, to be ranked.
          if eval_set and (step % config.train.eval_every == 0 or last
                           or (saving and config.train.keep_best_checkpoints)):
            eval_metrics = eval_set(state.params)
            # When, in training time (for accuracy-against-time curves).
            timing = {"train_seconds": budget.now()}
            # The same replicated value on every process: all stop at this step.
            reached = target > 0 and eval_metrics["eval_mlm_accuracy"] >= target
            if reached:  # MLPerf's time to train counts evaluation too: both given
              timing["wall_seconds_to_target"] = time.perf_counter() - started
            logger.write_eval(step, {**eval_metrics, **timing})
          if saving or reached:
            checkpoints.save(mngr, state, position(step, step_metrics),
                             metrics=eval_metrics,
                             force=stopping or reached)
        if reached:
          log.info("reached train.target_mlm_accuracy=%s at step %d: eval_mlm_accuracy "
                   "%.4f after %.0f s of training (%.0f s with evaluation)", target,
                   step, eval_metrics["eval_mlm_accuracy"], timing["train_seconds"],
                   timing["wall_seconds_to_target"])
          break
        if stopping:
          log.warning("stopped at step %d (%s); checkpoint saved", step, stop.signal)
          break
        if last:
          break
      streak.finish()
  except jax.errors.JaxRuntimeError as e:  # compiling or running the step
    if (explained := diagnostics.explain(e, config, liveness)) is None:
      raise
    raise explained from e
  finally:
    stop.close()
    last = logger.close()
    checkpoints.wait(mngr)
    mngr.close()
  return last


def dataset(config, files: list[str], stats: dict, first_batch: int = 0):
  """This process's part of the pretraining batches, from batch `first_batch` on."""
  return input_pipeline.make_dataset(
      files, global_batch=config.train.global_batch_size,
      num_streams=config.data.num_streams, seq_len=config.data.max_seq_length,
      # Random replacements come from the tokenizer's ids, not the (maybe larger,
      # padded) embedding table.
      vocab_size=stats["vocab_size"], mask_prob=config.data.mask_prob,
      max_predictions=config.data.max_predictions_per_seq, seed=config.train.seed,
      process_index=jax.process_index(), process_count=jax.process_count(),
      shuffle_buffer=config.data.shuffle_buffer, first_batch=first_batch,
      special=special_ids(stats), sizes=stats["shard_sizes"],
      max_per_row=config.data.max_examples_per_row,
      nsp_weight=0.0 if stats["objective"] == "none" else 1.0,
      static_masks=stats["masking"] == "static")


def _eval_path(config, workdir: str) -> str | None:
  """The held-out set's file, or None when evaluation is off or nothing was held out."""
  path = os.path.join(prepare.data_dir(config, workdir), prepare.EVAL_FILE)
  if not config.train.eval_every or not epath.Path(path).exists():
    if config.train.eval_every:
      log.info("no %s: no evaluation (prepare with data.eval_documents > 0)", path)
    return None
  return path


def _eval_args(config, stats: dict) -> dict:
  """How the held-out set is read and masked (the same for the model and the count
  references, so both score the same positions)."""
  d = config.data
  return dict(seq_len=d.max_seq_length, max_examples=d.eval_examples,
              vocab_size=stats["vocab_size"], mask_prob=d.eval_mask_prob or d.mask_prob,
              max_predictions=d.eval_max_predictions or d.max_predictions_per_seq,
              special=special_ids(stats))


def _eval_set(config, path: str, stats: dict, s: setup_lib.Setup):
  """The held-out set (see evaluate.py)."""
  eval_set = evaluate.EvalSet.create(
      path, s.model, s.shardings.params, s.batch_sharding,
      with_nsp=stats["objective"] != "none",
      global_batch=config.train.global_batch_size, process_index=jax.process_index(),
      process_count=jax.process_count(), **_eval_args(config, stats))
  log.info("evaluating every %d steps on %d held-out examples", config.train.eval_every,
           eval_set.num_examples)
  return eval_set


# Training rows counted for the references: ~25M tokens at seq 128 is plenty for
# bigram statistics, and bounds the start-up cost on a large corpus.
REFERENCE_ROWS = 200_000


def _references(config, files: list[str], stats: dict, path: str) -> dict:
  """The count-based references' accuracy on the held-out masked positions (see
  references.py), from (up to REFERENCE_ROWS) training rows. Host work only."""
  special = special_ids(stats)
  counts = references.count(input_pipeline.read_input_ids(files, REFERENCE_ROWS),
                            stats["vocab_size"], special.pad)
  predictor = references.Predictor(counts, dataclasses.astuple(special))
  batches = input_pipeline.eval_batches(path, evaluate.MASK_SEED, global_batch=1024,
                                        **_eval_args(config, stats))
  return references.accuracies(predictor, batches, special.mask, special.pad)


def data_position(config, batches: int, train_seconds: float = 0.0) -> dict:
  """What a checkpoint records of the input: examples consumed per stream (every
  batch is a pure function of it), and what that count refers to; and the training
  seconds so far (a time budget's schedule continues from them)."""
  return {"stream_examples": batches * (config.train.global_batch_size
                                        // config.data.num_streams),
          "num_streams": config.data.num_streams,
          "data_dir": os.path.abspath(config.data.prepared_dir) if config.data.prepared_dir
                      else "WORKDIR/data",
          "train_seconds": float(train_seconds)}


def _restore_or_init(config, workdir: str, mngr, s: setup_lib.Setup, fresh_state=None):
  """(state, start step, batches already read, training seconds so far). Resume
  order: this workdir's latest checkpoint (its data position included), else
  config.init_from, else `fresh_state()` or a fresh init."""
  target = s.restore_target()
  start = mngr.latest_step()
  if start is None:
    if config.init_from:
      state = _init_from(config, target, s)
    else:
      state = fresh_state() if fresh_state else s.init(config.train.seed)
    return state, 0, 0, 0.0
  log.info("resuming from step %d in %s", start, workdir)
  state, position = checkpoints.restore(mngr, start, target)
  seconds = position.get("train_seconds", 0.0)
  want = data_position(config, 0)
  per_stream = config.train.global_batch_size // config.data.num_streams
  if position["num_streams"] != want["num_streams"]:
    raise InputError(f"the checkpoint at step {start} read the data as "
                     f"{position['num_streams']} streams, the config asks for "
                     f"{want['num_streams']} (data.num_streams)")
  if position["data_dir"] != want["data_dir"]:
    log.warning("data changed since step %d (%s -> %s): reading it from the start",
                start, position["data_dir"], want["data_dir"])
    return state, start, 0, seconds
  if position["stream_examples"] % per_stream:
    raise InputError(f"the checkpoint at step {start} stopped {position['stream_examples']} "
                     f"examples into each stream, not a whole number of batches of "
                     f"{per_stream} per stream (train.global_batch_size changed)")
  return state, start, position["stream_examples"] // per_stream, seconds


def throughput(config, s: setup_lib.Setup) -> dict:
  """Tokens and model FLOPs of one step, and the devices' peak FLOP/s (for MFU)."""
  seq_len = config.data.max_seq_length
  batch = config.train.global_batch_size
  per_token = flops.train_flops_per_token(
      s.model.cfg, seq_len, config.data.max_predictions_per_seq)
  peak, _ = flops.peak_flops(s.mesh.devices.flat, config.model.dtype)
  return {"tokens_per_step": batch * seq_len, "flops_per_step": per_token * batch * seq_len,
          "peak_flops": peak}
