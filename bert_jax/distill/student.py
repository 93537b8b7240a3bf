"""The pretraining student: BERT plus, where its width differs from the teacher's,
the learned projection of TinyBERT's hidden-state loss; and its DistilBERT start
from every other teacher layer."""

import jax
import jax.numpy as jnp

from bert_jax.distill import losses
from bert_jax.errors import InputError
from bert_jax.model import attention, bert as model_lib
from bert_jax.runtime import checkpoints

# Top-level groups copied as they are when the student starts from the teacher:
# everything but the layers (embeddings, pooler, MLM and NSP heads).
SHARED_GROUPS = ("embeddings", "pooler", "mlm_transform", "mlm_layer_norm",
                 "mlm_output_bias", "nsp")


class Student(model_lib.BertForPreTraining):
  """BertForPreTraining, plus `hidden_projection` [H_student, H_teacher] when
  `teacher_width` differs from its own. The projection is a top-level group of its
  own: `from_pretrained` of the workdir reads the plain BERT and leaves it out."""
  teacher_width: int = 0

  def setup(self):
    super().setup()
    if self.teacher_width and self.teacher_width != self.cfg.hidden_size:
      self.hidden_projection = model_lib._dense(  # pylint: disable=protected-access
          self.cfg, (self.cfg.hidden_size, self.teacher_width), ("embed", None),
          "hidden_projection")

  def __call__(self, *args, **kwargs):
    out = super().__call__(*args, **kwargs)
    if self.is_initializing():  # its params are made with the rest
      self.project(out["sequence_output"])
    return out

  def project(self, h):
    """A student hidden state in the teacher's width."""
    return self.hidden_projection(h) if hasattr(self, "hidden_projection") else h


def from_teacher_layers(teacher_params: dict, teacher_cfg, student_cfg) -> dict:
  """The student's params taken from the teacher's (DistilBERT): embeddings, pooler
  and heads as they are, student layer i from teacher layer losses.init_layers[i].
  Needs the same width; returned in the student's layer layout."""
  for key in ("hidden_size", "num_heads", "intermediate_size", "vocab_size",
              "max_position_embeddings", "type_vocab_size"):
    if getattr(teacher_cfg, key) != getattr(student_cfg, key):
      raise InputError(
          f"distill.init_from_teacher needs the teacher's width: its model.{key} is "
          f"{getattr(teacher_cfg, key)}, the student's {getattr(student_cfg, key)}")
  if "layers" in teacher_params:
    teacher_params = model_lib.unstack_layers(teacher_params)
  try:
    chosen = losses.init_layers(student_cfg.num_layers, teacher_cfg.num_layers)
  except ValueError as e:
    raise InputError(f"distill.init_from_teacher: {e}") from None
  params = {k: teacher_params[k] for k in SHARED_GROUPS}
  params.update({f"layer_{i}": teacher_params[f"layer_{t}"] for i, t in enumerate(chosen)})
  if student_cfg.scan_layers:
    params = model_lib.stack_layers(params, student_cfg.num_layers)
  return params


def replace_params(state, params: dict, s):
  """`state` with the groups of `params` put in (sharded like the student's), the
  rest (a projection) as initialised. Shapes are checked."""
  want = {k: s.abstract.params[k] for k in params}
  checkpoints.check_shapes(checkpoints.shapes(params), checkpoints.shapes(want),
                           "the teacher layers for the student")
  # Copies, never the teacher's buffers: the step donates the state and reads the
  # teacher in the same call (device_put from one device keeps its buffer as that
  # device's shard, whatever may_alias says).
  params = jax.device_put(jax.tree.map(lambda x: jnp.array(x, copy=True), params),
                          {k: s.shardings.params[k] for k in params})
  return state.replace(params={**state.params, **params})


def apply_collections(weights) -> list[str]:
  """The collections a forward pass must keep for the losses with weight > 0."""
  return ([model_lib.HIDDEN_STATES] if weights.hidden_weight else []) + (
      [attention.MAPS] if weights.attention_weight else [])

