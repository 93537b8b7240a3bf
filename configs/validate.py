"""The one check of a config, run by every command before it writes anything: ranges,
known choices and the rules between fields. The ConfigDict already enforces types
(`--config.train.num_steps=abc` fails while parsing); what it cannot know is here.

`check(config)` raises one InputError naming the first broken rule, with the field
names as a user types them on the command line.
"""

import itertools

from bert_jax.configs.finetune import TASKS
from bert_jax.errors import InputError

# [PAD] [UNK] [CLS] [SEP] [MASK] (data/tokenizer.py's NUM_SPECIAL; a test keeps them equal).
NUM_SPECIAL = 5
# Fewest tokens of an example: [CLS] A [SEP] B [SEP] with A and B of one token.
MIN_SEQ_LENGTH = 5

OBJECTIVES = ("nsp", "sop", "none")
MASKING = ("dynamic", "static")
SPM_MODEL_TYPES = ("unigram", "bpe", "char")
OPTIMIZERS = ("lamb", "adamw")
DTYPES = ("float32", "bfloat16", "float16")
REMAT = ("none", "full", "dots_saveable")
POOLINGS = ("cls", "mean")
POSITION_INITS = ("normal", "sinusoidal")
DISTILL_TASKS = ("classification", "tagging")


def _choice(key: str, value, choices) -> tuple:
  return value in choices, f"{key}={value!r}; choose one of {', '.join(choices)}"


def _mesh(mesh):
  shape = tuple(mesh.shape)
  yield (len(shape) == 3, f"mesh.shape={shape} needs 3 sizes (data, fsdp, tensor)")
  yield (all(isinstance(s, int) and (s >= 1 or s == -1) for s in shape)
         and shape.count(-1) <= 1,
         f"mesh.shape={shape}: positive sizes and at most one -1 (the rest)")


def _optimizer(o, learning_rate_zero_ok: bool):
  yield _choice("optimizer.name", o.name, OPTIMIZERS)
  lr_ok = o.learning_rate >= 0 if learning_rate_zero_ok else o.learning_rate > 0
  yield (lr_ok, f"optimizer.learning_rate={o.learning_rate} must be "
                + ("0 (by model size) or more" if learning_rate_zero_ok else "above 0"))
  yield o.weight_decay >= 0, f"optimizer.weight_decay={o.weight_decay} must be 0 or more"
  for name in ("b1", "b2"):
    value = o[name]
    yield 0 <= value < 1, f"optimizer.{name}={value} must be in [0, 1)"
  yield o.eps > 0, f"optimizer.eps={o.eps} must be above 0"
  yield o.clip_norm >= 0, f"optimizer.clip_norm={o.clip_norm} must be 0 (off) or more"


def _pretrain(c, training: bool):
  m, d, o, t = c.model, c.data, c.optimizer, c.train
  for key in ("num_layers", "hidden_size", "num_heads", "intermediate_size",
              "max_position_embeddings", "type_vocab_size"):
    yield m[key] >= 1, f"model.{key}={m[key]} must be at least 1"
  yield (m.hidden_size % m.num_heads == 0,
         f"model.num_heads={m.num_heads} does not divide model.hidden_size={m.hidden_size}")
  yield (m.vocab_size > NUM_SPECIAL,
         f"model.vocab_size={m.vocab_size} leaves no room beside the {NUM_SPECIAL} "
         f"special tokens")
  for key in ("hidden_dropout", "attention_dropout"):
    yield 0 <= m[key] < 1, f"model.{key}={m[key]} must be in [0, 1)"
  yield m.layer_norm_eps > 0, f"model.layer_norm_eps={m.layer_norm_eps} must be above 0"
  yield m.initializer_range > 0, f"model.initializer_range={m.initializer_range} must be above 0"
  yield _choice("model.dtype", m.dtype, DTYPES)
  yield _choice("model.param_dtype", m.param_dtype, DTYPES)
  yield _choice("model.remat", m.remat, REMAT)
  yield _choice("model.position_init", m.position_init, POSITION_INITS)

  yield _choice("data.objective", d.objective, OBJECTIVES)
  yield _choice("data.masking", d.masking, MASKING)
  yield _choice("data.tokenizer_model_type", d.tokenizer_model_type, SPM_MODEL_TYPES)
  yield (d.max_seq_length >= MIN_SEQ_LENGTH,
         f"data.max_seq_length={d.max_seq_length} must be at least {MIN_SEQ_LENGTH}")
  yield (d.max_seq_length <= m.max_position_embeddings,
         f"data.max_seq_length={d.max_seq_length} is longer than the model's "
         f"model.max_position_embeddings={m.max_position_embeddings}")
  yield 0 < d.mask_prob < 1, f"data.mask_prob={d.mask_prob} must be in (0, 1)"
  yield (0 <= d.eval_mask_prob < 1,
         f"data.eval_mask_prob={d.eval_mask_prob} must be in (0, 1), or 0 (as data.mask_prob)")
  yield (d.max_predictions_per_seq >= 1,
         f"data.max_predictions_per_seq={d.max_predictions_per_seq} must be at least 1")
  yield (d.eval_max_predictions >= 0,
         f"data.eval_max_predictions={d.eval_max_predictions} must be 0 (as "
         f"data.max_predictions_per_seq) or more")
  for key in ("max_examples_per_row", "num_shards", "num_streams", "dupe_factor",
              "shuffle_buffer", "tokenizer_sentences", "chunk_documents",
              "prepare_workers"):
    yield d[key] >= 1, f"data.{key}={d[key]} must be at least 1"
  if training:  # how the shards are read, not how they are written
    yield (d.num_shards >= d.num_streams,
           f"data.num_shards={d.num_shards} is below data.num_streams={d.num_streams}: "
           f"every stream reads at least one shard")
  yield 0 <= d.short_seq_prob <= 1, f"data.short_seq_prob={d.short_seq_prob} must be in [0, 1]"
  for key in ("max_documents", "eval_documents", "eval_examples", "tokenizer_threads"):
    yield d[key] >= 0, f"data.{key}={d[key]} must be 0 or more"
  yield (not d.max_documents or d.max_documents > d.eval_documents,
         f"data.max_documents={d.max_documents} leaves nothing to train on after the "
         f"data.eval_documents={d.eval_documents} held out for evaluation")

  yield from _optimizer(o, learning_rate_zero_ok=False)
  yield o.warmup_steps >= 0, f"optimizer.warmup_steps={o.warmup_steps} must be 0 or more"
  yield o.decay_power > 0, f"optimizer.decay_power={o.decay_power} must be above 0"

  yield (t.global_batch_size >= 1,
         f"train.global_batch_size={t.global_batch_size} must be at least 1")
  if training:
    yield (t.global_batch_size % d.num_streams == 0,
           f"train.global_batch_size={t.global_batch_size} is not a multiple of "
           f"data.num_streams={d.num_streams}")
  yield (t.microbatches >= 1 and t.global_batch_size % t.microbatches == 0,
         f"train.microbatches={t.microbatches} must be at least 1 and divide "
         f"train.global_batch_size={t.global_batch_size}")
  yield t.num_steps >= 1, f"train.num_steps={t.num_steps} must be at least 1"
  yield (t.liveness_timeout > 0,
         f"train.liveness_timeout={t.liveness_timeout} must be above 0 (seconds)")
  yield (0 <= t.target_mlm_accuracy < 1,
         f"train.target_mlm_accuracy={t.target_mlm_accuracy} must be in [0, 1) (0: off)")
  yield (t.time_budget >= 0,
         f"train.time_budget={t.time_budget}: seconds of training, or 0 for none")
  for key in ("log_every", "checkpoint_every", "keep_checkpoints"):
    yield t[key] >= 1, f"train.{key}={t[key]} must be at least 1"
  for key in ("eval_every", "keep_best_checkpoints", "max_nonfinite_steps"):
    yield t[key] >= 0, f"train.{key}={t[key]} must be 0 (off) or more"
  profile = tuple(t.profile_steps)
  yield (not profile or (len(profile) == 2 and 1 <= profile[0] <= profile[1]),
         f"train.profile_steps={profile}: (FIRST, LAST) with 1 <= FIRST <= LAST, or ()")
  yield from _mesh(c.mesh)


def _finetune(c):
  d, t = c.data, c.train
  yield _choice("task", c.task, TASKS)
  yield (d.max_seq_length >= MIN_SEQ_LENGTH,
         f"data.max_seq_length={d.max_seq_length} must be at least {MIN_SEQ_LENGTH}")
  for key in ("doc_stride", "max_query_length", "max_answer_length"):
    yield d[key] >= 1, f"data.{key}={d[key]} must be at least 1"
  yield from _optimizer(c.optimizer, learning_rate_zero_ok=True)
  w = c.optimizer.warmup_fraction
  yield 0 <= w < 1, f"optimizer.warmup_fraction={w} must be in [0, 1)"
  d = c.optimizer.layer_decay
  yield 0 < d <= 1, f"optimizer.layer_decay={d} must be in (0, 1]"
  yield t.epochs >= 0, f"train.epochs={t.epochs} must be 0 (by model size) or more"
  yield 0 <= c.dropout < 1, f"dropout={c.dropout} must be in [0, 1)"
  for key in ("batch_size", "eval_batch_size", "log_every"):
    yield t[key] >= 1, f"train.{key}={t[key]} must be at least 1"
  if "similarity" in c:
    s = c.similarity
    yield _choice("similarity.pooling", s.pooling, POOLINGS)
    yield s.temperature > 0, f"similarity.temperature={s.temperature} must be above 0"
  yield from _mesh(c.mesh)


def _distill(c):
  d = c.distill
  if "task" in c:
    yield (c.task in DISTILL_TASKS, f"task={c.task!r}: task distillation runs "
           f"{', '.join(DISTILL_TASKS)} (soft targets per row or per token)")
    if "tagging" in c:
      yield (not c.tagging.crf, "tagging.crf: task distillation matches per-token tag "
             "distributions, which a CRF's potentials are not")
  yield d.temperature > 0, f"distill.temperature={d.temperature} must be above 0"
  weights = [k for k in ("kl_weight", "hard_weight", "hidden_weight", "attention_weight")
             if k in d]
  for key in weights:
    yield d[key] >= 0, f"distill.{key}={d[key]} must be 0 or more"
  yield (d.kl_weight > 0 or any(d[k] > 0 for k in weights if k != "hard_weight"),
         "distill: every teacher loss weight is 0 (kl_weight, hidden_weight, "
         "attention_weight): that is training without a teacher")
  yield (d.teacher_dtype in ("",) + DTYPES,
         f"distill.teacher_dtype={d.teacher_dtype!r}; choose one of "
         f"{', '.join(DTYPES)}, or '' (the student's)")
  if "init_from_teacher" in d:
    yield (not (d.init_from_teacher and c.init_from),
           "distill.init_from_teacher and init_from both say where the student starts: "
           "set one")


def check(config, training: bool = True) -> None:
  """Raises InputError for the first rule `config` (pretraining or fine-tuning) breaks.
  `training=False` (prepare) leaves out the rules on how training reads the shards."""
  rules = _finetune(config) if "task" in config else _pretrain(config, training)
  if "distill" in config:
    rules = itertools.chain(rules, _distill(config))
  for ok, message in rules:
    if not ok:
      raise InputError(message)
