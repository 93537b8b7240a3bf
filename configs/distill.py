"""Distillation config: `--config configs/distill.py:STUDENT --config.teacher=DIR`.

STUDENT is a pretraining size or preset (configs/pretrain.py): pretraining
distillation, every pretraining field as there, the student's shape in model.* (set
model.num_layers / hidden_size for a shallower or narrower student). Or TASK in
("classification", "tagging"): task distillation, the fine-tuning config
(configs/finetune.py) with the student's pretrained encoder in init_from and a
fine-tuned teacher. Either way, `teacher` and the `distill` group below.
"""

import ml_collections

from bert_jax.configs import finetune, pretrain
from bert_jax.configs.validate import DISTILL_TASKS


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  task = arg in DISTILL_TASKS
  c = finetune.get_config(arg) if task else pretrain.get_config(arg)
  c.unlock()
  # The teacher: pretraining distillation reads anything `from_pretrained` reads
  # that has an MLM head (pretrain workdir, converted Orbax, Hugging Face or Google
  # TF1 directory); task distillation a fine-tuned workdir of the same task, whose
  # labels the student takes. The student must share its vocabulary.
  c.teacher = ""

  c.distill = ml_collections.ConfigDict()
  # Softmax temperature of the soft targets; the KL term is scaled by T^2 (Hinton
  # et al. 2015), so kl_weight means the same at any temperature.
  c.distill.temperature = 2.0
  # Weight of the KL to the teacher's distribution: its MLM distribution at the
  # masked positions (pretraining), its logits (task).
  c.distill.kl_weight = 1.0
  # Weight of the hard loss on the data's labels: MLM (+ NSP/SOP), or the task's.
  c.distill.hard_weight = 1.0
  # Compute and storage dtype of the frozen teacher ("": the student's
  # model.dtype). "bfloat16" halves its memory; it never needs float32 master weights.
  c.distill.teacher_dtype = ""
  if not task:
    # TinyBERT's hidden-state MSE between student layer i and teacher layer
    # (i + 1) * T / S - 1, through a learned projection where widths differ. 0: off.
    c.distill.hidden_weight = 0.0
    # TinyBERT's attention-map MSE on the same layer pairs (attention probabilities;
    # the same head count). Spells attention out, so it costs step time. 0: off.
    c.distill.attention_weight = 0.0
    # DistilBERT's start: student layer i from teacher layer i * T / S (every other
    # one for half the depth), embeddings, pooler and heads copied. Same width only.
    c.distill.init_from_teacher = False
  c.lock()
  return c
