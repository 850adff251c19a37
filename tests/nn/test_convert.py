"""LSTM parameters between seqclf's layout and each of flax's LSTM cells.

Every conversion both ways: seqclf -> flax -> seqclf and flax -> seqclf ->
flax give the values back (the kernels bitwise, the forget bias to float
rounding of one addition), and the mapped weights compute what seqclf's
layer computes, for linen's ``LSTMCell`` and ``OptimizedLSTMCell`` and
NNX's ``LSTMCell`` and ``OptimizedLSTMCell``.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import normal, perturbed
from seqclf.errors import UsageError
from seqclf.nn import convert, recurrent

HIDDEN, FEATURES, FORGET_BIAS = 8, 3, 0.5
# Each flax cell: how its params are laid out (to_flax_lstm's keywords).
CELLS = {'linen.LSTMCell': {}, 'linen.OptimizedLSTMCell': {},
         'nnx.LSTMCell': {'nnx': True},
         'nnx.OptimizedLSTMCell': {'nnx': True, 'optimized': True}}



def _flax_rnn(name):
  """flax's RNN of cell ``name``, its params as a dict, and a function
  running it on params ``(x, seq_lengths) -> (carry, outputs)``."""
  if name.startswith('linen.'):
    cell = getattr(nn, name.split('.')[1])(HIDDEN)
    rnn = nn.RNN(cell, return_carry=True)
    x = jnp.zeros((1, FEATURES))  # one step: the cell's params, no scan
    params = cell.init(jax.random.key(0), cell.initialize_carry(
        jax.random.key(0), x.shape), x)['params']
    return params, lambda p, x, lengths: rnn.apply(
        {'params': {'cell': p}}, x, seq_lengths=lengths)
  cell = getattr(nnx, name.split('.')[1])(FEATURES, HIDDEN, rngs=nnx.Rngs(0))
  rnn = nnx.RNN(cell, return_carry=True)

  def run(p, x, lengths):
    state = nnx.state(cell, nnx.Param)
    nnx.replace_by_pure_dict(state, p)
    nnx.update(cell, state)
    return rnn(x, seq_lengths=lengths)

  return nnx.to_pure_dict(nnx.state(cell, nnx.Param)), run


def _seqclf_params():
  layer = recurrent.LSTM(HIDDEN, forget_bias=FORGET_BIAS)
  params = layer.init(jax.random.key(1), jnp.zeros((1, 2, FEATURES)))
  return perturbed(params['params']['cell'], 3)


def _assert_round_trip(back, original):
  assert jax.tree.structure(back) == jax.tree.structure(original)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(back),
                          jax.tree.leaves(original)):
    if 'bias' in jax.tree_util.keystr(path):
      np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    else:
      np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize('name', CELLS)
def test_seqclf_to_flax_and_back(name):
  params = _seqclf_params()
  flax_params = convert.to_flax_lstm(params, FORGET_BIAS, **CELLS[name])
  theirs, _ = _flax_rnn(name)
  assert jax.tree.map(jnp.shape, flax_params) == jax.tree.map(jnp.shape,
                                                              theirs)
  _assert_round_trip(convert.from_flax_lstm(flax_params, FORGET_BIAS), params)


@pytest.mark.parametrize('name', CELLS)
def test_flax_to_seqclf_and_back(name):
  theirs, _ = _flax_rnn(name)
  theirs = perturbed(theirs, 4)
  ours = convert.from_flax_lstm(theirs, FORGET_BIAS)
  _assert_round_trip(convert.to_flax_lstm(ours, FORGET_BIAS, **CELLS[name]),
                     theirs)


@pytest.mark.parametrize('name', [
    'linen.LSTMCell', 'nnx.OptimizedLSTMCell',
    pytest.param('linen.OptimizedLSTMCell', marks=pytest.mark.slow),
    pytest.param('nnx.LSTMCell', marks=pytest.mark.slow)])
def test_mapped_weights_compute_what_seqclf_computes(name):
  """Carries and valid outputs (flax computes on past a row's length)."""
  params = _seqclf_params()
  _, run = _flax_rnn(name)
  x = normal(5, (3, 6, FEATURES))
  lengths = jnp.array([6, 2, 4])
  layer = recurrent.LSTM(HIDDEN, forget_bias=FORGET_BIAS)
  carry, out = layer.apply({'params': {'cell': params}}, x,
                           seq_lengths=lengths)
  their_carry, theirs = run(
      convert.to_flax_lstm(params, FORGET_BIAS, **CELLS[name]), x, lengths)
  valid = np.arange(6)[None] < np.asarray(lengths)[:, None]
  for a, b in ((carry, their_carry), (out[valid], theirs[valid])):
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-5,
                                                        atol=1e-6), a, b)


def test_linen_has_no_fused_layout():
  with pytest.raises(UsageError, match="pass nnx=True too") as e:
    convert.to_flax_lstm(_seqclf_params(), optimized=True)
  assert '\n' not in str(e.value)
