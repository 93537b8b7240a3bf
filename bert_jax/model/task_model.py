"""Fine-tuning models: the pretrained encoder plus one new linear task head.

The encoder params keep the names they have in `BertForPreTraining` (`embeddings`,
`layer_i` / `layers`, `pooler`), so a pretrained checkpoint's encoder drops into a task
model as it is; only `classifier` is new.
"""

import flax.linen as nn
import jax.numpy as jnp

from bert_jax.model import bert as model_lib

# Top-level param groups restored from a pretrained checkpoint; the rest is the head.
ENCODER_GROUPS = ("embeddings", "layers", "pooler")


def is_encoder(name: str) -> bool:
  """Whether a top-level param name belongs to the encoder (`layer_3` does)."""
  return name in ENCODER_GROUPS or name.startswith("layer_")


class BertWithHead(model_lib.BertEncoder):
  """Encoder + dropout + Dense(num_outputs), on [CLS]'s pooled output (sequence
  classification: logits [B, num_outputs]) or on every token (`per_token`: tagging,
  and span QA with num_outputs=2 for start/end; logits [B, S, num_outputs]).
  Logits are float32 whatever the compute dtype."""
  num_outputs: int = 2
  per_token: bool = False

  def setup(self):
    super().setup()
    self.dropout = nn.Dropout(self.cfg.hidden_dropout)
    self.classifier = model_lib._dense(  # pylint: disable=protected-access
        self.cfg, (self.cfg.hidden_size, self.num_outputs), ("embed", "classes"),
        "classifier")

  def __call__(self, input_ids, token_type_ids=None, attention_mask=None,
               deterministic=True):
    sequence, pooled = self.encode(input_ids, token_type_ids, attention_mask,
                                   deterministic=deterministic)
    h = sequence if self.per_token else pooled
    h = self.dropout(h, deterministic=deterministic)
    return self.classifier(h).astype(jnp.float32)
