"""Pretraining distillation: the pretraining loop (data, mesh, LAMB, Orbax,
preemption, resume) with a student model and a loss that also matches a frozen
teacher run in the same jitted step.

Loss = hard_weight * (MLM + NSP) + kl_weight * T^2 KL(teacher || student) at the
masked positions + hidden_weight * hidden-state MSE + attention_weight *
attention-map MSE (TinyBERT), on the layer pairs of losses.layer_map.
"""

import functools
import logging

import jax

from bert_jax.configs import validate
from bert_jax.data import tokenizer as tokenizer_lib
from bert_jax.distill import losses, student as student_lib, teacher as teacher_lib
from bert_jax.errors import InputError
from bert_jax.interop import pretrained
from bert_jax.model import attention, bert as model_lib
from bert_jax.pretrain import loop as pretrain_loop, step as pretrain_step
from bert_jax.runtime import optimizer, setup as setup_lib

log = logging.getLogger(__name__)


def distill_totals(batch) -> dict:
  """Pretraining's totals and the batch's real tokens (what the hidden-state and
  attention losses divide by)."""
  return {**pretrain_step.totals(batch),
          "tokens": jax.numpy.maximum(batch["attention_mask"].sum(), 1.0)}


def _forward(model, params, batch, rng, collections):
  if not collections:
    return pretrain_step.apply_model(model, params, batch, rng), {}
  return pretrain_step.apply_model(model, params, batch, rng, mutable=collections)


def loss(params, batch, rng, totals=None, *, frozen, student, teacher, weights):
  """The runtime's loss_fn for pretraining distillation; `frozen`: the teacher's
  params (no gradient flows into them)."""
  totals = distill_totals(batch) if totals is None else totals
  collections = student_lib.apply_collections(weights)
  t_out, t_kept = _forward(teacher, frozen, batch, None, collections)
  s_out, s_kept = _forward(student, params, batch, rng, collections)
  hard, metrics = pretrain_step.losses(s_out, batch, totals)
  kl = losses.soft_kl(s_out["mlm_logits"], t_out["mlm_logits"], weights.temperature,
                      batch["masked_weights"], totals["masked"])
  total = weights.hard_weight * hard + weights.kl_weight * kl
  metrics = {**metrics, "hard_loss": hard, "kl_loss": kl}
  tokens = batch["attention_mask"].astype(jax.numpy.float32)
  pairs = losses.layer_map(student.cfg.num_layers, teacher.cfg.num_layers)
  if weights.hidden_weight:
    s_h = model_lib.layer_outputs(s_kept[model_lib.HIDDEN_STATES])
    t_h = model_lib.layer_outputs(t_kept[model_lib.HIDDEN_STATES])
    s_h = [student.apply({"params": params}, h, method="project") for h in s_h]
    hidden = losses.hidden_mse(s_h, [t_h[t] for t in pairs], tokens, totals["tokens"])
    total, metrics["hidden_loss"] = total + weights.hidden_weight * hidden, hidden
  if weights.attention_weight:
    s_a = model_lib.layer_outputs(s_kept[attention.MAPS])
    t_a = model_lib.layer_outputs(t_kept[attention.MAPS])
    att = losses.attention_mse(s_a, [t_a[t] for t in pairs], tokens, totals["tokens"])
    total, metrics["attention_loss"] = total + weights.attention_weight * att, att
  metrics["loss"] = total
  return total, metrics


def setup(config, teacher_model) -> setup_lib.Setup:
  """Pretraining's setup with the student model, the distillation loss and the
  frozen teacher's shardings."""
  validate.check(config)
  cfg = model_lib.BertConfig.from_dict(config.model)
  d = config.distill
  student = student_lib.Student(
      cfg, teacher_width=teacher_model.cfg.hidden_size if d.hidden_weight else 0)
  tx, lr_fn = optimizer.make(config.optimizer, config.train.num_steps,
                             config.train.time_budget)
  data = config.data
  return setup_lib.build(
      config.mesh, student, tx, lr_fn,
      functools.partial(loss, student=student, teacher=teacher_model, weights=d),
      seq_len=data.max_seq_length,
      batch_sizes={"train.global_batch_size": config.train.global_batch_size},
      microbatches=config.train.microbatches, totals_fn=distill_totals,
      frozen_shardings=teacher_lib.shardings(teacher_model, data.max_seq_length),
      batch_spec=lambda sh: pretrain_step.abstract_batch(
          config.train.global_batch_size, data.max_seq_length,
          data.max_predictions_per_seq, sh, data.max_examples_per_row,
          timed=config.train.time_budget > 0))


def load_teacher(config, workdir: str):
  """(teacher model in distill.teacher_dtype, its params as read, its tokenizer),
  checked: it has an MLM head, the student's layers map onto its own, and the
  student shares its vocabulary (with any tokenizer the workdir already holds)."""
  path = config.teacher
  if not path:
    raise InputError("teacher is required: a pretrain workdir, a converted Orbax dir, "
                     "or a Hugging Face / Google TF1 checkpoint directory")
  loaded = pretrained.load(path, f"teacher={path}")
  if not isinstance(loaded.model, model_lib.BertForPreTraining):
    raise InputError(
        f"teacher={path} is a fine-tuned workdir, whose MLM head is gone: pretraining "
        f"distillation needs the teacher's MLM distribution (use it for task "
        f"distillation: configs/distill.py:classification or :tagging)")
  cfg = loaded.model.cfg
  d = config.distill
  if d.hidden_weight or d.attention_weight:
    try:
      losses.layer_map(config.model.num_layers, cfg.num_layers)
    except ValueError as e:
      raise InputError(f"distill.hidden_weight / attention_weight: {e}") from None
  if d.attention_weight and cfg.num_heads != config.model.num_heads:
    raise InputError(f"distill.attention_weight compares attention maps head by head: the "
                     f"teacher has {cfg.num_heads} heads, the student {config.model.num_heads}")
  teacher_lib.check_vocabulary(cfg, loaded.tokenizer, config.model.vocab_size,
                               workdir, path)
  model = teacher_lib.frozen_model(loaded.model, d.teacher_dtype or config.model.dtype)
  return model, loaded.params, loaded.tokenizer


def run(config, workdir: str) -> dict:
  """Distils config.teacher into the student of config.model; returns the last
  logged metrics. Resumes like pretraining (the teacher is read again)."""
  validate.check(config)
  teacher_model, teacher_params, _ = load_teacher(config, workdir)
  s = setup(config, teacher_model)
  frozen = teacher_lib.place(teacher_params, teacher_model, s, config.data.max_seq_length)

  # The student's start (DistilBERT): the teacher's arrays as read, before the cast.
  start = (student_lib.from_teacher_layers(teacher_params, teacher_model.cfg, s.model.cfg)
           if config.distill.init_from_teacher else None)
  del teacher_params

  def fresh_state():
    state = s.init(config.train.seed)
    if start is None:
      return state
    log.info("student layers from teacher layers %s",
             losses.init_layers(config.model.num_layers, teacher_model.cfg.num_layers))
    return student_lib.replace_params(state, start, s)

  log.info("teacher %s: %d parameters, %s", config.teacher,
           model_lib.count_params(frozen), teacher_model.cfg.dtype)
  if not tokenizer_lib.find(workdir) and jax.process_index() == 0:
    # Always (prepared data too): the student's workdir is fine-tuned from later.
    tokenizer_lib.copy_into(tokenizer_lib.find(config.teacher), workdir)
  return pretrain_loop.run(config, workdir, setup=s, frozen=frozen,
                           fresh_state=fresh_state)
