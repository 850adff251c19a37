"""The optimizer a config describes: Adam variants, schedules, clipping."""

import jax
import numpy as np
import optax
import pytest

from seqclf.config import base_config
from seqclf.training import optim, state as state_lib


def test_default_optimizer_is_plain_adam_and_options_change_it():
  config = base_config()
  config.hidden_size = 8
  state = state_lib.create_train_state(config, jax.random.key(0))
  adam = optax.adam(1e-3).init(state.params)
  assert jax.tree.structure(state.opt_state) == jax.tree.structure(adam)
  assert optim.learning_rate_at(config, 500) == 1e-3
  config.update(lr_schedule='cosine', warmup_steps=100, grad_clip_norm=1.0)
  assert optim.learning_rate_at(config, 1) == 0.0
  assert optim.learning_rate_at(config, 101) == pytest.approx(1e-3)
  assert optim.learning_rate_at(config, 1000) < 1e-6


def _params_after(config, params, grads):
  """``params`` after one update per gradient, by the trainer's optimizer."""
  tx = optim.optimizer(config)
  state = tx.init(params)
  for g in grads:
    updates, state = tx.update(g, state, params)
    params = optax.apply_updates(params, updates)
  return jax.tree.leaves(params)


def test_grad_clip_norm_scales_gradients_to_the_norm():
  """Clipped training = plain Adam fed each gradient scaled down to the clip
  norm when its global norm exceeds it, and visibly not plain Adam.

  One update cannot show it (Adam's first step is ~lr * sign(g) at any
  scale); the second mixes a huge and a small gradient in Adam's moments, in
  a ratio that clipping changes.
  """
  rng = np.random.default_rng(0)
  params = {'kernel': rng.standard_normal((5, 8)).astype(np.float32),
            'bias': rng.standard_normal(8).astype(np.float32)}

  def gradient(norm):
    g = jax.tree.map(lambda p: rng.standard_normal(p.shape), params)
    total = np.sqrt(sum(np.sum(x ** 2) for x in jax.tree.leaves(g)))
    return jax.tree.map(lambda x: (x * norm / total).astype(np.float32), g)

  huge, small = gradient(1e3), gradient(0.5)
  config = base_config()
  config.grad_clip_norm = 1.0
  clipped = _params_after(config, params, [huge, small])
  config.grad_clip_norm = 0.0
  by_hand = _params_after(config, params, [
      jax.tree.map(lambda g: g * np.float32(1e-3), huge),
      small])  # norm 0.5 < 1: not clipped
  plain = _params_after(config, params, [huge, small])
  for a, b in zip(clipped, by_hand):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  assert max(float(np.max(np.abs(a - b))) for a, b in zip(clipped, plain)) > 1e-4


def test_weight_decay_is_decoupled_and_spares_the_biases():
  """weight_decay subtracts lr * weight_decay * w from each weight matrix on
  top of Adam's step (AdamW); biases take Adam's step alone."""
  rng = np.random.default_rng(1)
  params = {'kernel': rng.standard_normal((5, 8)).astype(np.float32),
            'bias': rng.standard_normal(8).astype(np.float32)}
  grads = [jax.tree.map(lambda p: rng.standard_normal(p.shape).astype(
      np.float32), params) for _ in range(3)]
  config = base_config()
  config.update(learning_rate=1e-2, weight_decay=0.5)
  decayed = _params_after(config, params, grads)
  want = optax.adamw(1e-2, weight_decay=0.5,
                     mask={'kernel': True, 'bias': False})
  state, expected = want.init(params), params
  for g in grads:
    updates, state = want.update(g, state, expected)
    expected = optax.apply_updates(expected, updates)
  for a, b in zip(decayed, jax.tree.leaves(expected)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  config.weight_decay = 0.0
  plain = dict(zip(sorted(params), _params_after(config, params, grads)))
  got = dict(zip(sorted(params), decayed))
  np.testing.assert_array_equal(got['bias'], plain['bias'])
  assert np.max(np.abs(got['kernel'] - plain['kernel'])) > 1e-3
