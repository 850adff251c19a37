"""seqclf's layers as flax ``nn.RNN``: lengths, direction, layout, Bidirectional.

Every implementation of every cell is checked against flax's own
``nn.RNN`` loop (running the same cell, or for the LSTM flax's
``OptimizedLSTMCell`` under mapped weights) and against each row computed
alone without padding, values and gradients: the kernel's and the fused
path's backward passes must treat padding as ``nn.scan`` does.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from seqclf.nn import convert

from conftest import needs_cpu_kernel, normal, perturbed, uniform
from seqclf.errors import ConfigError
from seqclf.kernels import lstm_kernel
from seqclf.nn import cells, classifier, recurrent

pytestmark = pytest.mark.gpu  # the nn.RNN contract, on every backend
IMPLS = ['scan', 'fused', pytest.param('kernel', marks=needs_cpu_kernel)]
# (cell, impl): the LSTM on every path, the other cells on theirs. The fast
# tier runs the paths with hand-written backward passes; the `nn.scan` ones,
# whose padding is plain JAX, are in the full suite.
LAYERS = [pytest.param('lstm', 'scan', marks=pytest.mark.slow),
          ('lstm', 'fused'),
          pytest.param('lstm', 'kernel', marks=needs_cpu_kernel),
          pytest.param('gru', 'scan', marks=pytest.mark.slow),
          pytest.param('elman', 'scan', marks=pytest.mark.slow)]
LENGTHS = np.array([6, 3, 1, 5, 2])  # of T = 6 steps; 0 is tested apart
HIDDEN = 16


def _layer(cell, impl, **kwargs):
  layer = {'lstm': recurrent.LSTM, 'gru': recurrent.GRU, 'elman': recurrent.Elman}
  return layer[cell](HIDDEN, impl=impl, **kwargs)



def _setup(cell, impl, shape=(5, 6, 3), **kwargs):
  x = normal(1, shape)
  layer = _layer(cell, impl, **kwargs)
  params = perturbed(jax.jit(layer.init)(jax.random.key(0), x)['params'])
  return layer, params, x


class _Adapter(nn.RNNCellBase):
  """One of seqclf's cells with flax's cell interface, for flax's nn.RNN."""

  inner: nn.Module

  @nn.compact
  def __call__(self, carry, x):
    return self.inner(carry, x)

  def initialize_carry(self, rng, input_shape):
    del rng
    return self.inner.initialize_carry(input_shape[:-1])

  @property
  def num_feature_axes(self) -> int:
    return 1


def _flax_rnn(cell, **kwargs):
  """flax's nn.RNN loop over the same cell, and our params mapped to it."""
  inner = {'lstm': cells.LSTMCell, 'gru': cells.GRUCell,
           'elman': cells.ElmanCell}[cell](HIDDEN)
  return (nn.RNN(_Adapter(inner), return_carry=True, **kwargs),
          lambda p: {'cell': {'inner': p['cell']}})


def _valid(lengths, steps):
  return np.arange(steps)[None, :] < lengths[:, None]


def _assert_close(a, b):
  jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=2e-5,
                                                      atol=2e-6), a, b)


@pytest.mark.parametrize('cell,impl', LAYERS)
@pytest.mark.parametrize('reverse,keep_order', [
    (False, False), pytest.param(True, False, marks=pytest.mark.slow),
    (True, True)])
def test_seq_lengths_and_direction_match_flax_rnn(cell, impl, reverse,
                                                  keep_order):
  layer, params, x = _setup(cell, impl)
  reference, mapped = _flax_rnn(cell)
  kwargs = dict(seq_lengths=jnp.asarray(LENGTHS), reverse=reverse,
                keep_order=keep_order)
  carry, out = layer.apply({'params': params}, x, **kwargs)
  their_carry, theirs = reference.apply({'params': mapped(params)}, x,
                                        **kwargs)
  _assert_close(carry, their_carry)
  valid = _valid(LENGTHS, x.shape[1])
  # flax computes on past the end; seqclf's outputs there are zero.
  np.testing.assert_allclose(out[valid], theirs[valid], rtol=2e-5, atol=2e-6)
  np.testing.assert_array_equal(out[~valid], 0.0)


@pytest.mark.parametrize('impl', IMPLS)
def test_lstm_with_lengths_matches_flax_optimized_lstm_cell(impl):
  layer, params, x = _setup('lstm', impl)
  reference = nn.RNN(nn.OptimizedLSTMCell(HIDDEN), return_carry=True)
  lengths = jnp.asarray(LENGTHS)
  (c, h), out = layer.apply({'params': params}, x, seq_lengths=lengths)
  mapped = {'cell': convert.to_flax_lstm(params['cell'], 1.0)}
  (c2, h2), theirs = reference.apply({'params': mapped},
                                     x, seq_lengths=lengths)
  valid = _valid(LENGTHS, x.shape[1])
  _assert_close((c, h, out[valid]), (c2, h2, theirs[valid]))


@pytest.mark.parametrize('cell,impl', LAYERS)
def test_bidirectional_matches_flax_bidirectional(cell, impl):
  layer, params, x = _setup(cell, impl)
  ours = nn.Bidirectional(_layer(cell, impl), _layer(cell, impl))
  forward, mapped = _flax_rnn(cell)
  backward, _ = _flax_rnn(cell)
  theirs = nn.Bidirectional(forward, backward)
  variables = jax.jit(ours.init)(jax.random.key(3), x)
  params = perturbed(variables['params'])
  flax_params = {k: mapped(v) for k, v in params.items()}
  lengths = jnp.asarray(LENGTHS)
  out = ours.apply({'params': params}, x, seq_lengths=lengths)
  expected = theirs.apply({'params': flax_params}, x, seq_lengths=lengths)
  valid = _valid(LENGTHS, x.shape[1])
  np.testing.assert_allclose(out[valid], expected[valid], rtol=2e-5,
                             atol=2e-6)
  carry, out2 = ours.apply({'params': params}, x, seq_lengths=lengths,
                           return_carry=True)
  their_carry, _ = theirs.apply({'params': flax_params}, x,
                                seq_lengths=lengths, return_carry=True)
  _assert_close(carry, their_carry)
  np.testing.assert_array_equal(out, out2)


def _row_loss(carry, out):
  """Touches every output and the final carry with distinct weights."""
  w = jnp.sin(jnp.arange(out.shape[-2] * out.shape[-1], dtype=jnp.float32)
              ).reshape(out.shape[-2:])
  return jnp.sum(out * w) + sum(jnp.sum(jnp.tanh(c)) for c in
                                jax.tree.leaves(carry))


# The fast tier keeps the kernel's and fused path's backward passes.
ROW_CASES = [
    ('lstm', 'fused', False),
    pytest.param('lstm', 'kernel', False, marks=needs_cpu_kernel),
    *(pytest.param(*case, marks=pytest.mark.slow) for case in (
        ('lstm', 'scan', False), ('gru', 'scan', False),
        ('elman', 'scan', False), ('lstm', 'scan', True),
        ('lstm', 'fused', True), ('gru', 'scan', True))),
    pytest.param('lstm', 'kernel', True,
                 marks=[needs_cpu_kernel, pytest.mark.slow]),
]


@pytest.mark.parametrize('cell,impl,reverse', ROW_CASES)
def test_padded_batch_equals_each_row_alone(cell, impl, reverse):
  """Values and gradients (params, inputs, initial carry) of a padded batch
  are those of each row run alone on its valid steps: padding changes
  nothing, and gets zero input gradient."""
  layer, params, x = _setup(cell, impl)
  carry0 = jax.tree.map(
      lambda c: 0.1 * normal(4, c.shape),
      jax.eval_shape(layer.apply, {'params': params}, x)[0])
  lengths = jnp.asarray(LENGTHS)

  def padded(p, x, carry0):
    carry, out = layer.apply({'params': p}, x, carry0, seq_lengths=lengths,
                             reverse=reverse, keep_order=True)
    return sum(_row_loss(jax.tree.map(lambda c: c[b], carry), out[b, :n])
               for b, n in enumerate(LENGTHS)), (carry, out)

  def alone(p, x, carry0):
    total, rows = 0.0, []
    for b, n in enumerate(LENGTHS):
      carry, out = layer.apply({'params': p}, x[b:b + 1, :n],
                               jax.tree.map(lambda c: c[b:b + 1], carry0),
                               reverse=reverse, keep_order=True)
      total += _row_loss(jax.tree.map(lambda c: c[0], carry), out[0])
      rows.append((carry, out))
    return total, rows

  (l1, (carry, out)), g1 = jax.jit(jax.value_and_grad(
      padded, (0, 1, 2), has_aux=True))(params, x, carry0)
  (l2, rows), g2 = jax.jit(jax.value_and_grad(
      alone, (0, 1, 2), has_aux=True))(params, x, carry0)
  np.testing.assert_allclose(l1, l2, rtol=1e-5)
  for b, (row_carry, row_out) in enumerate(rows):
    n = LENGTHS[b]
    _assert_close(jax.tree.map(lambda c: c[b:b + 1], carry), row_carry)
    _assert_close(out[b:b + 1, :n], row_out)
    np.testing.assert_array_equal(out[b, n:], 0.0)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4,
                                                      atol=1e-5), g1, g2)
  dx = g1[1]
  np.testing.assert_array_equal(dx[~_valid(LENGTHS, x.shape[1])], 0.0)


@pytest.mark.parametrize('cell,impl', LAYERS)
def test_time_major_return_carry_and_attributes(cell, impl):
  layer, params, x = _setup(cell, impl)
  carry, out = layer.apply({'params': params}, x)
  major = layer.apply({'params': params}, jnp.swapaxes(x, 0, 1),
                      time_major=True, return_carry=False)
  np.testing.assert_array_equal(jnp.swapaxes(major, 0, 1), out)
  # The same overrides as attributes, as nn.RNN has them.
  attrs = _layer(cell, impl, time_major=True, return_carry=False,
                 reverse=True, keep_order=True)
  reversed_out = attrs.apply({'params': params}, jnp.swapaxes(x, 0, 1))
  _, expected = layer.apply({'params': params}, x, reverse=True,
                            keep_order=True)
  np.testing.assert_array_equal(jnp.swapaxes(reversed_out, 0, 1), expected)
  with pytest.raises(ValueError, match='seq_lengths must have the batch'):
    layer.apply({'params': params}, x, seq_lengths=jnp.array([1, 2]))


@pytest.mark.parametrize('cell,impl', LAYERS)
def test_empty_batch_zero_steps_and_zero_lengths_return_the_carry(cell,
                                                                  impl):
  layer, params, x = _setup(cell, impl)
  carry0 = jax.tree.map(lambda c: c + 0.5, layer.apply({'params': params},
                                                       x)[0])
  for shape in ((0, 6, 3), (5, 0, 3)):
    carry, out = layer.apply({'params': params}, jnp.ones(shape),
                             jax.tree.map(lambda c: c[:shape[0]], carry0))
    assert out.shape == (*shape[:2], HIDDEN)
    _assert_close(carry, jax.tree.map(lambda c: c[:shape[0]], carry0))
  # Gradients with zero steps reach the initial carry unchanged.
  grad = jax.grad(lambda c: sum(jnp.sum(v) for v in jax.tree.leaves(
      layer.apply({'params': params}, jnp.ones((5, 0, 3)), c)[0])))(carry0)
  jax.tree.map(lambda g: np.testing.assert_array_equal(g, 1.0), grad)
  # A row of length 0 keeps its initial carry; its outputs are zero.
  lengths = jnp.array([0, 6, 0, 2, 1])
  carry, out = layer.apply({'params': params}, x, carry0, seq_lengths=lengths)
  jax.tree.map(lambda c, c0: np.testing.assert_array_equal(c[0], c0[0]),
               carry, carry0)
  np.testing.assert_array_equal(out[0], 0.0)


@pytest.mark.parametrize('impl', IMPLS)
@pytest.mark.parametrize('cell', ['lstm', 'gru', 'elman'])
def test_bfloat16_params_initialize(cell, impl):
  """param_dtype=bfloat16: drawn in float32 (orthogonal's QR has no
  bfloat16), then cast; the kernel computes in float32 from them."""
  if cell != 'lstm' and impl != 'scan':
    pytest.skip('the fast paths are the LSTM cell\'s')
  x = jnp.ones((2, 3, 4))
  dtype = jnp.float32 if impl == 'kernel' else None
  layer = _layer(cell, impl, param_dtype=jnp.bfloat16, dtype=dtype)
  params = jax.jit(layer.init)(jax.random.key(0), x)['params']
  assert {p.dtype for p in jax.tree.leaves(params)} == {jnp.dtype(jnp.bfloat16)}
  f32 = _layer(cell, 'scan').init(jax.random.key(0), x)['params']
  np.testing.assert_array_equal(
      params['cell']['hidden']['kernel'],
      f32['cell']['hidden']['kernel'].astype(jnp.bfloat16))
  _, out = layer.apply({'params': params}, x)
  assert bool(jnp.all(jnp.isfinite(out)))
  if impl == 'kernel':  # dtype=None computes in bfloat16: named, with the fix.
    with pytest.raises(ConfigError, match=r"computes in float32, got "
                       r"dtype='bfloat16'; use impl='fused' or 'scan'"):
      _layer(cell, impl, param_dtype=jnp.bfloat16).init(jax.random.key(0), x)


@pytest.mark.slow
def test_classifier_reads_each_rows_last_valid_step():
  """Given lengths, the logits of a padded batch are each row's alone, one
  direction or two (the reverse one read at its first step)."""
  images = uniform(5, (3, 28, 28))
  lengths = (28, 9, 17)
  for bidirectional in (False, True):
    model = classifier.LSTMClassifier(hidden_size=16, num_layers=2,
                                  bidirectional=bidirectional)
    params = jax.jit(model.init)(jax.random.key(0), images)

    @jax.jit  # One program: each apply compiled alone costs a second.
    def logits(params, images, model=model):
      return (model.apply(params, images, seq_lengths=jnp.array(lengths)),
              [model.apply(params, images[b:b + 1, :n])
               for b, n in enumerate(lengths)],
              model.apply(params, images, seq_lengths=jnp.full((3,), 28)),
              model.apply(params, images))

    padded, alone, full, unpadded = logits(params, images)
    for b, row in enumerate(alone):
      np.testing.assert_allclose(padded[b:b + 1], row, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(full, unpadded, rtol=1e-5, atol=1e-6)


@needs_cpu_kernel
def test_every_transform_works_or_names_the_path_that_has_it():
  """scan: forward mode and second order; fused: second order (reverse over
  reverse) equal to scan's; the custom-VJP paths under forward mode and the
  kernel's second derivative are errors that say so."""
  x = normal(0, (3, 4, 5))
  v = normal(1, x.shape)
  params = None
  losses = {}
  for impl in ('scan', 'fused', 'kernel'):
    layer = recurrent.LSTM(16, impl=impl)
    params = params or perturbed(layer.init(jax.random.key(2), x)['params'])
    losses[impl] = lambda x, layer=layer: _row_loss(
        *layer.apply({'params': params}, x, seq_lengths=jnp.array([4, 2, 0])))
  scan = losses['scan']
  # Jitted: each is one program (run eagerly, each op compiles on its own).
  _, tangent = jax.jit(lambda x: jax.jvp(scan, (x,), (v,)))(x)
  np.testing.assert_allclose(tangent, jnp.vdot(jax.jit(jax.grad(scan))(x), v),
                             rtol=1e-4)
  assert jax.jit(jax.jacfwd(scan))(x).shape == x.shape
  hvp = lambda f: jax.jit(jax.grad(lambda x: jnp.vdot(jax.grad(f)(x), v)))(x)
  np.testing.assert_allclose(hvp(losses['fused']), hvp(scan), rtol=1e-4,
                             atol=1e-5)
  for impl in ('fused', 'kernel'):
    forward_modes = {'jvp': lambda f: jax.jvp(f, (x,), (v,)),
                     'jacfwd': lambda f: jax.jacfwd(f)(x),
                     'jit(jacfwd)': lambda f: jax.jit(jax.jacfwd(f))(x)}
    for forward in forward_modes.values():
      with pytest.raises(TypeError, match=f"impl='{impl}'.*impl='scan'"):
        forward(losses[impl])
  with pytest.raises(lstm_kernel.KernelError, match='first derivatives only'):
    hvp(losses['kernel'])
