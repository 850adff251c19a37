"""Matmul precision: every path runs every matmul at ``matmul_precision``,
forward and backward, and each precision is as accurate as it claims."""

import platform
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import references
from conftest import normal
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


# The CPU kernel's AVX512_BF16 variant (a Cooper Lake build: AVX512_BF16
# without AMX), which an AMX CPU runs beside its native (AMX) build.
AVX512_BF16_MARCH = 'cooperlake'


def _skip_unless_runnable(impl, precision):
  layer = paths.Layer(hidden_size=16, matmul_precision=precision)
  reason = paths.why_not(impl, layer, jax.default_backend())
  if reason:
    pytest.skip(f'{impl} at {precision} cannot run here: {reason}')
  if impl == 'kernel' and not lstm_kernel.available(precision):
    pytest.skip(f'no CPU kernel here for {precision} matmuls (a build, or '
                'AVX512_BF16 or Intel AMX for bfloat16)')


def _use_avx512_bf16_variant(monkeypatch):
  """Layers forced to impl='kernel' run the AVX512_BF16 build from here on,
  or the test skips where the CPU lacks AVX512_BF16."""
  if (jax.default_backend() != 'cpu' or platform.machine() not in (
      'x86_64', 'AMD64') or not lstm_kernel.runs_here(AVX512_BF16_MARCH)):
    pytest.skip('the AVX512_BF16 variant needs an x86 CPU with AVX512_BF16 '
                'on the cpu backend')
  try:
    info = lstm_kernel.build_info(AVX512_BF16_MARCH)  # Builds it if need be.
  except lstm_kernel.KernelError as e:
    pytest.skip(f'no AVX512_BF16 build here: {e}')
  assert info['bfloat16'] == 'avx512_bf16'
  monkeypatch.setenv(lstm_kernel.MARCH_ENV, AVX512_BF16_MARCH)


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
  _check_against_the_float64_reference(impl, precision)


def test_the_kernels_avx512_bf16_variant_matches_the_float64_reference(
    monkeypatch):
  """The kernel's bfloat16 on AVX512_BF16, where the CPU has it (on an AMX
  CPU the test above runs the AMX engine)."""
  _use_avx512_bf16_variant(monkeypatch)
  _check_against_the_float64_reference('kernel', 'bfloat16')


def test_the_kernels_bfloat16_variants_agree_with_fused(monkeypatch):
  """The native build's bfloat16 (AMX where the CPU has it), the AVX512_BF16
  build's and fused's round the same operands to bfloat16 and sum in
  float32: values and gradients a float32 rounding or two apart."""
  _skip_unless_runnable('kernel', 'bfloat16')
  # Drawn by jax.random, as when its tolerance was set on bfloat16 hardware.
  x = jax.random.normal(jax.random.key(1), (6, 20, 12))
  weights = jnp.cos(jnp.arange(6 * 20 * 32)).reshape(6, 20, 32)

  def run(impl):
    layer = LSTM(32, impl=impl, matmul_precision='bfloat16')
    params = layer.init(jax.random.key(0), x)
    loss = lambda p: jnp.sum(layer.apply(p, x)[1] * weights)
    return jax.jit(jax.value_and_grad(loss))(params)

  want = run('fused')
  got = {'native': run('kernel')}
  _use_avx512_bf16_variant(monkeypatch)
  got[AVX512_BF16_MARCH] = run('kernel')
  for variant in got.values():
    for u, v in zip(jax.tree.leaves(variant), jax.tree.leaves(want)):
      scale = float(np.max(np.abs(v)))
      np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-4 * scale)


def _check_against_the_float64_reference(impl, precision):
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
    with pytest.raises(ConfigError, match="^matmul_precision='tensorfloat32' "
                       'runs TF32 matmuls, which only GPUs have') as e:
      LSTM(16, impl=impl, matmul_precision='tensorfloat32').init(
          jax.random.key(0), x)
    assert e.value.arg == 'matmul_precision'  # not the path's fault
  config = base_config()
  config.matmul_precision = 'tensorfloat32'
  validate(config)  # A config may ask for it; the backend decides.
  for impl in ('auto', 'scan'):
    config.impl = impl
    with pytest.raises(ConfigError, match='TF32 matmuls, which only GPUs') as e:
      autotune.resolve_impl(config)
    assert e.value.arg == 'config.matmul_precision'


def test_bfloat16_runs_on_the_portable_paths_and_stays_close():
  """bfloat16 matmuls are no longer the CPU kernel's alone."""
  x = normal(1, (3, 7, 5))
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
