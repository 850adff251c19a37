"""``impl='gpu'`` (``seqclf.kernels.gpu_lstm``): the GPU kernels give
``fast_lstm``'s numbers.

On the CPU the kernels run in Pallas' interpreter (``interpret=True``): the
same kernel bodies, tiling, masking and loops as on a GPU, executed by XLA.
They must match ``fast_lstm`` in values and in gradients (float32 tightly;
bfloat16 operands against a reference that rounds the same operands), for
every tiling option, with padding (lengths 0 to T), batches that the row
tile does not divide, under ``jax.vmap`` (sweeps) and through the layer
(reverse, seq_lengths). The kernels must also lower for CUDA here (a real
Pallas-to-Triton compile step, no GPU needed), and only a GPU backend may
run them. Tests that execute on a GPU run only where jax's backend is one.
"""

import collections
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend import core as jax_core

from conftest import normal
from seqclf.errors import ConfigError
from seqclf.kernels import fast_lstm, gpu_lstm, paths
from seqclf.nn import LSTM

ON_GPU = jax.default_backend() == 'gpu'
# On the CPU the kernels are interpreted; on a GPU they run compiled.
INTERPRET = not ON_GPU
on_gpu = pytest.mark.skipif(not ON_GPU, reason='needs a GPU backend')
# Interpreted kernels compile slowly on a CPU (5-20 s a program): the fast
# tier keeps one float32 case, padding, the CUDA lowering and the paths.
slow = pytest.mark.slow


@pytest.fixture(autouse=True)
def _float32_references():
  """On a GPU, XLA runs float32 matmuls as TF32 unless told otherwise; the
  references (fast_lstm, scan, the projections) must be float32 there, as
  the kernels' float32 is. A no-op on the CPU."""
  with jax.default_matmul_precision('highest' if ON_GPU else None):
    yield


def _args(steps, batch, hidden, seed=0):
  k = 4 * seed
  return (normal(k, (steps, batch, 4 * hidden)),
          normal(k + 1, (hidden, 4 * hidden)) / np.sqrt(hidden),
          0.5 * normal(k + 2, (batch, hidden)),
          0.5 * normal(k + 3, (batch, hidden)))


def _loss(recurrence, projected, w_h, c0, h0):
  """Touches every output and the final state with distinct weights."""
  (c, h), hs = recurrence(projected, w_h, c0, h0)
  w = jnp.sin(jnp.arange(hs.size, dtype=jnp.float32)).reshape(hs.shape)
  return jnp.sum(hs * w) + jnp.sum(jnp.tanh(c)) + jnp.sum(h ** 2)


def _value_and_grads(recurrence, args):
  outputs = jax.jit(recurrence)(*args)
  grads = jax.jit(jax.grad(functools.partial(_loss, recurrence),
                           (0, 1, 2, 3)))(*args)
  return outputs, grads


def _gpu(lengths=None, precision='float32', **kw):
  return lambda p, w, c, h: gpu_lstm.lstm_recurrence(
      p, w, c, h, 1.0, lengths, precision, interpret=INTERPRET, **kw)


def _fused(lengths=None):
  return lambda p, w, c, h: fast_lstm.lstm_recurrence(p, w, c, h, 1.0, 1,
                                                      lengths)


def _assert_close(a, b, **tol):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, **tol), a, b)


def _assert_near(a, b, rel):
  """Each leaf within ``rel`` of the largest magnitude in ``a``'s leaf."""
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, atol=rel * float(jnp.max(jnp.abs(x))))


def _lengths(batch, steps):
  """Every length from 0 to ``steps`` (0 and full included), cycled."""
  return jnp.arange(batch, dtype=jnp.int32) % (steps + 1)


# (steps, batch, hidden): batch 1; 7 and 20, which the 16-row tile does not
# divide (a masked last tile); 32, which it does (no masks); hidden 32-128.
@pytest.mark.parametrize('steps,batch,hidden,padded', [
    (5, 7, 32, True),
    pytest.param(4, 1, 32, False, marks=slow),
    pytest.param(3, 20, 64, True, marks=slow),
    pytest.param(3, 32, 128, False, marks=slow),
    pytest.param(4, 7, 128, True, marks=slow),
])
def test_float32_matches_fast_lstm_values_and_grads(steps, batch, hidden,
                                                    padded):
  args = _args(steps, batch, hidden)
  lengths = _lengths(batch, steps) if padded else None
  want = _value_and_grads(_fused(lengths), args)
  got = _value_and_grads(_gpu(lengths), args)
  _assert_close(want, got, rtol=1e-5, atol=1e-5)


def test_padding_keeps_the_state_and_zeroes_outputs_and_gate_grads():
  steps, batch, hidden = 5, 6, 32
  args = _args(steps, batch, hidden)
  lengths = jnp.array([0, 5, 2, 1, 3, 5])
  ((c, h), hs), grads = _value_and_grads(_gpu(lengths), args)
  dprojected, _, dc0, dh0 = grads
  valid = (jnp.arange(steps)[:, None] < lengths)[..., None]
  assert not jnp.any(jnp.where(valid, 0.0, hs))
  assert not jnp.any(jnp.where(valid, 0.0, dprojected))
  # An empty row returns its initial state; its state gradient is the loss's
  # gradient at the final state, passed through every padded step.
  np.testing.assert_array_equal(c[0], args[2][0])
  np.testing.assert_array_equal(h[0], args[3][0])
  np.testing.assert_allclose(dc0[0], 1 - jnp.tanh(args[2][0]) ** 2, rtol=1e-6)
  np.testing.assert_allclose(dh0[0], 2 * args[3][0], rtol=1e-6)


@slow
@pytest.mark.parametrize('tiling', [
    gpu_lstm.Tiling(block_rows=32, resident=True),
    gpu_lstm.Tiling(block_rows=16, resident=False, num_warps=4),
])
def test_every_tiling_computes_the_same_numbers(tiling):
  """Row tiles and where the weights live change the schedule, not the
  arithmetic: interpreted, each is bitwise the default's."""
  steps, batch, hidden = 4, 20, 64
  args = _args(steps, batch, hidden, seed=3)
  lengths = _lengths(batch, steps)
  want = _value_and_grads(_gpu(lengths), args)
  got = _value_and_grads(_gpu(lengths, tiling=tiling), args)
  if INTERPRET:
    jax.tree.map(np.testing.assert_array_equal, want, got)
  else:  # Compiled, a launch may order a dot's partial sums differently.
    _assert_close(want, got, rtol=1e-5, atol=1e-6)


def _primitives(jaxpr, counts):
  """How often each primitive occurs in ``jaxpr``, nested ones included."""
  for eqn in jaxpr.eqns:
    counts[eqn.primitive.name] += 1
    for value in eqn.params.values():
      for sub in value if isinstance(value, (tuple, list)) else [value]:
        if isinstance(sub, jax_core.ClosedJaxpr):
          sub = sub.jaxpr
        if isinstance(sub, jax_core.Jaxpr):
          _primitives(sub, counts)
  return counts


@pytest.mark.parametrize('batch,masked', [(7, True), (16, False)])
def test_a_tile_past_the_batch_loads_and_stores_masked(batch, masked):
  """Interpreted, a tile past the batch reads padding and its writes are
  dropped, so only the kernels' structure shows what a GPU needs: every
  load and store of a batch row masked when the 16-row tile does not divide
  the batch (Triton would touch memory past the arrays), none otherwise."""
  args = _args(3, batch, 32)
  run = _gpu(jnp.ones(batch, jnp.int32))
  jaxpr = jax.make_jaxpr(jax.grad(functools.partial(_loss, run)))(*args)
  counts = _primitives(jaxpr.jaxpr, collections.Counter())
  assert counts['pallas_call'] == 2
  if masked:  # Unmasked reads are the weights' only (no batch axis).
    assert counts['masked_load'] and counts['masked_swap'] and not counts['swap']
  else:
    assert not counts['masked_load'] and not counts['masked_swap']


def _bfloat16_reference(lengths):
  """``fast_lstm``'s recurrence with the recurrent matmul's operands
  rounded to bfloat16 and float32 accumulation; autodiff for gradients."""
  def recurrence(projected, w_h, c0, h0):
    hidden = w_h.shape[0]
    w = w_h.astype(jnp.bfloat16)
    valid = (jnp.ones(projected.shape[:2], bool) if lengths is None else
             jnp.arange(projected.shape[0])[:, None] < lengths)

    def step(carry, xs):
      p, ok = xs
      c, h = carry
      gates = p + jnp.dot(h.astype(jnp.bfloat16), w,
                          preferred_element_type=jnp.float32)
      i, j, f, o = (gates[:, g * hidden:(g + 1) * hidden] for g in range(4))
      c_new = jax.nn.sigmoid(f + 1.0) * c + jax.nn.sigmoid(i) * jnp.tanh(j)
      h_new = jax.nn.sigmoid(o) * jnp.tanh(c_new)
      ok = ok[:, None]
      return ((jnp.where(ok, c_new, c), jnp.where(ok, h_new, h)),
              jnp.where(ok, h_new, 0.0))

    return jax.lax.scan(step, (c0, h0), (projected, valid))
  return recurrence


@slow
@pytest.mark.parametrize('steps,batch,hidden', [(4, 7, 64), (3, 5, 256)])
def test_bfloat16_operands_match_a_reference_rounding_the_same(steps, batch,
                                                               hidden):
  args = _args(steps, batch, hidden, seed=1)
  lengths = _lengths(batch, steps)
  (want, want_grads) = _value_and_grads(_bfloat16_reference(lengths), args)
  (got, got_grads) = _value_and_grads(_gpu(lengths, 'bfloat16'), args)
  _assert_close(want, got, rtol=2e-3, atol=2e-3)
  # The gradients round differently (autodiff rounds the matmul's result to
  # bfloat16, the kernel its gate-gradient operand): bfloat16's 3 digits.
  _assert_near(want_grads, got_grads, 2e-2)
  # And float32 is further away than bfloat16 rounding from neither.
  (exact, _) = _value_and_grads(_fused(lengths), args)
  _assert_close(exact, got, atol=5e-2)


@slow
def test_tensorfloat32_runs_the_float32_recurrence():
  """TF32 is a GPU tensor-core mode; interpreted on a CPU the products are
  float32, so the numbers are fast_lstm's (on a GPU: to TF32 rounding)."""
  args = _args(3, 7, 32, seed=2)
  lengths = _lengths(7, 3)
  want = _value_and_grads(_fused(lengths), args)
  got = _value_and_grads(_gpu(lengths, 'tensorfloat32'), args)
  _assert_close(want, got, rtol=1e-5 if INTERPRET else 2e-2,
                atol=1e-5 if INTERPRET else 2e-2)


@slow
def test_vmap_over_models_equals_each_model():
  """A sweep vmaps the layer over models: the kernels get a grid axis."""
  models = [_args(3, 7, 32, seed=s) for s in (4, 5)]
  stacked = jax.tree.map(lambda *a: jnp.stack(a), *models)
  lengths = _lengths(7, 3)
  run = _gpu(lengths)
  loss = jax.grad(functools.partial(_loss, run), (0, 1, 2, 3))
  outputs, grads = jax.jit(jax.vmap(run))(*stacked), jax.jit(
      jax.vmap(loss))(*stacked)
  for m, args in enumerate(models):
    want_outputs, want_grads = _value_and_grads(run, args)
    _assert_close(want_outputs, jax.tree.map(lambda a, m=m: a[m], outputs),
                  rtol=1e-6, atol=1e-6)
    _assert_close(want_grads, jax.tree.map(lambda a, m=m: a[m], grads),
                  rtol=1e-5, atol=1e-6)


@pytest.fixture
def gpu_layers(monkeypatch):
  """The layers' ``impl='gpu'`` as on a GPU backend, kernels interpreted
  when there is none."""
  if not ON_GPU:
    monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
    monkeypatch.setattr(gpu_lstm.Device, 'of', classmethod(
        lambda cls, device: gpu_lstm.Device('cuda', 'NVIDIA H100', (9, 0))))
    monkeypatch.setattr(gpu_lstm, 'lstm_recurrence', functools.partial(
        gpu_lstm.lstm_recurrence, interpret=True))


@slow
@pytest.mark.parametrize('reverse', [False, True])
def test_layer_matches_scan_with_lengths(gpu_layers, reverse):
  del gpu_layers
  x = normal(0, (7, 5, 3))
  seq_lengths = jnp.array([5, 0, 3, 1, 5, 2, 4])
  scan = LSTM(32, impl='scan', reverse=reverse)
  gpu = LSTM(32, impl='gpu', reverse=reverse)
  params = scan.init(jax.random.key(1), x)
  # Same parameters, names and values: checkpoints interchange.
  jax.tree.map(np.testing.assert_array_equal, params,
               gpu.init(jax.random.key(1), x))

  def loss(layer, p):
    (c, h), out = layer.apply(p, x, seq_lengths=seq_lengths)
    return jnp.sum(out * jnp.cos(out)) + jnp.sum(c) + jnp.sum(h ** 2)

  for layer in (scan, gpu):
    assert jnp.isfinite(loss(layer, params))
  _assert_close(scan.apply(params, x, seq_lengths=seq_lengths),
                gpu.apply(params, x, seq_lengths=seq_lengths),
                rtol=1e-5, atol=1e-6)
  _assert_close(jax.grad(functools.partial(loss, scan))(params),
                jax.grad(functools.partial(loss, gpu))(params),
                rtol=1e-4, atol=1e-5)


H100 = gpu_lstm.Device('cuda', 'NVIDIA H100 80GB HBM3', (9, 0))


@pytest.mark.parametrize('device, precision, reason', [
    (H100, 'bfloat16', None),
    (H100, 'float32', None),
    (gpu_lstm.Device('rocm', 'AMD Instinct MI300X', (9, 4)), 'bfloat16',
     'the kernels are compiled by Triton for NVIDIA GPUs (CUDA); this GPU '
     '(AMD Instinct MI300X) runs rocm'),
    (gpu_lstm.Device('cuda', 'Tesla T4', (7, 5)), 'bfloat16',
     "Triton's tensor-core dots need compute capability 8.0 or newer; this "
     'Tesla T4 has compute capability 7.5'),
    (gpu_lstm.Device('cuda', 'NVIDIA L4', (8, 9)), 'bfloat16',
     "at hidden_size=128 and matmul_precision='bfloat16' its tiling needs 136 "
     'KiB of shared memory a block; this NVIDIA L4 (sm_89) has 99 KiB'),
    (gpu_lstm.Device('cuda', 'NVIDIA L4', (8, 9)), 'float32', None),
])
def test_the_device_decides_whether_the_kernels_run(device, precision, reason):
  assert gpu_lstm.device_reason(device, 128, precision) == reason
  assert gpu_lstm.why_not(128, 'float32', precision, 'gpu',
                          device=device) == reason


def test_a_device_kind_pallas_does_not_know_is_refused(monkeypatch):
  monkeypatch.setattr(gpu_lstm, 'pallas_knows', lambda kind: False)
  assert gpu_lstm.device_reason(H100, 128, 'bfloat16') == (
      "the installed jax's Pallas (Triton) does not know the device kind "
      "'NVIDIA H100 80GB HBM3'")


def test_the_shared_memory_estimate_matches_the_sm90a_compile_table():
  """experiments/results/gpu-kernel/compile_sm90a.md, 16 rows, 1 stage."""
  held = gpu_lstm.Tiling(block_rows=16, resident=True, num_warps=8)
  per_step = gpu_lstm.Tiling(block_rows=16, resident=False, num_warps=8)
  kib = lambda *a: gpu_lstm.shared_memory_bytes(*a) / 1024
  assert kib(128, 'bfloat16', held) == 136
  assert kib(128, 'tensorfloat32', held) == 264
  assert kib(128, 'tensorfloat32', per_step) == 72
  assert kib(128, 'bfloat16', per_step) >= 36  # never below what it needs


def test_auto_leaves_the_kernels_out_until_a_gpu_measured_them(monkeypatch):
  """Forced, they run; timed auto considers them only on device kinds in
  GPU_KERNEL_MEASURED_FASTER_ON, where a GPU measured them faster."""
  layer = paths.Layer()
  monkeypatch.setattr(gpu_lstm.Device, 'of', classmethod(lambda cls, d: H100))
  assert paths.why_not('gpu', layer, 'gpu') is None
  assert paths.eligible(layer, 'gpu', H100.kind) == ('fused', 'scan')
  monkeypatch.setattr(paths, 'GPU_KERNEL_MEASURED_FASTER_ON',
                      frozenset({H100.kind}))
  assert paths.eligible(layer, 'gpu', H100.kind) == ('fused', 'gpu', 'scan')
  assert paths.eligible(layer, 'gpu', 'NVIDIA A100-SXM4-40GB') == (
      'fused', 'scan')


def test_only_a_gpu_backend_runs_it_and_a_forced_use_elsewhere_is_one_line():
  layer = paths.Layer()
  assert 'gpu' not in paths.eligible(layer, 'cpu')
  with pytest.raises(ConfigError) as e:
    paths.check('gpu', layer, 'cpu')
  assert str(e.value) == (
      "impl='gpu' cannot run this layer on the cpu backend: the GPU kernels "
      "run on the gpu backend only, this is cpu; use impl='kernel' or "
      "'fused' or 'scan'.")
  if not ON_GPU:
    with pytest.raises(ConfigError, match='gpu backend only'):
      LSTM(16, impl='gpu').init(jax.random.key(0), jnp.ones((2, 3, 4)))


@pytest.mark.parametrize('layer,reason', [
    (paths.Layer(hidden_size=48), 'power of two from 16 to 128, got 48'),
    (paths.Layer(hidden_size=256), 'power of two from 16 to 128, got 256'),
    (paths.Layer(hidden_size=8, matmul_precision='bfloat16'),
     'power of two from 16 to 256, got 8'),
    (paths.Layer(dtype='bfloat16'), "got dtype='bfloat16'"),
    (paths.Layer(sharded=True), 'sharded jax.jit'),
    (paths.Layer(cell='GRUCell'), "runs only seqclf's LSTMCell"),
])
def test_what_it_cannot_run_is_said_once_in_paths(layer, reason):
  assert reason in paths.why_not('gpu', layer, 'gpu')
  assert 'gpu' not in paths.eligible(layer, 'gpu')


def test_every_precision_and_hidden_size_it_claims_is_eligible_on_a_gpu(
    monkeypatch):
  monkeypatch.setattr(gpu_lstm.Device, 'of', classmethod(lambda cls, d: H100))
  for precision in gpu_lstm.PRECISIONS:
    for hidden in (16, 32, 64, 128):
      layer = paths.Layer(hidden_size=hidden, matmul_precision=precision)
      assert paths.why_not('gpu', layer, 'gpu') is None, (precision, hidden)
  assert paths.why_not('gpu', paths.Layer(
      hidden_size=256, matmul_precision='bfloat16'), 'gpu') is None
  with pytest.raises(ValueError, match="impl='gpu' cannot run this layer"):
    gpu_lstm.lstm_recurrence(*_args(2, 2, 48), interpret=True)


def _lower_for_cuda(precision, lengths):
  """The training step's kernels lowered for CUDA on this machine: Pallas
  traces the kernels and emits them as Triton IR, as on a GPU.

  The target is an abstract H100 (jax >= 0.12 reads the GPU's compute
  capability from the device, or from an abstract one where there is none).
  """
  steps, batch, hidden = 28, 100, 128
  f32 = lambda *s: jax.ShapeDtypeStruct(s, jnp.float32)
  run = lambda *a: gpu_lstm.lstm_recurrence(*a, 1.0, lengths, precision)
  grad = jax.jit(jax.grad(functools.partial(_loss, run), (0, 1, 2, 3)))
  h100 = jax.sharding.AbstractDevice(
      device_kind='NVIDIA H100', num_cores=None, platform='gpu')
  try:
    with jax.sharding.use_abstract_mesh(
        jax.sharding.AbstractMesh((1,), ('batch',), abstract_device=h100)):
      lowered = grad.trace(
          f32(steps, batch, 4 * hidden), f32(hidden, 4 * hidden),
          f32(batch, hidden), f32(batch, hidden)).lower(
              lowering_platforms=('cuda',))
  except RuntimeError as e:
    # jax >= 0.11 compiles the Triton IR while lowering, which needs the CUDA
    # plugin's compiler; without it this check cannot run here.
    if 'Triton compilation handler' in str(e):
      pytest.skip(f'this jax lowers Pallas Triton only with a GPU plugin: {e}')
    raise
  return lowered.as_text()


@pytest.mark.parametrize('precision', gpu_lstm.PRECISIONS)
def test_kernels_lower_for_cuda_without_a_gpu(precision):
  text = _lower_for_cuda(precision, _lengths(100, 28))
  calls = [line for line in text.splitlines() if 'custom_call' in line]
  # The forward (training) and the backward kernel, each one Triton call.
  assert sum('triton' in line for line in calls) == 2, calls


@on_gpu
@pytest.mark.parametrize('precision,rel', [('float32', 1e-5),
                                           ('tensorfloat32', 2e-2)])
def test_on_the_gpu_matches_fast_lstm_at_highest_precision(precision, rel):
  """Compiled on the GPU: fast_lstm at float32 (HIGHEST) is the reference."""
  steps, batch, hidden = 28, 100, 128
  args = _args(steps, batch, hidden)
  lengths = _lengths(batch, steps)
  with jax.default_matmul_precision('highest'):
    want = _value_and_grads(_fused(lengths), args)
  got = _value_and_grads(_gpu(lengths, precision), args)
  _assert_near(want, got, rel)


@on_gpu
@pytest.mark.parametrize('tiling', [
    gpu_lstm.Tiling(16, True, 8), gpu_lstm.Tiling(16, False, 4),
    gpu_lstm.Tiling(32, False, 8), gpu_lstm.Tiling(64, False, 8)])
def test_on_the_gpu_every_tiling_matches_bfloat16_reference(tiling):
  steps, batch, hidden = 28, 1000, 128
  args = _args(steps, batch, hidden)
  lengths = _lengths(batch, steps)
  want, want_grads = _value_and_grads(_bfloat16_reference(lengths), args)
  got, got_grads = _value_and_grads(_gpu(lengths, 'bfloat16', tiling=tiling),
                                    args)
  _assert_near(want, got, 5e-3)
  _assert_near(want_grads, got_grads, 2e-2)
