"""GRU and Elman cells, their layers, and the classifier's cell options."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import normal, uniform
from seqclf.nn import LSTMClassifier, cells, initializers, recurrent


@pytest.mark.parametrize('cell_type', ['gru', 'elman'])
def test_scan_layer_equals_step_by_step_cell(cell_type):
  layer = recurrent.RNN(recurrent.LAYERS[cell_type].cell_type(16))
  x = normal(1, (3, 7, 5))
  variables = jax.jit(layer.init)(jax.random.key(0), x)
  final, outputs = layer.apply(variables, x)
  assert outputs.shape == (3, 7, 16) and final.shape == (3, 16)
  cell = recurrent.LAYERS[cell_type].cell_type(16)
  cell_vars = {'params': variables['params']['cell']}
  h = cell.initialize_carry((3,))
  step = jax.jit(cell.apply)
  for t in range(7):
    h, y = step(cell_vars, h, x[:, t])
    np.testing.assert_allclose(outputs[:, t], y, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(final, h, rtol=1e-5, atol=1e-6)


def test_cell_equations_with_zero_weights():
  """All-zero weights: GRU gates are 1/2 and n = 0, so h' = h / 2; Elman h' = 0."""
  h = jnp.full((2, 4), 0.8)
  x = jnp.ones((2, 3))
  for cell, expected in ((cells.GRUCell(4), 0.4), (cells.ElmanCell(4), 0.0)):
    variables = jax.jit(cell.init)(jax.random.key(0), h, x)
    zeros = jax.tree.map(jnp.zeros_like, variables)
    new_h, _ = cell.apply(zeros, h, x)
    np.testing.assert_allclose(new_h, expected, atol=1e-7)


def test_identity_recurrent_init():
  layer = recurrent.Elman(8, recurrent_init='identity')
  params = jax.jit(layer.init)(jax.random.key(0), jnp.ones((1, 3, 2)))['params']
  np.testing.assert_array_equal(params['cell']['hidden']['kernel'], np.eye(8))
  model = LSTMClassifier(hidden_size=4, recurrent_init='identity')
  params = jax.jit(model.init)(jax.random.key(0), jnp.ones((1, 28, 28)))['params']
  np.testing.assert_array_equal(params['lstm_0']['cell']['hidden']['kernel'],
                                np.tile(np.eye(4), (1, 4)))
  with pytest.raises(ValueError, match='recurrent_init'):
    initializers.resolve('recurrent_init', 'zeros')


@pytest.mark.parametrize('cell,gates', [('lstm', 4), ('gru', 3), ('elman', 1)])
def test_classifier_cells_bidirectional_on_pixel_sequences(cell, gates):
  model = LSTMClassifier(hidden_size=8, num_layers=2, cell=cell,
                         bidirectional=True)
  x = jnp.ones((2, 784, 1))
  # Shapes only: tracing (eval_shape) checks them without running 784 steps.
  params = jax.eval_shape(model.init, jax.random.key(0), x)['params']
  assert jax.eval_shape(model.apply, {'params': params}, x).shape == (2, 10)
  assert set(params) == {f'{cell}_0', f'{cell}_0_reverse', f'{cell}_1',
                         f'{cell}_1_reverse', 'head'}
  assert params[f'{cell}_0']['cell']['input']['kernel'].shape == (1, gates * 8)
  # Layer 1 reads both directions; the head sees both directions' summaries.
  assert params[f'{cell}_1']['cell']['input']['kernel'].shape == (16, gates * 8)
  assert params['head']['kernel'].shape == (16, 10)


def test_dropout_only_in_training_and_needs_a_key():
  model = LSTMClassifier(hidden_size=8, num_layers=2, dropout_rate=0.5)
  plain = LSTMClassifier(hidden_size=8, num_layers=2)
  x = uniform(1, (4, 28, 28))
  variables = jax.jit(model.init)(jax.random.key(0), x)
  np.testing.assert_array_equal(jax.jit(model.apply)(variables, x),
                                jax.jit(plain.apply)(variables, x))
  apply = jax.jit(lambda v, x, rng: model.apply(v, x, train=True,
                                                rngs={'dropout': rng}))
  a = apply(variables, x, jax.random.key(1))
  b = apply(variables, x, jax.random.key(2))
  assert not np.allclose(a, b)
  with pytest.raises(Exception, match='dropout'):
    model.apply(variables, x, train=True)


@pytest.mark.parametrize('cell_type,layer', [('gru', 'GRU'), ('elman', 'Elman')])
def test_one_layer_serves_every_cell(cell_type, layer):
  """`GRU`/`Elman` are `RNN` of their cell: same tree, values and outputs;
  the LSTM-only paths refuse other cells instead of silently scanning."""
  x = normal(1, (3, 4, 5))
  named = getattr(recurrent, layer)(8)
  generic = recurrent.RNN(recurrent.LAYERS[cell_type].cell_type(8))
  a, b = (jax.jit(m.init)(jax.random.key(0), x) for m in (named, generic))
  jax.tree.map(np.testing.assert_array_equal, a, b)
  assert set(a['params']) == {'cell'}
  jax.tree.map(np.testing.assert_array_equal, named.apply(a, x),
               generic.apply(a, x))
  for impl in ('fused', 'kernel'):
    with pytest.raises(ValueError, match="runs only seqclf's LSTMCell"):
      getattr(recurrent, layer)(16, impl=impl).init(jax.random.key(0), x)
