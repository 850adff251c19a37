"""The compiled CPU kernel (impl='kernel'): numbers, build, errors."""

import functools
import platform
import re
import shutil
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import needs_cpu_kernel
from seqclf import train
from seqclf.config import ConfigError, base_config, validate
from seqclf.kernels import fast_lstm, lstm_kernel, paths
from seqclf.nn import LSTM
from seqclf.training import autotune

pytestmark = needs_cpu_kernel


needs_bf16 = pytest.mark.skipif(
    "not lstm_kernel.available('bfloat16')",
    reason='bfloat16 matmuls need AVX512_BF16 or Intel AMX')
# The AVX512_BF16 variant: a build for Cooper Lake (AVX512_BF16, no AMX),
# which on an AMX CPU runs beside the native (AMX) build.
AVX512_BF16_MARCH = 'cooperlake'
needs_avx512_bf16 = pytest.mark.skipif(
    "platform.machine() not in ('x86_64', 'AMD64') or not "
    "lstm_kernel.runs_here(AVX512_BF16_MARCH)",
    reason='the AVX512_BF16 variant needs an x86 CPU with AVX512_BF16')
# The bfloat16 builds to test: native (AMX where the CPU has it, else
# AVX512_BF16), and the AVX512_BF16 variant where the CPU runs it.
BF16_MARCHES = ['native', pytest.param(AVX512_BF16_MARCH,
                                       marks=needs_avx512_bf16)]


_slow = lambda *shape: pytest.param(*shape, marks=pytest.mark.slow)


SHAPES = [(3, 1, 1, 16), (4, 5, 28, 48), _slow(2, 13, 256, 80),
          _slow(28, 50, 28, 128), _slow(3, 100, 28, 32), (2, 300, 28, 16)]


X86_MARCHES = ('x86-64-v4', 'x86-64-v3', 'x86-64')


CANDIDATE_MARCHES = ('native', *(X86_MARCHES if platform.machine() in (
    'x86_64', 'AMD64') else ('armv8-a',)))


MARCHES = [pytest.param(m, marks=() if m == 'native' else pytest.mark.slow)
           for m in CANDIDATE_MARCHES
           if shutil.which('c++') and lstm_kernel.runs_here(m)]


def _args(t, b, i, h, seed=0):
  """x, w_x, b, w_h, c0, h0 of an LSTM layer with I inputs and H units."""
  k = jax.random.split(jax.random.key(seed), 6)
  return (jax.random.normal(k[0], (t, b, i)),
          jax.random.normal(k[1], (i, 4 * h)) / np.sqrt(i),
          0.5 * jax.random.normal(k[2], (4 * h,)),
          jax.random.normal(k[3], (h, 4 * h)) / np.sqrt(h),
          0.5 * jax.random.normal(k[4], (b, h)),
          0.5 * jax.random.normal(k[5], (b, h)))


def _reference(x, w_x, b, w_h, c0, h0, forget_bias=1.0):
  """The same layer through fast_lstm (already checked against nn.scan)."""
  return fast_lstm.lstm_recurrence(x @ w_x + b, w_h, c0, h0, forget_bias, 1)


def _value_and_grads(layer, args):
  t, b, h = args[0].shape[0], args[0].shape[1], args[3].shape[0]
  weights = jnp.cos(jnp.arange(t * b * h)).reshape(t, b, h)

  def loss(*a):
    (c, h), hs = layer(*a)
    return jnp.sum(hs * weights) + jnp.sum(c ** 2) + jnp.sum(jnp.sin(h))

  return jax.jit(jax.value_and_grad(loss, argnums=range(6)))(*args)


@pytest.mark.parametrize('march', MARCHES)
@pytest.mark.parametrize('t,b,i,h', SHAPES)
def test_kernel_layer_matches_fast_lstm(t, b, i, h, march):
  args = _args(t, b, i, h)
  layer = lambda *a: lstm_kernel.lstm_layer(*a, march=march)
  (c1, h1), hs1 = _reference(*args)
  (c2, h2), hs2 = layer(*args)
  for u, v in ((c1, c2), (h1, h2), (hs1, hs2)):
    np.testing.assert_allclose(u, v, rtol=1e-5, atol=2e-6)
  (l1, g1), (l2, g2) = (_value_and_grads(f, args) for f in (_reference, layer))
  np.testing.assert_allclose(l1, l2, rtol=1e-5)
  for u, v in zip(g1, g2):  # dx, dw_x, db, dw_h, dc0, dh0
    np.testing.assert_allclose(u, v, rtol=1e-4,
                               atol=1e-5 * float(jnp.max(jnp.abs(u))))


def _micro_kernels(library, name='MicroKernel'
                   ) -> dict[tuple[int, int], list[str]]:
  """Disassembly of each ``MicroKernel<rows, vecs, false>`` (or ``name``'s
  ``<rows, vecs>``) in ``library``."""
  asm = subprocess.run(['objdump', '-d', '--no-show-raw-insn', '-C',
                        str(library)], capture_output=True, text=True,
                       check=True).stdout
  kernels = {}
  for function in re.split(r'\n(?=[0-9a-f]+ <)', asm):
    head, _, body = function.partition('\n')
    if m := re.search(name + r'<(\d+), (\d+)(, false)?>', head):
      kernels[int(m[1]), int(m[2])] = [l for l in body.splitlines() if '\t' in l]
  return kernels


def _fma_loop(lines: list[str], fma: str = 'vfmadd') -> list[str]:
  """The instructions of the loop that holds the FMAs (``fma``: their
  mnemonic; its body runs from a backward jump's target to that jump)."""
  addr = lambda line: int(line.split(':')[0], 16)
  for k, line in enumerate(lines):
    m = re.search(r'\tj\w+\s+([0-9a-f]+) <', line)
    if m and int(m[1], 16) < addr(line):
      body = [l for l in lines[:k + 1] if addr(l) >= int(m[1], 16)]
      if any(fma in l for l in body):
        return body
  return []


@pytest.mark.skipif(platform.machine() not in ('x86_64', 'AMD64')
                    or shutil.which('objdump') is None,
                    reason='x86 machine code, read with objdump')
@pytest.mark.parametrize('march,block', [('x86-64-v4', (6, 4)),
                                         ('x86-64-v3', (6, 2))])
def test_micro_kernel_keeps_its_block_in_registers(march, block):
  kernels = _micro_kernels(lstm_kernel.build(march))
  assert max(kernels) == block  # The ISA's block, and no wider one.
  rows, vecs = block
  loop = _fma_loop(kernels[block])
  assert sum('vfmadd' in l for l in loop) == rows * vecs  # Fully unrolled.
  stack = [l for l in loop if re.search(r'\((%rsp|%rbp)', l)]
  assert not stack, f'{march} micro-kernel spills in its loop: {stack[:4]}'


@pytest.mark.skipif(platform.machine() not in ('x86_64', 'AMD64')
                    or shutil.which('objdump') is None,
                    reason='x86 machine code, read with objdump')
def test_avx512_bf16_micro_kernel_keeps_its_block_in_registers():
  """Any x86 machine builds the AVX512_BF16 variant (running it is another
  matter): its vdpbf16ps block is the float32 block, 6 x 4, unspilled."""
  kernels = _micro_kernels(lstm_kernel.build(AVX512_BF16_MARCH),
                           name='DpKernel')
  assert max(kernels) == (6, 4)
  loop = _fma_loop(kernels[6, 4], 'vdpbf16ps')
  assert sum('vdpbf16ps' in l for l in loop) == 24  # Fully unrolled.
  assert not [l for l in loop if re.search(r'\((%rsp|%rbp)', l)]


@pytest.mark.parametrize('march', MARCHES)
def test_build_info_names_each_variants_block(march):
  info = lstm_kernel.build_info(march)
  assert info['march'] == march and info['lanes'] in (4, 8, 16)
  rows, vecs = info['block']
  # Accumulators + one vector of B per column + one broadcast fit the
  # registers: 32 with AVX-512 or NEON, 16 otherwise.
  registers = 32 if info['lanes'] == 16 or platform.machine() == 'aarch64' else 16
  assert rows * vecs + vecs + 1 <= registers


def test_a_variant_this_cpu_cannot_run_is_refused_not_loaded(monkeypatch):
  monkeypatch.setattr(lstm_kernel, 'runs_here', lambda march: False)
  assert not lstm_kernel.available(march='x86-64-v4')
  with pytest.raises(lstm_kernel.KernelError, match='cannot run on this CPU'):
    lstm_kernel.lstm_layer(*_args(2, 3, 4, 16), march='x86-64-v4')


def test_kernel_is_deterministic_and_vmaps():
  args = _args(6, 9, 3, 16)
  a = _value_and_grads(lstm_kernel.lstm_layer, args)
  b = _value_and_grads(lstm_kernel.lstm_layer, args)
  jax.tree.map(np.testing.assert_array_equal, a, b)
  # vmap over a leading axis of independent problems = one call per problem.
  stacked = [jnp.stack([x, 0.5 * x]) for x in args]
  f = lambda *a: lstm_kernel.lstm_layer(*a)[1]
  batched = jax.vmap(f)(*stacked)
  for i in range(2):
    np.testing.assert_allclose(batched[i], f(*(s[i] for s in stacked)),
                               rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_build_is_cached_and_reused(tmp_path, monkeypatch):
  monkeypatch.setenv('SEQCLF_KERNEL_CACHE', str(tmp_path))
  path = lstm_kernel.build()
  assert path.parent == tmp_path and path.suffix == '.so'
  stamp = path.stat().st_mtime_ns
  assert lstm_kernel.build() == path  # Found, not rebuilt.
  assert path.stat().st_mtime_ns == stamp
  assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_missing_compiler_is_a_clear_error(tmp_path, monkeypatch):
  monkeypatch.setenv('SEQCLF_KERNEL_CACHE', str(tmp_path))
  monkeypatch.setenv('CXX', 'no-such-compiler')
  with pytest.raises(lstm_kernel.KernelError, match="no C.. compiler.*impl='fused'"):
    lstm_kernel.build()
  assert not list(tmp_path.iterdir())  # Nothing half-written left behind.
  # Asked for explicitly, the model says the same (the CLI prints it, exit 2).
  with pytest.raises(lstm_kernel.KernelError, match='no C.. compiler'):
    LSTM(16, impl='kernel').init(jax.random.key(0), jnp.zeros((1, 3, 2)))


def test_unsupported_shapes_and_dtypes_are_clear_errors():
  x = jnp.zeros((2, 3, 4))
  with pytest.raises(ValueError, match='multiple of 16'):
    LSTM(20, impl='kernel').init(jax.random.key(0), x)
  with pytest.raises(ValueError, match='float32.*bfloat16'):
    LSTM(16, impl='kernel', dtype=jnp.bfloat16).init(jax.random.key(0), x)


def _bfloat16_reference(x, w_x, b, w_h, c0, h0, forget_bias=1.0):
  """What matmul_precision='bfloat16' promises: the layer in float32 with
  only the matmuls' operands rounded to bfloat16, products summed in float32."""
  dot = lambda a, w: jnp.dot(a.astype(jnp.bfloat16), w.astype(jnp.bfloat16),
                             preferred_element_type=jnp.float32)

  def step(carry, x_t):
    c, h = carry
    i, j, f, o = jnp.split(dot(x_t, w_x) + dot(h, w_h) + b, 4, -1)
    c = jax.nn.sigmoid(f + forget_bias) * c + jax.nn.sigmoid(i) * jnp.tanh(j)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return (c, h), h

  return jax.lax.scan(step, (c0, h0), x)


def _bfloat16_layer(*args, march=None):
  return lstm_kernel.lstm_layer(*args, 1.0, 'bfloat16', march=march)


@needs_bf16
@pytest.mark.parametrize('march', BF16_MARCHES)
@pytest.mark.parametrize('t,b,i,h', SHAPES)
def test_bfloat16_kernel_rounds_only_the_matmul_operands(t, b, i, h, march):
  args = _args(t, b, i, h)
  layer = functools.partial(_bfloat16_layer, march=march)
  expected = jax.tree.leaves(_bfloat16_reference(*args))
  for u, v in zip(jax.tree.leaves(layer(*args)), expected):
    # Float32 matmuls miss this by 4e-4 or more on average; a rounding that
    # lands the other side of a bfloat16 step may stand out alone.
    error = jnp.abs(u - v)
    assert float(error.mean()) < 5e-5 and float(error.max()) < 1e-2
  # Gradients: float32's to bfloat16's ~3 significant digits (dgates, [x, h]
  # and w are rounded before their matmuls, accumulation stays float32).
  (l1, g1), (l2, g2) = (_value_and_grads(f, args) for f in (
      lstm_kernel.lstm_layer, layer))
  np.testing.assert_allclose(l1, l2, rtol=2e-2, atol=2e-2)
  for u, v in zip(g1, g2):
    np.testing.assert_allclose(u, v, atol=3e-2 * float(jnp.max(jnp.abs(u))))


@needs_bf16
@needs_avx512_bf16
@pytest.mark.parametrize('t,b,i,h', [(4, 5, 28, 48), (3, 100, 28, 32)])
def test_avx512_bf16_and_native_variants_agree_to_rounding(t, b, i, h):
  """The two engines round the same operands and sum in float32 in another
  order: a few float32 ulps apart, far inside a bfloat16 step."""
  info = lstm_kernel.build_info(AVX512_BF16_MARCH)
  assert info['bfloat16'] == 'avx512_bf16'
  assert lstm_kernel.build_info()['bfloat16'] in ('amx', 'avx512_bf16')
  args = _args(t, b, i, h)
  (l1, g1), (l2, g2) = (_value_and_grads(
      functools.partial(_bfloat16_layer, march=m), args)
                        for m in ('native', AVX512_BF16_MARCH))
  np.testing.assert_allclose(l1, l2, rtol=1e-5)
  for u, v in zip(g1, g2):
    np.testing.assert_allclose(u, v, atol=1e-3 * float(jnp.max(jnp.abs(u))))
  for u, v in zip(*(jax.tree.leaves(_bfloat16_layer(*args, march=m))
                    for m in ('native', AVX512_BF16_MARCH))):
    np.testing.assert_allclose(u, v, atol=1e-5)


@needs_bf16
@pytest.mark.parametrize('march', BF16_MARCHES)
def test_bfloat16_kernel_is_deterministic_and_auto_uses_it(march,
                                                           monkeypatch):
  args = _args(3, 100, 28, 32)  # Two slices where the pool has two threads.
  layer = functools.partial(_bfloat16_layer, march=march)
  a = _value_and_grads(layer, args)
  b = _value_and_grads(layer, args)
  jax.tree.map(np.testing.assert_array_equal, a, b)
  if march != 'native':
    monkeypatch.setenv(lstm_kernel.MARCH_ENV, march)
  config = base_config()
  config.matmul_precision = 'bfloat16'
  assert autotune.resolve_impl(config) == 'kernel'


def test_bfloat16_matmuls_are_clear_errors_where_they_cannot_run(monkeypatch):
  x, key = jnp.zeros((2, 3, 4)), jax.random.key(0)
  with pytest.raises(ValueError, match='must be one of'):
    LSTM(16, impl='kernel', matmul_precision='float16').init(key, x)
  config = base_config()
  config.matmul_precision = 'float16'
  with pytest.raises(ConfigError, match='matmul_precision.*must be one of'):
    validate(config)
  # A CPU with neither AVX512_BF16 nor AMX: the forced kernel says so in
  # one line, and `auto` takes the portable paths, which run bfloat16
  # matmuls anywhere.
  monkeypatch.setattr(lstm_kernel, 'available',
                      lambda precision='float32', march=None:
                      precision == 'float32')
  with pytest.raises(lstm_kernel.KernelError,
                     match='need AVX512_BF16 or Intel AMX') as error:
    LSTM(16, impl='kernel', matmul_precision='bfloat16').init(key, x)
  assert 'AVX512_BF16' in str(error.value).splitlines()[0]  # One line.
  layer = paths.Layer(matmul_precision='bfloat16')
  assert 'AVX512_BF16 or Intel AMX' in paths.why_not('kernel', layer, 'cpu',
                                                     need_build=True)
  assert 'kernel' not in paths.eligible(layer, 'cpu')
  config.matmul_precision = 'bfloat16'
  assert autotune.resolve_impl(config) == 'fused'  # untimed in the suite


@pytest.mark.slow
@pytest.mark.skipif("platform.machine() not in ('x86_64', 'AMD64') or not "
                    "lstm_kernel.runs_here('x86-64-v4')",
                    reason='an x86 build without bfloat16 instructions')
def test_a_build_without_bfloat16_instructions_refuses_them_in_one_line():
  info = lstm_kernel.build_info('x86-64-v4')  # AVX-512 F/BW/DQ/VL only
  assert info['bfloat16'] is None
  assert not lstm_kernel.available('bfloat16', march='x86-64-v4')
  with pytest.raises(lstm_kernel.KernelError) as error:
    _bfloat16_layer(*_args(2, 3, 4, 16), march='x86-64-v4')
  # One line (jax may append a note of its own below it).
  assert 'need AVX512_BF16 or Intel AMX' in str(error.value).splitlines()[0]


@pytest.mark.slow
@needs_bf16
def test_bfloat16_trains_and_its_checkpoint_serves_without_bf16_hardware(
    tmp_path, mnist, monkeypatch):
  from conftest import DEFAULT_INPUT, small_config
  from seqclf import inference  # pylint: disable=g-import-not-at-top
  config = small_config(matmul_precision='bfloat16', num_train_steps=100,
                        eval_every=100, checkpoint_every=100,
                        steps_per_call=50, **DEFAULT_INPUT)
  results = train.train_and_evaluate(config, tmp_path, quiet=True,
                                     datasets=mnist)
  assert results['impl'] == 'kernel' and results['test_accuracy'] > 0.6
  images = mnist['test']['image'][:500]
  model, params, saved = inference.load_model(tmp_path)
  assert saved.matmul_precision == 'bfloat16'
  probs = inference.predict_probabilities(model, params, images)
  # A machine with neither AMX nor AVX512_BF16 restores the same params and
  # runs them at bfloat16 on a portable path; one where no path runs a
  # precision would run them in float32 (inference._config_of).
  monkeypatch.setattr(lstm_kernel, 'available',
                      lambda precision='float32', march=None:
                      precision == 'float32')
  model, params, saved = inference.load_model(tmp_path)
  assert saved.matmul_precision == 'bfloat16' and model.impl != 'kernel'
  probs_portable = inference.predict_probabilities(model, params, images)
  np.testing.assert_allclose(probs, probs_portable, atol=3e-2)
  assert np.mean(probs.argmax(-1) == probs_portable.argmax(-1)) >= 0.98
