"""The NNX layers' call contract is nnx.RNN's; the linen layers keep theirs.

The defaults differ on purpose (docs/design.md): ``seqclf.nnx.LSTM`` returns
the outputs, as ``nnx.RNN`` and ``nn.RNN`` do; ``seqclf.LSTM`` (linen)
returns ``(carry, outputs)``, as it did in 0.1.
"""

import inspect

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nnx_cases import HIDDEN, assert_equal, inputs, layer
from seqclf import LSTM as LinenLSTM
from seqclf import nnx as seqnnx
from seqclf.errors import ConfigError


def test_each_default_return():
  """(Shapes alone: jax.eval_shape compiles nothing.)"""
  x = inputs()
  shape = lambda model: nnx.eval_shape(lambda m, x: m(x), model, x)
  out = shape(layer())
  assert isinstance(out, jax.ShapeDtypeStruct) and out.shape == (5, 6, HIDDEN)
  # The contract it keeps: flax's own NNX layer returns the outputs.
  flax_rnn = nnx.RNN(nnx.OptimizedLSTMCell(3, HIDDEN, rngs=nnx.Rngs(0)))
  assert isinstance(shape(flax_rnn), jax.ShapeDtypeStruct)
  linen = LinenLSTM(HIDDEN)
  params = jax.eval_shape(linen.init, jax.random.key(0), x)
  (c, h), outputs = jax.eval_shape(linen.apply, params, x)
  assert outputs.shape == (5, 6, HIDDEN) and h.shape == (5, HIDDEN)
  flax_linen = nn.RNN(nn.LSTMCell(HIDDEN))  # returns the outputs
  flax_params = jax.eval_shape(flax_linen.init, jax.random.key(0), x)
  assert isinstance(jax.eval_shape(flax_linen.apply, flax_params, x),
                    jax.ShapeDtypeStruct)


def test_the_call_takes_nnx_rnns_keywords():
  ours = inspect.signature(seqnnx.LSTM.__call__).parameters
  theirs = inspect.signature(nnx.RNN.__call__).parameters
  assert list(ours) == list(theirs)
  for name in theirs:
    assert ours[name].kind == theirs[name].kind, name
    assert ours[name].default == theirs[name].default, name


@pytest.mark.slow
def test_attributes_are_the_defaults_of_the_call_keywords():
  """As nnx.RNN: return_carry, time_major, reverse, keep_order set at
  construction are what a call without them uses."""
  model, x = layer(), inputs()
  carry, outputs = model(x, return_carry=True)
  assert_equal(model(x), outputs)
  major = layer(time_major=True, return_carry=True, reverse=True,
                keep_order=True)
  carry2, out2 = major(jnp.swapaxes(x, 0, 1))
  expected_carry, expected = model(x, reverse=True, keep_order=True,
                                   return_carry=True)
  assert_equal(carry2, expected_carry)
  assert_equal(jnp.swapaxes(out2, 0, 1), expected)
  # A call's keyword wins over the attribute.
  assert_equal(major(x, time_major=False, return_carry=False, reverse=False,
                     keep_order=False), outputs)
  assert_equal(carry, model(x, return_carry=True)[0])


def test_lengths_zero_the_padding_and_keep_the_carry_of_an_empty_row():
  """seqclf's choice, on every API (flax computes on over the padding): the
  outputs past a row's length are zero and a row of length 0 returns its
  initial carry."""
  model, x = layer(), inputs()
  carry0 = (jnp.full((5, HIDDEN), 0.5), jnp.full((5, HIDDEN), -0.5))
  lengths = jnp.array([0, 6, 0, 2, 1])
  (c, h), out = model(x, initial_carry=carry0, seq_lengths=lengths,
                      return_carry=True)
  np.testing.assert_array_equal(c[0], carry0[0][0])
  np.testing.assert_array_equal(h[2], carry0[1][2])
  np.testing.assert_array_equal(out[0], 0.0)
  np.testing.assert_array_equal(out[3, 2:], 0.0)
  assert np.all(np.asarray(out[1]) != 0.0)


def test_forced_paths_and_auto_are_checked_at_construction():
  """A path that cannot run is the one-line error at construction; 'auto'
  picks the first path that can."""
  with pytest.raises(ConfigError) as e:
    seqnnx.LSTM(3, 17, impl='kernel', rngs=nnx.Rngs(0))
  assert '\n' not in str(e.value)
  assert 'multiple of 16, got 17' in str(e.value)
  with pytest.raises(ConfigError, match="runs only seqclf's LSTMCell"):
    seqnnx.GRU(3, 16, impl='fused', rngs=nnx.Rngs(0))
  assert seqnnx.GRU(3, 16, impl='auto', rngs=nnx.Rngs(0)).impl == 'scan'
  assert seqnnx.LSTM(3, 16, impl='auto', rngs=nnx.Rngs(0)).impl in (
      'kernel', 'fused')
