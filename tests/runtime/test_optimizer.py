import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from bert_jax.runtime import optimizer


def _opt_config(**kw):
  return ml_collections.ConfigDict(dict(
      learning_rate=0.1, warmup_steps=0, decay_power=1.0, weight_decay=0.01,
      b1=0.9, b2=0.999, eps=1e-6, clip_norm=1e9) | kw)


def test_decay_mask_excludes_layer_norm_and_biases():
  params = {"layer_0": {"intermediate": {"kernel": 1, "bias": 1},
                        "output_layer_norm": {"scale": 1, "bias": 1}},
            "embeddings": {"word_embeddings": {"embedding": 1}},
            "mlm_output_bias": 1}
  assert optimizer.decay_mask(params) == {
      "layer_0": {"intermediate": {"kernel": True, "bias": False},
                  "output_layer_norm": {"scale": False, "bias": False}},
      "embeddings": {"word_embeddings": {"embedding": True}},
      "mlm_output_bias": False}


def test_lamb_update_by_hand():
  rng = np.random.default_rng(0)
  params = {"dense": {"kernel": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32),
                      "bias": jnp.asarray(rng.normal(size=(3,)), jnp.float32)},
            "norm": {"scale": jnp.asarray(rng.normal(size=(3,)), jnp.float32)}}
  grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
  cfg = _opt_config()
  tx, lr = optimizer.make(cfg, num_steps=10)
  updates, _ = tx.update(grads, tx.init(params), params)
  lr0 = float(lr(0))
  assert np.isclose(lr0, 0.1)
  # First Adam step: bias-corrected m/sqrt(v) = g / (|g| + eps).
  adam = jax.tree.map(lambda g: g / (jnp.abs(g) + cfg.eps), grads)
  # Excluded: no weight decay, no trust ratio.
  for path in (("dense", "bias"), ("norm", "scale")):
    got = updates[path[0]][path[1]]
    np.testing.assert_allclose(got, -lr0 * adam[path[0]][path[1]], rtol=1e-5)
  # Kernel: decoupled decay, then the layer-wise trust ratio ||w|| / ||u||.
  w = params["dense"]["kernel"]
  u = adam["dense"]["kernel"] + cfg.weight_decay * w
  trust = jnp.linalg.norm(w) / jnp.linalg.norm(u)
  np.testing.assert_allclose(updates["dense"]["kernel"], -lr0 * trust * u, rtol=1e-5)


def test_schedule_warmup_then_polynomial_decay():
  lr = optimizer.schedule(1.0, warmup_steps=10, num_steps=110, power=1.0)
  np.testing.assert_allclose([lr(0), lr(5), lr(10), lr(60), lr(110), lr(200)],
                             [0.0, 0.5, 1.0, 0.5, 0.0, 0.0], atol=1e-6)


def test_gradients_are_clipped_before_adam():
  # Two steps, the first with a huge gradient. Our chain with clip_norm=1 must equal an
  # unclipped chain fed the gradient clipped by hand (and differ from it unclipped).
  rng = np.random.default_rng(1)
  params = {"kernel": jnp.asarray(rng.normal(size=(5, 4)), jnp.float32)}
  g1 = {"kernel": 1000 * jnp.asarray(rng.normal(size=(5, 4)), jnp.float32)}
  g2 = {"kernel": 0.01 * jnp.asarray(rng.normal(size=(5, 4)), jnp.float32)}  # norm < 1
  g1_clipped = jax.tree.map(lambda g: g / optax.tree.norm(g1), g1)

  def second_update(clip_norm, first):
    tx, _ = optimizer.make(_opt_config(clip_norm=clip_norm), num_steps=10)
    state = tx.init(params)
    _, state = tx.update(first, state, params)
    return tx.update(g2, state, params)[0]["kernel"]

  ours = second_update(1.0, g1)
  np.testing.assert_allclose(ours, second_update(1e9, g1_clipped), rtol=1e-5)
  assert not np.allclose(ours, second_update(1e9, g1), rtol=1e-3)


def test_trust_ratio_stays_per_layer_when_layers_are_stacked():
  # nn.scan keeps layer i of every kernel at index i of one `layers` array; LAMB must
  # update it exactly as the unscanned layer_i kernel.
  rng = np.random.default_rng(2)
  draw = lambda: jnp.asarray(rng.normal(size=(3, 4)), jnp.float32) * rng.uniform(0.1, 3)
  plain = {f"layer_{i}": {"kernel": draw(), "bias": draw()[0]} for i in range(3)}
  grads = {k: {"kernel": draw(), "bias": draw()[0]} for k in plain}
  stack = lambda tree: {"layers": jax.tree.map(lambda *xs: jnp.stack(xs),
                                               *[tree[f"layer_{i}"] for i in range(3)])}
  tx, _ = optimizer.make(_opt_config(), num_steps=10)
  plain_updates, _ = tx.update(grads, tx.init(plain), plain)
  stacked_updates, _ = tx.update(stack(grads), tx.init(stack(plain)), stack(plain))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
               stacked_updates, stack(plain_updates))


def test_clipping_equals_optax_above_and_below_the_norm():
  rng = np.random.default_rng(4)
  grads = {"a": jnp.asarray(rng.normal(size=(5, 4)), jnp.float32),
           "b": jnp.asarray(rng.normal(size=(7,)), jnp.float32)}
  norm = float(optax.tree.norm(grads))
  for max_norm in (norm / 3, norm * 3):
    ours, theirs = optimizer.clip_by_global_norm(max_norm), optax.clip_by_global_norm(max_norm)
    got, _ = ours.update(grads, ours.init(grads))
    want, _ = theirs.update(grads, theirs.init(grads))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), got, want)
    assert ours.init(grads) == theirs.init(grads)  # the same (empty) state
    # A norm the caller has already taken is used as given (through a chain too).
    chain = optax.chain(ours)
    given, _ = chain.update(grads, chain.init(grads), grad_norm=jnp.float32(norm * 2))
    jax.tree.map(lambda a, g: np.testing.assert_allclose(
        a, g * min(1.0, max_norm / (norm * 2)), rtol=1e-6), given, grads)


def test_trust_ratio_equals_optax_zero_norms_included():
  rng = np.random.default_rng(3)
  updates = {"a": jnp.asarray(rng.normal(size=(5, 4, 3)), jnp.float32),
             "zero_param": jnp.asarray(rng.normal(size=(6,)), jnp.float32),
             "zero_update": jnp.zeros((2, 3), jnp.float32)}
  params = {"a": jnp.asarray(rng.normal(size=(5, 4, 3)), jnp.float32) * 7,
            "zero_param": jnp.zeros((6,), jnp.float32),
            "zero_update": jnp.ones((2, 3), jnp.float32)}
  ours = optimizer.layerwise_trust_ratio()
  theirs = optax.scale_by_trust_ratio()
  got, _ = ours.update(updates, ours.init(params), params)
  want, _ = theirs.update(updates, theirs.init(params), params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), got, want)


def test_update_if_skips_and_copies_no_donated_state():
  rng = np.random.default_rng(1)
  params = {"dense": {"kernel": jnp.asarray(rng.normal(size=(64, 32)), jnp.float32),
                      "bias": jnp.zeros((32,), jnp.float32)}}
  grads = jax.tree.map(lambda p: jnp.ones_like(p), params)
  tx, _ = optimizer.make(_opt_config(), num_steps=10)
  state = tx.init(params)

  def step(params, opt_state, grads, ok):
    return optimizer.update_if(ok, tx, grads, opt_state, params)

  updates, want_state = tx.update(grads, state, params)
  want = optax.apply_updates(params, updates)
  got, got_state = step(params, state, grads, jnp.array(True))
  assert all(jax.tree.leaves(jax.tree.map(np.allclose, (got, got_state), (want, want_state))))
  kept, kept_state = step(params, state, grads, jnp.array(False))
  assert all(jax.tree.leaves(jax.tree.map(np.array_equal, (kept, kept_state), (params, state))))
  # Donated, the moments are updated in place: a where(ok, new, old) over the trees
  # made XLA copy each one first (both the new moment and the update read the old).
  hlo = jax.jit(step, donate_argnums=(0, 1)).lower(
      params, state, grads, jnp.array(True)).compile().as_text()
  assert not [line for line in hlo.splitlines()
              if " copy(" in line and "f32[64,32]" in line.split("=", 1)[1][:12]]


def test_layer_decay_scales_each_layer_as_electra_plain_and_stacked():
  # decay 0.5, L = 2: head 1, pooler 0.5, layer_1 0.25, layer_0 0.125, embeddings
  # 0.0625 of the update without layer decay; a stacked `layers` leaf per layer alike.
  rng = np.random.default_rng(5)
  draw = lambda: jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
  names = ("embeddings", "layer_0", "layer_1", "pooler", "classifier")
  params = {k: {"kernel": draw()} for k in names}
  grads = {k: {"kernel": draw()} for k in names}
  expect = dict(zip(names, (0.0625, 0.125, 0.25, 0.5, 1.0)))
  cfg = _opt_config(name="adamw", clip_norm=1.0)
  plain, _ = optimizer.make(cfg, num_steps=10)
  decayed, _ = optimizer.make(_opt_config(name="adamw", clip_norm=1.0, layer_decay=0.5),
                              num_steps=10)
  base, _ = plain.update(grads, plain.init(params), params)
  got, _ = decayed.update(grads, decayed.init(params), params)
  for k in names:
    np.testing.assert_allclose(got[k]["kernel"], expect[k] * base[k]["kernel"], rtol=1e-6)
  stack = lambda tree: {"layers": jax.tree.map(lambda *xs: jnp.stack(xs),
                                               tree["layer_0"], tree["layer_1"]),
                        **{k: tree[k] for k in ("embeddings", "pooler", "classifier")}}
  got_stacked, _ = decayed.update(stack(grads), decayed.init(stack(params)), stack(params))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6),
               got_stacked, stack(got))
