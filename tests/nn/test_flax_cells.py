"""``seqclf.nn.RNN`` runs flax's own cells on the ``scan`` path.

Any ``nn.RNNCellBase`` (``LSTMCell``, ``GRUCell``, ``OptimizedLSTMCell``,
``SimpleCell``) runs as in ``nn.RNN(cell)``: the same parameter tree, the
same carries and valid outputs, with lengths and in both directions. The
fast paths, which run seqclf's ``LSTMCell`` only, say so in one line.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import normal
from seqclf.errors import ConfigError
from seqclf.nn import recurrent

HIDDEN = 8
CELLS = {'LSTMCell': nn.LSTMCell, 'GRUCell': nn.GRUCell,
         'OptimizedLSTMCell': nn.OptimizedLSTMCell,
         'SimpleCell': nn.SimpleCell}


@pytest.mark.parametrize('name,reverse', [
    ('LSTMCell', True),
    *(pytest.param(name, reverse, marks=pytest.mark.slow)
      for name in CELLS for reverse in (False, True)
      if (name, reverse) != ('LSTMCell', True))])
def test_a_flax_cell_runs_as_in_flax_rnn(name, reverse):
  x = normal(1, (4, 5, 3))
  lengths = jnp.array([5, 2, 1, 4])
  ours = recurrent.RNN(CELLS[name](HIDDEN))
  theirs = nn.RNN(CELLS[name](HIDDEN), return_carry=True)
  params = theirs.init(jax.random.key(0), x)
  assert (jax.tree.map(jnp.shape, ours.init(jax.random.key(0), x))
          == jax.tree.map(jnp.shape, params))
  kwargs = dict(seq_lengths=lengths, reverse=reverse, keep_order=True)
  carry, out = ours.apply(params, x, **kwargs)
  their_carry, their_out = theirs.apply(params, x, **kwargs)
  valid = np.arange(5)[None] < np.asarray(lengths)[:, None]
  for a, b in ((carry, their_carry), (out[valid], their_out[valid])):
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-5,
                                                        atol=1e-6), a, b)
  np.testing.assert_array_equal(out[~valid], 0.0)
  # Without lengths nothing is masked: flax's numbers exactly.
  jax.tree.map(np.testing.assert_array_equal, ours.apply(params, x),
               theirs.apply(params, x))


@pytest.mark.parametrize('impl', ['fused', 'kernel'])
def test_the_fast_paths_name_seqclfs_cell(impl):
  x = jnp.ones((2, 3, 4))
  with pytest.raises(ConfigError) as e:
    recurrent.RNN(nn.LSTMCell(16), impl=impl).init(jax.random.key(0), x)
  message = str(e.value)
  assert '\n' not in message
  assert ("runs only seqclf's LSTMCell (cell='lstm'), got "
          "'flax.linen.recurrent.LSTMCell'; use impl='scan'.") in message


def test_a_cell_of_several_feature_axes_is_one_error():
  cell = nn.ConvLSTMCell(4, kernel_size=(3, 3))
  with pytest.raises(ValueError, match="ConvLSTMCell has 3 feature axes; "
                     "seqclf's RNN runs cells of one"):
    recurrent.RNN(cell).init(jax.random.key(0), jnp.ones((2, 3, 5, 5, 2)))
