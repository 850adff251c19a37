"""Every fast path gives the portable ``nn.scan`` path's numbers.

``impl='fused'`` (``seqclf.kernels.fast_lstm``: one-tanh gates, hand-written VJP) and
``impl='kernel'`` (the same recurrence as a compiled CPU kernel,
``seqclf.kernels.lstm_kernel``) must create the same parameters and agree with the
``nn.scan`` LSTM in outputs and in gradients taken by ``jax.grad`` of the
plain version, in float32 tightly (and ``fused`` in bfloat16 within bfloat16
rounding).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from conftest import needs_cpu_kernel, normal, uniform
from seqclf.kernels import fast_lstm, lstm_kernel
from seqclf.nn import LSTM, LSTMClassifier

FAST_IMPLS = ['fused', pytest.param('kernel', marks=needs_cpu_kernel)]


def _inputs(shape, seed=0):
  return normal(seed, shape)


def _loss(model, params, x):
  (c, h), out = model.apply({'params': params}, x)
  # Touches every output (and the final carry) with distinct weights.
  w = jnp.sin(jnp.arange(out.size, dtype=jnp.float32)).reshape(out.shape)
  return jnp.sum(out * w) + jnp.sum(jnp.tanh(c)) + jnp.sum(h ** 2)


@pytest.mark.gpu
@pytest.mark.parametrize('impl', FAST_IMPLS)
def test_fast_lstm_matches_scan_values_and_grads(impl, unroll=2):
  # unroll=2 over 7 steps also covers the scan's remainder iteration; a batch
  # of 4 is fewer rows than the kernel's 6-row register block.
  x = _inputs((4, 7, 5))
  scan = LSTM(16, forget_bias=1.0)
  fused = LSTM(16, forget_bias=1.0, impl=impl, unroll=unroll)
  params = jax.jit(scan.init)(jax.random.key(1), x)['params']
  fused_params = jax.jit(fused.init)(jax.random.key(1), x)['params']
  # Same parameter names, shapes and initial values: checkpoints interchange.
  jax.tree.map(np.testing.assert_array_equal, params, fused_params)
  # Non-trivial state: perturb so the forget bias and all gates matter.
  params = jax.tree.map(lambda p: p + 0.3 * _inputs(p.shape, 2), params)
  (c1, h1), out1 = scan.apply({'params': params}, x)
  (c2, h2), out2 = fused.apply({'params': params}, x)
  for a, b in ((c1, c2), (h1, h2), (out1, out2)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  (g1, gx1), (g2, gx2) = (
      jax.jit(jax.grad(lambda p, x, m=m: _loss(m, p, x), (0, 1)))(params, x)
      for m in (scan, fused))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4,
                                                      atol=1e-5), g1, g2)
  np.testing.assert_allclose(gx1, gx2, rtol=1e-4, atol=1e-5)


# The fast tier checks these gradients against float64 numerical ones
# (test_models.test_lstm_matches_float64_reference_values_and_grads).
@pytest.mark.slow
def test_fused_recurrence_passes_numerical_gradient_check():
  t, b, h = 5, 3, 4
  args = (_inputs((t, b, 4 * h), 0), 0.5 * _inputs((h, 4 * h), 1),
          0.1 * _inputs((b, h), 2), 0.1 * _inputs((b, h), 3))
  f = lambda *a: fast_lstm.lstm_recurrence(*a, 1.0, 2)
  check_grads(f, args, order=1, modes=['rev'], atol=2e-2, rtol=2e-2, eps=1e-2)


@pytest.mark.slow
@needs_cpu_kernel
def test_kernel_layer_passes_numerical_gradient_check():
  t, b, i, h = 5, 7, 3, 16
  args = (_inputs((t, b, i), 0), 0.5 * _inputs((i, 4 * h), 1),
          0.1 * _inputs((4 * h,), 2), 0.3 * _inputs((h, 4 * h), 3),
          0.1 * _inputs((b, h), 4), 0.1 * _inputs((b, h), 5))
  f = lambda *a: lstm_kernel.lstm_layer(*a, 1.0)
  check_grads(f, args, order=1, modes=['rev'], atol=2e-2, rtol=2e-2, eps=1e-2)


@pytest.mark.gpu
@pytest.mark.parametrize('impl', FAST_IMPLS)
def test_fast_lstm_handles_initial_carry_and_extra_batch_axes(impl):
  x = _inputs((2, 3, 6, 5))
  carry = (0.1 * _inputs((2, 3, 16), 4), 0.1 * _inputs((2, 3, 16), 5))
  scan, fused = LSTM(16), LSTM(16, impl=impl)
  params = jax.jit(scan.init)(jax.random.key(0), x)
  a = scan.apply(params, x, carry)
  b = fused.apply(params, x, carry)
  jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-5,
                                                      atol=1e-6), a, b)


@pytest.mark.slow  # bfloat16 programs compile slowly on CPU
def test_fused_classifier_bfloat16_matches_scan():
  x = uniform(0, (8, 6, 5))
  labels = jnp.arange(8) % 10
  kw = dict(hidden_size=16, dtype=jnp.bfloat16)
  scan, fused = LSTMClassifier(**kw), LSTMClassifier(impl='fused', **kw)
  params = jax.jit(scan.init)(jax.random.key(1), x)['params']

  def loss(model, p):
    logits = model.apply({'params': p}, x)
    return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(8), labels])

  np.testing.assert_allclose(loss(scan, params), loss(fused, params),
                             rtol=2e-2)
  g1, g2 = (jax.jit(jax.grad(lambda p, m=m: loss(m, p)))(params)
            for m in (scan, fused))
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
    # bfloat16 keeps ~3 significant digits; compare relative to the scale.
    np.testing.assert_allclose(a, b, atol=5e-2 * float(jnp.max(jnp.abs(a))))


def test_unknown_impl_is_a_clear_error():
  with pytest.raises(ValueError, match='impl must be one of'):
    LSTM(4, impl='cudnn').init(jax.random.key(0), jnp.zeros((1, 3, 2)))


@pytest.mark.slow  # compiles train_steps twice per impl
@pytest.mark.parametrize('impl', FAST_IMPLS)
def test_config_impl_trains_like_scan(impl):
  """The trainer path: config key ``impl`` -> same params, same losses."""
  from seqclf.config import base_config
  from seqclf.training import state as state_lib, steps as steps_lib  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (64, 28, 28), dtype=np.uint8)
  labels = rng.integers(0, 10, 64).astype(np.int32)
  indices = np.arange(32, dtype=np.int32).reshape(2, 16)
  losses = {}
  for name in ('scan', impl):
    config = base_config()
    config.hidden_size, config.batch_size, config.impl = 16, 16, name
    state = state_lib.create_train_state(config, jax.random.key(0))
    state, metrics = jax.jit(steps_lib.train_steps)(state, images, labels, indices)
    losses[name] = (metrics['loss'], state.params)
  np.testing.assert_allclose(losses['scan'][0], losses[impl][0], rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5),
               losses['scan'][1], losses[impl][1])
