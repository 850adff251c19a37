"""seqclf's NNX LSTM against flax's own NNX LSTMs, under mapped weights.

``nnx.RNN(nnx.OptimizedLSTMCell)`` and ``nnx.RNN(nnx.LSTMCell)`` given the
weights ``seqclf.nn.convert`` maps, on every path, with lengths and in both
directions: the same carries and valid outputs, and the same gradients
(flax's mapped back). Past a row's length flax computes on and seqclf gives
zeros, so only the valid steps are compared.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import needs_cpu_kernel
from nnx_cases import HIDDEN, LENGTHS, assert_close, inputs, layer, valid
from seqclf import nnx as seqnnx
from seqclf.nn import convert

FLAX_CELLS = {'optimized': nnx.OptimizedLSTMCell, 'lstm': nnx.LSTMCell}


def _flax_rnn(model, kind, **kwargs):
  """flax's nnx.RNN of ``kind`` holding ``model``'s weights, mapped."""
  cell = FLAX_CELLS[kind](3, HIDDEN, rngs=nnx.Rngs(0))
  mapped = convert.to_flax_lstm(seqnnx.to_linen_params(model)['cell'], 1.0,
                                nnx=True, optimized=kind == 'optimized')
  state = nnx.state(cell, nnx.Param)
  nnx.replace_by_pure_dict(state, mapped)
  nnx.update(cell, state)
  return nnx.RNN(cell, **kwargs)


def _loss(carry, out, mask):
  """Every valid output and the final carry, with distinct weights."""
  w = jnp.sin(jnp.arange(out.shape[-2] * out.shape[-1], dtype=jnp.float32)
              ).reshape(out.shape[-2:])
  return (jnp.sum(jnp.where(mask[..., None], out * w, 0.0))
          + sum(jnp.sum(jnp.tanh(c)) for c in jax.tree.leaves(carry)))


def _flax_cell_grads(grads, kind):
  """flax's gradients in seqclf's layout (the map is linear up to the
  forget bias's constant, so gradients map without it)."""
  cell = nnx.to_pure_dict(grads)['cell']
  return convert.from_flax_lstm(cell, forget_bias=0.0)


# (flax cell, impl, reverse): the fast tier keeps one hand-written backward
# pass against OptimizedLSTMCell; the full suite every combination.
CASES = [('optimized', 'fused', True),
         pytest.param('optimized', 'kernel', False,
                      marks=[needs_cpu_kernel, pytest.mark.slow]),
         *(pytest.param(kind, impl, reverse, marks=pytest.mark.slow)
           for kind in ('optimized', 'lstm') for impl in ('scan', 'fused')
           for reverse in (False, True)
           if (kind, impl, reverse) != ('optimized', 'fused', True)),
         *(pytest.param(kind, 'kernel', reverse,
                        marks=[needs_cpu_kernel, pytest.mark.slow])
           for kind, reverse in (('optimized', True), ('lstm', False),
                                 ('lstm', True)))]


@pytest.mark.parametrize('kind,impl,reverse', CASES)
def test_values_and_gradients_match_flax_nnx_rnn(kind, impl, reverse):
  model, x = layer(impl=impl), inputs()
  theirs = _flax_rnn(model, kind, return_carry=True)
  lengths = jnp.asarray(LENGTHS)
  mask = valid(LENGTHS, x.shape[1])
  kwargs = dict(seq_lengths=lengths, reverse=reverse, keep_order=True)
  loss = lambda m: _loss(*m(x, return_carry=True, **kwargs), mask)
  (c, h), out = model(x, return_carry=True, **kwargs)
  (c2, h2), out2 = theirs(x, **kwargs)
  assert_close((c, h, out[mask]), (c2, h2, out2[mask]))
  ours = nnx.grad(loss)(model)
  flax_grads = nnx.grad(lambda m: _loss(*m(x, **kwargs), mask))(theirs)
  assert_close(nnx.to_pure_dict(ours)['cell'],
               _flax_cell_grads(flax_grads, kind), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('impl', [
    pytest.param('fused', marks=pytest.mark.slow),
    pytest.param('scan', marks=pytest.mark.slow),
    pytest.param('kernel', marks=[needs_cpu_kernel, pytest.mark.slow])])
def test_bidirectional_matches_flax_nnx_bidirectional(impl):
  forward, backward = layer(impl=impl), layer(impl=impl, seed=1)
  ours = nnx.Bidirectional(forward, backward, return_carry=True)
  theirs = nnx.Bidirectional(_flax_rnn(forward, 'optimized'),
                             _flax_rnn(backward, 'optimized'),
                             return_carry=True)
  x, lengths = inputs(), jnp.asarray(LENGTHS)
  carry, out = ours(x, seq_lengths=lengths)
  their_carry, their_out = theirs(x, seq_lengths=lengths)
  mask = valid(LENGTHS, x.shape[1])
  assert_close((carry, out[mask]), (their_carry, their_out[mask]))
  np.testing.assert_array_equal(out[~mask], 0.0)
