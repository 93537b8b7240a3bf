"""Fine-tuning models: the pretrained encoder plus one new linear task head, or the
encoder alone as a sentence embedder (`BertEmbedder`, for contrastive training).

The encoder params keep the names they have in `BertForPreTraining` (`embeddings`,
`layer_i` / `layers`, `pooler`), so a pretrained checkpoint's encoder drops into a task
model as it is; only `classifier` is new.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from bert_jax.model import bert as model_lib

# Top-level param groups restored from a pretrained checkpoint; the rest is the head.
ENCODER_GROUPS = ("embeddings", "layers", "pooler")
POOLINGS = ("cls", "mean")


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


class BertCRFTagger(BertWithHead):
  """A linear-chain CRF tagger (Lample et al. 2016; BERT-CRF): the per-token head's
  emissions plus learned start scores [1, T] and transition scores [prev T, cur T].
  Returns each token's potentials, float32 [B, S, T + 1, T]: row 0 scores the token
  as a sentence's first tag (start + emission), row 1 + i as the tag after tag i
  (transition + emission). Positions are not tied to neighbours, so a tag's
  predecessor may be any earlier labelled token (a word's first piece)."""
  per_token: bool = True

  def setup(self):
    super().setup()
    init = nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                        (None, "classes"))
    self.crf_start = self.param("crf_start", init, (1, self.num_outputs), jnp.float32)
    self.crf_transitions = self.param("crf_transitions", init,
                                      (self.num_outputs, self.num_outputs), jnp.float32)

  def __call__(self, input_ids, token_type_ids=None, attention_mask=None,
               deterministic=True):
    emissions = super().__call__(input_ids, token_type_ids, attention_mask,
                                 deterministic)[..., None, :]  # [B, S, 1, T]
    pairs = jnp.concatenate([self.crf_start, self.crf_transitions])  # [T + 1, T]
    return emissions + pairs


def pool(sequence: jax.Array, mask: jax.Array, pooling: str) -> jax.Array:
  """[..., S, H] final hidden states -> [..., H] L2-normalised float32: the [CLS]
  position's ("cls") or the mean over the tokens where `mask` is 1 ("mean")."""
  sequence = sequence.astype(jnp.float32)
  if pooling == "cls":
    pooled = sequence[..., 0, :]
  else:
    weights = mask.astype(jnp.float32)[..., None]
    pooled = (sequence * weights).sum(-2) / jnp.maximum(weights.sum(-2), 1.0)
  norm = jnp.linalg.norm(pooled, axis=-1, keepdims=True)
  return pooled / jnp.maximum(norm, 1e-12)


class BertEmbedder(model_lib.BertEncoder):
  """The encoder as a sentence embedder: inputs [..., S] (e.g. [B, 2, S], a text and
  its positive) -> pooled, L2-normalised float32 embeddings [..., H]. No new params.

  The leading axes are flattened into rows before the encoder, so with dropout on,
  the two copies of one text (unsupervised SimCSE) get different masks."""
  pooling: str = "mean"

  def __call__(self, input_ids, token_type_ids=None, attention_mask=None,
               deterministic=True):
    lead, seq = input_ids.shape[:-1], input_ids.shape[-1]
    flat = lambda x: None if x is None else x.reshape(-1, seq)
    if attention_mask is None:
      attention_mask = jnp.ones_like(input_ids)
    sequence, _ = self.encode(flat(input_ids), flat(token_type_ids),
                              flat(attention_mask), deterministic=deterministic)
    embedding = pool(sequence, flat(attention_mask), self.pooling)
    return embedding.reshape(*lead, embedding.shape[-1])
