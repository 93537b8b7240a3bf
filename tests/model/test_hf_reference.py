"""Forward-pass parity against an independent reference: transformers' FlaxBertForPreTraining.

Our randomly initialised parameters (biases and LayerNorm parameters perturbed away
from 0/1 so they are exercised too) are mapped onto the HF parameter tree; both models
then run the same padded, mixed-segment batch and must agree to 1e-4 on the MLM logits
at every position and on the NSP logits.
"""

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

transformers = pytest.importorskip("transformers")

from bert_jax.model import bert as model  # noqa: E402
# The mapping under test lives in the library (export/import reuse it).
from bert_jax.interop.convert import to_hf_params  # noqa: E402

TOL = 1e-4
VOCAB = 211
BATCH = 3
SEQ = 17
MAX_POS = 32
# Weight std, well above BERT's 0.02: with tiny q/k weights attention is almost uniform, and a
# q/k or head-layout mix-up would move the logits by less than the tolerance.
INIT_RANGE = 0.2

# (num_layers, hidden, heads, intermediate): odd head count / odd intermediate included.
SHAPES = [
    (2, 96, 3, 200),
    (1, 64, 2, 128),
    (3, 48, 4, 100),
]


def _random_params(m, input_ids, seed):
  """Our parameter tree (structure, shapes, dtypes from `m.init`) with random values.

  Values are drawn with numpy rather than by running `m.init`, whose jit compile of the
  truncated-normal initialisers alone costs seconds per shape. Biases and LayerNorm
  params are random too, so a bias or LayerNorm mix-up cannot hide behind 0/1.
  """
  abstract = nn.meta.unbox(jax.eval_shape(m.init, jax.random.key(0), input_ids)["params"])
  rng = np.random.default_rng(seed)
  out = {}
  for path, x in sorted(flax.traverse_util.flatten_dict(abstract).items()):
    name = path[-1]
    if name == "scale":
      v = 1.0 + 0.2 * rng.standard_normal(x.shape)
    elif name in ("bias", "mlm_output_bias"):
      v = 0.1 * rng.standard_normal(x.shape)
    else:  # kernels and embedding tables
      v = INIT_RANGE * rng.standard_normal(x.shape)
    out[path] = jnp.asarray(v, x.dtype)
  return flax.traverse_util.unflatten_dict(out)


def _inputs(seed):
  rng = np.random.default_rng(seed)
  input_ids = rng.integers(0, VOCAB, size=(BATCH, SEQ), dtype=np.int32)
  lengths = np.array([SEQ, 11, 5])  # full row plus two rows with real padding
  pos = np.arange(SEQ)[None, :]
  attention_mask = (pos < lengths[:, None]).astype(np.int32)
  # Segment A then segment B, with a different split point per row.
  splits = np.array([8, 6, 2])
  token_type_ids = ((pos >= splits[:, None]) & (attention_mask == 1)).astype(np.int32)
  input_ids = np.where(attention_mask == 1, input_ids, 0).astype(np.int32)
  return (jnp.asarray(input_ids), jnp.asarray(token_type_ids),
          jnp.asarray(attention_mask))


def _shape_tree(tree):
  return {"/".join(p): tuple(x.shape)
          for p, x in flax.traverse_util.flatten_dict(tree).items()}


@pytest.mark.parametrize("num_layers,hidden,heads,intermediate", SHAPES)
def test_matches_flax_bert_for_pretraining(num_layers, hidden, heads, intermediate):
  cfg = model.BertConfig(
      vocab_size=VOCAB, num_layers=num_layers, hidden_size=hidden, num_heads=heads,
      intermediate_size=intermediate, max_position_embeddings=MAX_POS, type_vocab_size=2,
      initializer_range=INIT_RANGE)
  hf_cfg = transformers.BertConfig(
      vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=num_layers,
      num_attention_heads=heads, intermediate_size=intermediate,
      max_position_embeddings=MAX_POS, type_vocab_size=2, hidden_act="gelu",
      layer_norm_eps=cfg.layer_norm_eps, hidden_dropout_prob=0.1,
      attention_probs_dropout_prob=0.1, initializer_range=INIT_RANGE,
      tie_word_embeddings=True)
  input_ids, token_type_ids, attention_mask = _inputs(seed=hidden + num_layers)

  with jax.default_matmul_precision("highest"):
    m = model.BertForPreTraining(cfg)
    seed = 1000 + 17 * num_layers + hidden
    params = _random_params(m, input_ids, seed)

    # _do_init=False: HF's own random weights are never materialised, so the forward
    # pass below can only run on what the mapping provides. Its full parameter tree
    # (what `hf.params` would hold) comes from tracing its init_weights.
    hf = transformers.FlaxBertForPreTraining(hf_cfg, seed=0, _do_init=False)
    hf_shapes = jax.eval_shape(lambda k: hf.init_weights(k, (1, SEQ)), jax.random.key(0))
    hf_params = to_hf_params(params, cfg)
    # Every HF parameter must be provided by the mapping, with HF's shape, and nothing
    # of ours may be left unused.
    assert _shape_tree(hf_params) == _shape_tree(hf_shapes)
    n_ours = sum(x.size for x in jax.tree_util.tree_leaves(params))
    n_hf = sum(x.size for x in jax.tree_util.tree_leaves(hf_params))
    assert n_ours == n_hf

    ours = jax.jit(lambda p, ids, am, tt: m.apply(
        {"params": p}, ids, token_type_ids=tt, attention_mask=am, deterministic=True))(
            params, input_ids, attention_mask, token_type_ids)
    ref = jax.jit(lambda p, ids, am, tt: hf(
        ids, attention_mask=am, token_type_ids=tt, params=p, train=False))(
            hf_params, input_ids, attention_mask, token_type_ids)

  mlm, nsp = np.asarray(ours["mlm_logits"]), np.asarray(ours["nsp_logits"])
  ref_mlm = np.asarray(ref.prediction_logits)
  ref_nsp = np.asarray(ref.seq_relationship_logits)
  assert mlm.shape == ref_mlm.shape == (BATCH, SEQ, VOCAB)
  assert nsp.shape == ref_nsp.shape == (BATCH, 2)
  # The comparison must not be vacuous: logits vary far more than the tolerance.
  assert mlm.std() > 100 * TOL and np.abs(nsp).max() > 100 * TOL

  # All positions, padded ones included: both models mask keys only, so padded query
  # rows attend to the same real keys in both and must agree as well.
  np.testing.assert_allclose(mlm, ref_mlm, rtol=0, atol=TOL)
  np.testing.assert_allclose(nsp, ref_nsp, rtol=0, atol=TOL)
