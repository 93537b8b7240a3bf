"""BERT in Flax linen: embeddings, post-LN encoder, tied MLM head and NSP head.

Every parameter is created through `nn.with_logical_partitioning`, so its sharding is
decided by the logical->mesh rules in the config, never here.

Memory options (config `remat`, `scan_layers`) change how the encoder stack is run,
never what it computes. Unscanned, layer i's params are the subtree `layer_i`;
scanned (`nn.scan` over one layer), they are a single `layers` subtree whose leaves
have a leading [num_layers] axis (logical axis "layers"). `stack_layers` and
`unstack_layers` convert params (and checkpoints) between the two layouts.
"""

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bert_jax.model import attention
from bert_jax.model import dropout
from bert_jax.model import matmul


# Rematerialisation of each encoder layer in the backward pass: what its forward
# pass keeps for the gradient (the rest is recomputed).
REMAT_POLICIES = {
    "none": None,  # no remat: everything is kept
    "full": jax.checkpoint_policies.nothing_saveable,  # only the layer input is kept
    # Outputs of the weight matmuls (dots without batch dims: Q/K/V/out projections,
    # feed-forward) are kept; attention scores, softmax, GELU, LayerNorm recomputed.
    "dots_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


@dataclasses.dataclass(frozen=True)
class BertConfig:
  vocab_size: int = 30522
  num_layers: int = 12
  hidden_size: int = 768
  num_heads: int = 12
  intermediate_size: int = 3072
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  hidden_dropout: float = 0.1
  attention_dropout: float = 0.1
  layer_norm_eps: float = 1e-12
  initializer_range: float = 0.02
  dtype: str = "float32"
  param_dtype: str = "float32"
  remat: str = "none"
  scan_layers: bool = False
  position_init: str = "normal"

  def __post_init__(self):
    if self.remat not in REMAT_POLICIES:
      raise ValueError(f"unknown remat {self.remat!r}; choose one of {list(REMAT_POLICIES)}")

  @classmethod
  def from_dict(cls, d) -> "BertConfig":
    """Builds from a config dict, ignoring keys that are not model fields (e.g. size)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in dict(d).items() if k in names})


# The collection each layer sows its output into (see layer_outputs).
HIDDEN_STATES = "hidden_states"


def layer_outputs(collection: dict) -> list:
  """The sown per-layer values of one collection (HIDDEN_STATES or attention.MAPS),
  in layer order, from either layer layout: `layer_i` subtrees, or the scanned
  `layers` subtree whose values carry a leading [num_layers] axis."""
  def leaf(tree):
    return jax.tree.leaves(tree)[0]  # the one value sown under the layer
  if "layers" in collection:
    stacked = leaf(collection["layers"])
    return [stacked[i] for i in range(stacked.shape[0])]
  names = sorted((k for k in collection if k.startswith("layer_")),
                 key=lambda k: int(k.split("_")[1]))
  return [leaf(collection[k]) for k in names]


def _init(cfg: BertConfig, axes):
  return nn.with_logical_partitioning(
      nn.initializers.truncated_normal(cfg.initializer_range), axes)


def sinusoidal_init(scale: float):
  """Initializer of a [positions, width] table with Vaswani et al.'s sinusoids at
  std `scale`: row i + k is a fixed rotation of row i for every i, so one query/key
  map can attend to "the token k to the left" at every position at once."""
  def init(key, shape, dtype=jnp.float32):
    del key
    positions, width = shape
    freqs = 1.0 / 10_000 ** (jnp.arange(0, width, 2) / width)
    angles = jnp.arange(positions)[:, None] * freqs[None, :]
    table = jnp.zeros(shape).at[:, 0::2].set(jnp.sin(angles))
    table = table.at[:, 1::2].set(jnp.cos(angles[:, :width // 2]))
    return (table * scale * math.sqrt(2)).astype(dtype)  # sin's std is 1/sqrt(2)
  return init


def _zeros(axes):
  return nn.with_logical_partitioning(nn.initializers.zeros_init(), axes)


def _ones(axes):
  return nn.with_logical_partitioning(nn.initializers.ones_init(), axes)


def _layer_norm(cfg: BertConfig, name: str) -> nn.LayerNorm:
  return nn.LayerNorm(
      epsilon=cfg.layer_norm_eps, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
      scale_init=_ones(("embed",)), bias_init=_zeros(("embed",)), name=name)


def _dense(cfg: BertConfig, shape: tuple[int, int], axes: tuple[str, str],
           name: str) -> matmul.Dense:
  """A [in, out] kernel with logical axes `axes` and an [out] bias."""
  return matmul.Dense(shape, axes, axes[1:], cfg.initializer_range, cfg.dtype,
                      cfg.param_dtype, name=name)


def _constrain(x):
  return nn.with_logical_constraint(x, ("batch", "length", None))


class Embeddings(nn.Module):
  cfg: BertConfig

  def setup(self):
    cfg = self.cfg
    embed = lambda n, axes, name: nn.Embed(
        n, cfg.hidden_size, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
        embedding_init=_init(cfg, axes), name=name)
    self.word_embeddings = embed(cfg.vocab_size, ("vocab", "embed"), "word_embeddings")
    self.position_embeddings = nn.Embed(
        cfg.max_position_embeddings, cfg.hidden_size, dtype=cfg.dtype,
        param_dtype=cfg.param_dtype, name="position_embeddings",
        embedding_init=_init(cfg, ("position", "embed")) if cfg.position_init == "normal"
        else nn.with_logical_partitioning(sinusoidal_init(cfg.initializer_range),
                                          ("position", "embed")))
    self.token_type_embeddings = embed(
        cfg.type_vocab_size, ("token_type", "embed"), "token_type_embeddings")
    self.layer_norm = _layer_norm(cfg, "layer_norm")
    self.dropout = dropout.Dropout(cfg.hidden_dropout)

  def __call__(self, input_ids, token_type_ids, position_ids, deterministic):
    x = (self._lookup(self.word_embeddings, input_ids, "vocab")
         + self._lookup(self.position_embeddings, position_ids, "position")
         + self._lookup(self.token_type_embeddings, token_type_ids, "token_type"))
    x = self.layer_norm(x)
    return _constrain(self.dropout(x, deterministic=deterministic))

  def _lookup(self, embed: nn.Embed, ids, rows_axis: str):
    # FSDP: all-gather the table's fsdp-split embed dim before the lookup. Left to
    # itself, XLA gathers rows of an embed-split table and then has to fully
    # rematerialise the result to split it by batch.
    table = nn.with_logical_constraint(embed.embedding, (rows_axis, None))
    return jnp.take(table, ids, axis=0).astype(self.cfg.dtype)

  def attend(self, x):
    """Logits against the word-embedding table: the tied MLM decoder."""
    return matmul.matmul(x, self.word_embeddings.embedding, self.cfg.dtype,
                         transpose_w=True)


class EncoderLayer(nn.Module):
  """Post-LN transformer layer, as in the original BERT."""
  cfg: BertConfig

  @nn.compact
  def __call__(self, x, mask, deterministic):
    cfg = self.cfg
    h = attention.SelfAttention(
        num_heads=cfg.num_heads, dropout=cfg.attention_dropout,
        initializer_range=cfg.initializer_range, dtype=cfg.dtype,
        param_dtype=cfg.param_dtype, name="attention")(x, mask, deterministic)
    h = dropout.Dropout(cfg.hidden_dropout)(h, deterministic=deterministic)
    x = _layer_norm(cfg, "attention_layer_norm")(x + h)
    h = _dense(cfg, (cfg.hidden_size, cfg.intermediate_size), ("embed", "mlp"),
               "intermediate")(x)
    h = nn.gelu(h, approximate=False)
    h = _dense(cfg, (cfg.intermediate_size, cfg.hidden_size), ("mlp", "embed"), "output")(h)
    h = dropout.Dropout(cfg.hidden_dropout)(h, deterministic=deterministic)
    x = _constrain(_layer_norm(cfg, "output_layer_norm")(x + h))
    # Kept only when the caller makes the collection mutable (distillation's hidden
    # states); otherwise sow is a no-op.
    self.sow(HIDDEN_STATES, "state", x)
    return x


class BertEncoder(nn.Module):
  """Embeddings, the encoder stack and the pooler: what every task model shares.

  Pretraining and fine-tuning models subclass it and add their heads in `setup`, so
  the encoder's params sit at the same top-level names (`embeddings`, `layer_i` or
  `layers`, `pooler`) in every model and move between them as they are.
  """
  cfg: BertConfig

  def setup(self):
    cfg = self.cfg
    self.embeddings = Embeddings(cfg)
    layer = EncoderLayer
    if cfg.remat != "none":
      # static_argnums counts self: `deterministic` is a Python bool. CSE prevention
      # is not needed inside scan (its loop already stops XLA merging the recompute).
      layer = nn.remat(EncoderLayer, policy=REMAT_POLICIES[cfg.remat],
                       static_argnums=(3,), prevent_cse=not cfg.scan_layers)
    if cfg.scan_layers:
      self.layers = layer(cfg, name="layers")  # run num_layers times by _run_layers
    else:
      self.layers = [layer(cfg, name=f"layer_{i}") for i in range(cfg.num_layers)]
    self.pooler = _dense(cfg, (cfg.hidden_size,) * 2, ("embed", "embed_out"), "pooler")

  def __call__(self, input_ids, token_type_ids=None, attention_mask=None,
               deterministic=True):
    """The bare encoder (a fine-tuned workdir's encoder is read back as one):
    (sequence_output, pooled_output). Subclasses replace it with their heads."""
    return self.encode(input_ids, token_type_ids, attention_mask,
                       deterministic=deterministic)

  def encode(self, input_ids, token_type_ids=None, attention_mask=None,
             position_ids=None, deterministic=True, example_ids=None):
    """Runs embeddings and the encoder; returns (sequence_output, pooled_output).

    `example_ids` [B, S] (1, 2, ... per packed example, 0 = padding) keeps packed
    examples apart in attention; without it every token sees every real token."""
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(input_ids)
    if attention_mask is None:
      attention_mask = jnp.ones_like(input_ids)
    if position_ids is None:
      position_ids = jnp.broadcast_to(jnp.arange(input_ids.shape[-1]), input_ids.shape)
    x = self.embeddings(input_ids, token_type_ids, position_ids, deterministic)
    mask = (attention.padding_mask(attention_mask) if example_ids is None
            else attention.packing_mask(example_ids))
    x = self._run_layers(x, mask, deterministic)
    pooled = jnp.tanh(self.pooler(x[:, 0]))
    return x, pooled

  def _run_layers(self, x, mask, deterministic):
    """The encoder stack: a Python loop over `layer_i`, or `nn.scan` over `layers`."""
    if not self.cfg.scan_layers:
      for layer in self.layers:
        x = layer(x, mask, deterministic)
      return x

    def body(layer, carry, mask):
      return layer(carry, mask, deterministic), None

    scan = nn.scan(
        body, variable_axes={"params": 0, HIDDEN_STATES: 0, attention.MAPS: 0},
        split_rngs={"params": True, "dropout": True},
        in_axes=nn.broadcast, length=self.cfg.num_layers,
        metadata_params={nn.PARTITION_NAME: "layers"})
    return scan(self.layers, x, mask)[0]


class BertForPreTraining(BertEncoder):
  """Encoder + MLM head (decoder tied to word embeddings) + NSP head.

  Returns a dict with `sequence_output` [B,S,H], `pooled_output` [B,H],
  `mlm_logits` ([B,P,V] at `masked_positions` when given, else [B,S,V]) and
  `nsp_logits` [B,2] — or, for packed rows with `cls_positions` [B,K] (the [CLS]
  of each example), pooled and NSP per example, [B,K,H] and [B,K,2]. Logits are
  float32 whatever the compute dtype.
  """

  def setup(self):
    super().setup()
    cfg = self.cfg
    self.mlm_transform = _dense(cfg, (cfg.hidden_size,) * 2, ("embed", "embed_out"),
                                "mlm_transform")
    self.mlm_layer_norm = _layer_norm(cfg, "mlm_layer_norm")
    self.mlm_output_bias = self.param(
        "mlm_output_bias", _zeros(("vocab",)), (cfg.vocab_size,), cfg.param_dtype)
    self.nsp = _dense(cfg, (cfg.hidden_size, 2), ("embed", "classes"), "nsp")

  def __call__(self, input_ids, token_type_ids=None, attention_mask=None,
               position_ids=None, masked_positions=None, deterministic=True,
               example_ids=None, cls_positions=None):
    x, pooled = self.encode(input_ids, token_type_ids, attention_mask, position_ids,
                            deterministic, example_ids)
    if cls_positions is not None:  # one pooled vector per packed example
      pooled = jnp.tanh(self.pooler(
          jnp.take_along_axis(x, cls_positions[..., None], axis=1)))
    h = x
    if masked_positions is not None:
      # Only the masked positions go through the vocab projection: at seq 128 with
      # 20 predictions that is 6x fewer FLOPs in the largest matmul of the head.
      h = jnp.take_along_axis(x, masked_positions[..., None], axis=1)
    h = nn.gelu(self.mlm_transform(h), approximate=False)
    h = self.mlm_layer_norm(h)
    mlm_logits = self.embeddings.attend(h).astype(jnp.float32)
    mlm_logits = mlm_logits + self.mlm_output_bias.astype(jnp.float32)
    nsp_logits = self.nsp(pooled).astype(jnp.float32)
    return {"sequence_output": x, "pooled_output": pooled,
            "mlm_logits": mlm_logits, "nsp_logits": nsp_logits}


def stack_layers(params, num_layers: int) -> dict:
  """Unscanned -> scanned params: `layer_0..layer_{n-1}` become one `layers` subtree
  with a leading [num_layers] axis on every leaf. Other entries are kept as they are.
  Works on any pytree of arrays (params, or a checkpoint's params restored as arrays).
  """
  params = dict(params)
  if "layers" in params:
    raise ValueError("params already have a scanned `layers` subtree")
  names = [f"layer_{i}" for i in range(num_layers)]
  found = sorted(k for k in params if k.startswith("layer_"))
  if sorted(names) != found:
    raise ValueError(f"expected layers layer_0..layer_{num_layers - 1}, found {found}")
  layers = [params.pop(n) for n in names]
  params["layers"] = jax.tree.map(lambda *xs: jnp.stack(xs), *layers)
  return params


def unstack_layers(params) -> dict:
  """Scanned -> unscanned params: the inverse of `stack_layers`."""
  params = dict(params)
  if "layers" not in params:
    raise ValueError("params have no scanned `layers` subtree")
  layers = params.pop("layers")
  num_layers = jax.tree_util.tree_leaves(layers)[0].shape[0]
  for i in range(num_layers):
    params[f"layer_{i}"] = jax.tree.map(lambda x, i=i: x[i], layers)
  return params


def abstract_params(model: nn.Module, seq_len: int = 8, boxed: bool = False):
  """The params' shapes and dtypes, via eval_shape of init (nothing is computed).

  `boxed` keeps the nn.Partitioned boxes carrying the logical axis names.
  """
  ids = jax.ShapeDtypeStruct((1, seq_len), jnp.int32)
  params = jax.eval_shape(model.init, jax.random.key(0), ids)["params"]
  return params if boxed else nn.meta.unbox(params)


def count_params(params: Any) -> int:
  return sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(params))
