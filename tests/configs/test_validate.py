"""configs/validate.py: every rule refuses its bad value with a line naming the field,
and every shipped config passes."""

import pytest

from bert_jax.configs import distill, finetune, pretrain, validate
from bert_jax.errors import InputError


def _changed(c, changes: dict):
  """`c` with group__field=value (or top-level field=value) changes applied."""
  for key, value in changes.items():
    *group, field = key.split("__")
    (c[group[0]] if group else c)[field] = value
  return c


def _pretrain(**changes):
  return _changed(pretrain.get_config("tiny"), changes)


def _finetune(task="classification", **changes):
  return _changed(finetune.get_config(task), changes)


# (config, what the message names); one row per rule of validate.py.
PRETRAIN_RULES = [
    (dict(model__num_layers=0), "model.num_layers=0"),
    (dict(model__hidden_size=0), "model.hidden_size=0"),
    (dict(model__num_heads=0), "model.num_heads=0"),
    (dict(model__intermediate_size=0), "model.intermediate_size=0"),
    (dict(model__max_position_embeddings=0), "model.max_position_embeddings=0"),
    (dict(model__type_vocab_size=0), "model.type_vocab_size=0"),
    (dict(model__num_heads=3), "does not divide model.hidden_size=128"),
    (dict(model__vocab_size=5), "model.vocab_size=5 leaves no room"),
    (dict(model__hidden_dropout=1.0), "model.hidden_dropout=1.0"),
    (dict(model__attention_dropout=-0.1), "model.attention_dropout=-0.1"),
    (dict(model__layer_norm_eps=0.0), "model.layer_norm_eps=0.0"),
    (dict(model__initializer_range=0.0), "model.initializer_range=0.0"),
    (dict(model__dtype="float8"), "model.dtype='float8'"),
    (dict(model__param_dtype="int8"), "model.param_dtype='int8'"),
    (dict(model__remat="some"), "model.remat='some'"),
    (dict(model__position_init="rope"), "model.position_init='rope'"),
    (dict(data__objective="mlm"), "data.objective='mlm'"),
    (dict(data__masking="random"), "data.masking='random'"),
    (dict(data__tokenizer_model_type="word"), "data.tokenizer_model_type='word'"),
    (dict(data__max_seq_length=4), "data.max_seq_length=4 must be at least 5"),
    (dict(data__max_seq_length=1024), "longer than the model's"),
    (dict(data__mask_prob=0.0), "data.mask_prob=0.0"),
    (dict(data__eval_mask_prob=1.0), "data.eval_mask_prob=1.0"),
    (dict(data__max_predictions_per_seq=0), "data.max_predictions_per_seq=0"),
    (dict(data__eval_max_predictions=-1), "data.eval_max_predictions=-1"),
    (dict(data__max_examples_per_row=0), "data.max_examples_per_row=0"),
    (dict(data__num_shards=0), "data.num_shards=0"),
    (dict(data__num_streams=0), "data.num_streams=0"),
    (dict(data__dupe_factor=0), "data.dupe_factor=0"),
    (dict(data__shuffle_buffer=0), "data.shuffle_buffer=0"),
    (dict(data__tokenizer_sentences=0), "data.tokenizer_sentences=0"),
    (dict(data__chunk_documents=0), "data.chunk_documents=0"),
    (dict(data__prepare_workers=0), "data.prepare_workers=0"),
    (dict(data__tokenizer_threads=-1), "data.tokenizer_threads=-1"),
    (dict(data__num_shards=4), "data.num_shards=4 is below data.num_streams=8"),
    (dict(data__short_seq_prob=1.5), "data.short_seq_prob=1.5"),
    (dict(data__max_documents=-1), "data.max_documents=-1"),
    (dict(data__eval_documents=-1), "data.eval_documents=-1"),
    (dict(data__eval_examples=-1), "data.eval_examples=-1"),
    (dict(data__max_documents=50), "data.max_documents=50 leaves nothing to train on"),
    (dict(optimizer__name="sgd"), "optimizer.name='sgd'"),
    (dict(optimizer__learning_rate=0.0), "optimizer.learning_rate=0.0 must be above 0"),
    (dict(optimizer__weight_decay=-1.0), "optimizer.weight_decay=-1.0"),
    (dict(optimizer__b1=1.0), "optimizer.b1=1.0"),
    (dict(optimizer__b2=-0.5), "optimizer.b2=-0.5"),
    (dict(optimizer__eps=0.0), "optimizer.eps=0.0"),
    (dict(optimizer__clip_norm=-1.0), "optimizer.clip_norm=-1.0"),
    (dict(optimizer__warmup_steps=-1), "optimizer.warmup_steps=-1"),
    (dict(optimizer__decay_power=0.0), "optimizer.decay_power=0.0"),
    (dict(train__global_batch_size=0), "train.global_batch_size=0 must be at least 1"),
    (dict(train__global_batch_size=12), "not a multiple of data.num_streams=8"),
    (dict(train__num_steps=0), "train.num_steps=0"),
    (dict(train__time_budget=-5.0), "train.time_budget=-5.0"),
    (dict(train__microbatches=0), "train.microbatches=0 must be at least 1"),
    (dict(train__microbatches=3), "train.microbatches=3 must be at least 1 and divide"),
    (dict(train__target_mlm_accuracy=1.0), "train.target_mlm_accuracy=1.0"),
    (dict(train__liveness_timeout=0.0), "train.liveness_timeout=0.0"),
    (dict(train__log_every=0), "train.log_every=0"),
    (dict(train__checkpoint_every=0), "train.checkpoint_every=0"),
    (dict(train__keep_checkpoints=0), "train.keep_checkpoints=0"),
    (dict(train__eval_every=-1), "train.eval_every=-1"),
    (dict(train__keep_best_checkpoints=-1), "train.keep_best_checkpoints=-1"),
    (dict(train__max_nonfinite_steps=-1), "train.max_nonfinite_steps=-1"),
    (dict(train__profile_steps=(5, 2)), "train.profile_steps=(5, 2)"),
    (dict(mesh__shape=(-1, 1)), "needs 3 sizes"),
    (dict(mesh__shape=(-1, -1, 1)), "at most one -1"),
    (dict(mesh__shape=(0, 1, 1)), "positive sizes"),
]

FINETUNE_RULES = [
    (("classification", dict(data__max_seq_length=2)), "data.max_seq_length=2"),
    (("qa", dict(data__doc_stride=0)), "data.doc_stride=0"),
    (("qa", dict(data__max_query_length=0)), "data.max_query_length=0"),
    (("qa", dict(data__max_answer_length=0)), "data.max_answer_length=0"),
    (("classification", dict(optimizer__name="sgd")), "optimizer.name='sgd'"),
    (("classification", dict(optimizer__learning_rate=-1.0)),
     "optimizer.learning_rate=-1.0 must be 0 (by model size) or more"),
    (("classification", dict(optimizer__warmup_fraction=1.0)), "warmup_fraction=1.0"),
    (("classification", dict(optimizer__layer_decay=0.0)), "optimizer.layer_decay=0.0"),
    (("tagging", dict(train__epochs=-1)), "train.epochs=-1"),
    (("tagging", dict(train__batch_size=0)), "train.batch_size=0"),
    (("tagging", dict(train__eval_batch_size=0)), "train.eval_batch_size=0"),
    (("tagging", dict(train__log_every=0)), "train.log_every=0"),
    (("tagging", dict(mesh__shape=(2, 2))), "needs 3 sizes"),
    (("similarity", dict(similarity__pooling="max")), "similarity.pooling='max'"),
    (("similarity", dict(similarity__temperature=0.0)), "similarity.temperature=0.0"),
    (("similarity", dict(dropout=1.0)), "dropout=1.0"),
    (("classification", dict(dropout=-0.1)), "dropout=-0.1"),
]


# (distill config variant, changes, what the message names).
DISTILL_RULES = [
    ("tiny", dict(distill__temperature=0.0), "distill.temperature=0.0 must be above 0"),
    ("tiny", dict(distill__kl_weight=-1.0), "distill.kl_weight=-1.0"),
    ("tiny", dict(distill__hidden_weight=-1.0), "distill.hidden_weight=-1.0"),
    ("tiny", dict(distill__attention_weight=-1.0), "distill.attention_weight=-1.0"),
    ("classification", dict(distill__hard_weight=-1.0), "distill.hard_weight=-1.0"),
    ("tiny", dict(distill__kl_weight=0.0), "every teacher loss weight is 0"),
    ("tiny", dict(distill__teacher_dtype="int8"), "distill.teacher_dtype='int8'"),
    ("tiny", dict(distill__init_from_teacher=True, _init_from="x"),
     "distill.init_from_teacher and init_from both"),
    ("tagging", dict(_task="qa"), "task='qa': task distillation runs"),
    ("tagging", dict(tagging__crf=True), "tagging.crf: task distillation matches"),
]


@pytest.mark.parametrize("variant,changes,fragment", DISTILL_RULES,
                         ids=[f for _, _, f in DISTILL_RULES])
def test_distill_rule(variant, changes, fragment):
  c = distill.get_config(variant)
  for key, value in changes.items():
    if key.startswith("_"):  # a top-level field
      c[key[1:]] = value
    else:
      group, field = key.split("__")
      c[group][field] = value
  with pytest.raises(InputError) as e:
    validate.check(c)
  assert fragment in str(e.value)


@pytest.mark.parametrize("changes,fragment", PRETRAIN_RULES,
                         ids=[f for _, f in PRETRAIN_RULES])
def test_pretrain_rule(changes, fragment):
  with pytest.raises(InputError, match=None) as e:
    validate.check(_pretrain(**changes))
  assert fragment in str(e.value)


@pytest.mark.parametrize("task_changes,fragment", FINETUNE_RULES,
                         ids=[f for _, f in FINETUNE_RULES])
def test_finetune_rule(task_changes, fragment):
  task, changes = task_changes
  with pytest.raises(InputError) as e:
    validate.check(_finetune(task, **changes))
  assert fragment in str(e.value)


def test_finetune_task_choice():
  c = finetune.get_config("qa")
  c.task = "ner"
  with pytest.raises(InputError, match="task='ner'"):
    validate.check(c)


def test_prepare_leaves_out_how_training_reads_the_shards():
  validate.check(_pretrain(data__num_shards=2), training=False)
  validate.check(_pretrain(train__global_batch_size=12), training=False)


def test_every_shipped_config_passes():
  for name in list(pretrain.SIZES) + list(pretrain.PRESETS):
    validate.check(pretrain.get_config(name))
  for task in finetune.TASKS:
    validate.check(finetune.get_config(task))
  for name in ("tiny", "demo") + validate.DISTILL_TASKS:
    validate.check(distill.get_config(name))


def test_choices_match_the_code_that_uses_them():
  # pylint: disable=g-import-not-at-top
  from bert_jax.data import pairs, tokenizer
  from bert_jax.model import bert, task_model
  assert validate.NUM_SPECIAL == tokenizer.NUM_SPECIAL
  assert set(validate.OBJECTIVES) == set(pairs.OBJECTIVES)
  assert set(validate.REMAT) == set(bert.REMAT_POLICIES)
  assert set(validate.POOLINGS) == set(task_model.POOLINGS)
