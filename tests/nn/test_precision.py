"""Matmul precision: every path runs every matmul at ``matmul_precision``,
forward and backward, and each precision is as accurate as it claims."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import references
from seqclf.config import base_config, validate
from seqclf.errors import ConfigError
from seqclf.kernels import lstm_kernel, paths
from seqclf.kernels.precision import PRECISIONS
from seqclf.nn import LSTM, LSTMClassifier
from seqclf.training import autotune

# Largest error allowed, relative to the reference's largest magnitude.
TOLERANCE = {'float32': {'values': 1e-5, 'grads': 1e-4},
             'tensorfloat32': {'values': 1e-2, 'grads': 1e-2},
             'bfloat16': {'values': 2e-2, 'grads': 2e-2}}


def _skip_unless_runnable(impl, precision):
  layer = paths.Layer(hidden_size=16, matmul_precision=precision)
  reason = paths.why_not(impl, layer, jax.default_backend())
  if reason:
    pytest.skip(f'{impl} at {precision} cannot run here: {reason}')
  if impl == 'kernel' and not lstm_kernel.available(precision):
    pytest.skip(f'no CPU kernel here for {precision} matmuls (a build, or '
                'Intel AMX for bfloat16)')


def _assert_close(got, want, precision, kind):
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  error = np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30)
  assert error <= TOLERANCE[precision][kind], (kind, error)


@pytest.mark.gpu
@pytest.mark.parametrize('precision', PRECISIONS)
@pytest.mark.parametrize('impl', paths.IMPLS)
def test_every_path_matches_the_float64_reference_at_each_precision(
    impl, precision):
  """Values and gradients of TF's BasicLSTMCell in float64 (forget bias
  included), within what the precision keeps: fused and kernel have
  hand-written backward passes."""
  _skip_unless_runnable(impl, precision)
  x, params, weights, ((c_ref, last_ref), hs_ref), want = (
      references.reference_case())
  layer = LSTM(params['cell']['hidden']['kernel'].shape[0],
               forget_bias=references.REFERENCE_FORGET_BIAS, impl=impl,
               matmul_precision=precision)
  x32, params32 = jnp.asarray(x, jnp.float32), references.f32(params)
  (c, last), hs = jax.jit(layer.apply)({'params': params32}, x32)
  for got, ref in ((hs, hs_ref), (c, c_ref), (last, last_ref)):
    if precision == 'float32':
      np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    _assert_close(got, ref, precision, 'values')

  def loss(p, x):
    (c, _), hs = layer.apply({'params': p}, x)
    return jnp.sum(hs * weights) + jnp.sum(jnp.sin(c))

  grads = jax.jit(jax.grad(loss))(params32, x32)
  for got, ref in zip(jax.tree.leaves(grads), jax.tree.leaves(want)):
    if precision == 'float32':
      np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    _assert_close(got, ref, precision, 'grads')


def _train_step_dots(monkeypatch, precision, **fields):
  """The dot_general ops of a classifier's gradient step, as lowered."""
  # The layers refuse TF32 on a backend without it when they are traced;
  # what is lowered is the same program on any backend.
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  model = LSTMClassifier(hidden_size=16, matmul_precision=precision, **fields)
  x = jnp.ones((2, 5, 3))
  params = model.init(jax.random.key(0), x)
  loss = lambda p: model.apply(p, x).sum()
  text = jax.jit(jax.grad(loss)).lower(params).as_text()
  return [line for line in text.splitlines() if 'stablehlo.dot_general' in line]


@pytest.mark.parametrize('fields', [
    {'impl': 'scan'}, {'impl': 'fused'}, {'impl': 'fused', 'num_layers': 2},
    {'impl': 'scan', 'cell': 'gru', 'bidirectional': True},
    {'impl': 'scan', 'cell': 'elman'}], ids=str)
@pytest.mark.parametrize('precision', PRECISIONS)
def test_every_matmul_of_a_train_step_runs_at_the_precision(
    monkeypatch, precision, fields):
  """float32: HIGHEST (true float32, also where XLA would use TF32);
  tensorfloat32: HIGH; bfloat16: bfloat16 operands and a float32 result,
  in the gradient's matmuls too."""
  dots = _train_step_dots(monkeypatch, precision, **fields)
  assert len(dots) >= 5  # projections, recurrence, head; and their gradients
  for dot in dots:
    if precision == 'bfloat16':
      assert re.search(r': \(tensor<[0-9x]*xbf16>, tensor<[0-9x]*xbf16>\) -> '
                       r'tensor<[0-9x]*xf32>', dot), dot
    else:
      level = {'float32': 'HIGHEST', 'tensorfloat32': 'HIGH'}[precision]
      assert f'precision = [{level}, {level}]' in dot, dot


@pytest.mark.skipif(jax.default_backend() == 'gpu',
                    reason='GPUs run TF32')
def test_tensorfloat32_is_refused_where_there_is_none():
  x = jnp.ones((2, 3, 4))
  for impl in ('scan', 'fused'):
    with pytest.raises(ConfigError, match='TF32 matmuls, which only GPUs have'):
      LSTM(16, impl=impl, matmul_precision='tensorfloat32').init(
          jax.random.key(0), x)
  config = base_config()
  config.matmul_precision = 'tensorfloat32'
  validate(config)  # A config may ask for it; the backend decides.
  with pytest.raises(ConfigError, match='No path can run this config'):
    autotune.resolve_impl(config)


def test_bfloat16_runs_on_the_portable_paths_and_stays_close():
  """bfloat16 matmuls are no longer the CPU kernel's alone."""
  x = jax.random.normal(jax.random.key(1), (3, 7, 5))
  outputs = {}
  for precision in ('float32', 'bfloat16'):
    for impl in ('scan', 'fused'):
      layer = LSTM(16, impl=impl, matmul_precision=precision)
      params = layer.init(jax.random.key(0), x)
      outputs[precision, impl] = layer.apply(params, x)[1]
  np.testing.assert_allclose(outputs['bfloat16', 'scan'],
                             outputs['bfloat16', 'fused'], atol=1e-5)
  error = np.max(np.abs(outputs['bfloat16', 'scan']
                        - outputs['float32', 'scan']))
  assert 1e-5 < error < 2e-2  # rounded, and only that much
