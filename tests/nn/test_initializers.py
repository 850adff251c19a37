"""Initializer and optimizer options: tables, statistics, defaults unchanged, configs."""

import importlib.util
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import REPO
from seqclf.config import ConfigError, base_config, validate
from seqclf.data import order as order_lib
from seqclf.nn import cells, classifier, initializers, recurrent
from seqclf.training import optim, state as state_lib, steps as steps_lib


def _config(name):
  spec = importlib.util.spec_from_file_location(name, REPO / 'configs' / f'{name}.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return validate(module.get_config())


def _params(config):
  return state_lib.create_train_state(config, jax.random.key(0), impl='scan').params


def _with(**overrides):
  config = base_config()
  config.update(overrides)
  return validate(config)


_TF1_KERNEL = {'input_init': 'concat_glorot_uniform',
               'recurrent_init': 'concat_glorot_uniform'}


class _Before(nn.Module):
  """The default classifier as it was before the initializer keys: an RNN
  of an LSTMCell with the cell's own default initializers (LeCun-normal
  input, orthogonal recurrent kernel), nn.Dense's own for the head."""

  @nn.compact
  def __call__(self, x):
    cell = cells.LSTMCell(128, 1.0, parent=None)  # unbound: RNN adopts it
    _, outputs = recurrent.RNN(cell, name='lstm_0')(
        (x - 0.1307) / 0.3081)
    return nn.Dense(10, name='head')(outputs[..., -1, :])


def test_default_config_builds_and_trains_exactly_as_before(mnist):
  """Defaults: LSTMCell's/nn.Dense's own initializers and optax.adam, bitwise."""
  config = _config('default')
  state = state_lib.create_train_state(config, jax.random.key(3), impl='scan')
  x = jnp.zeros((1, 28, 28))
  before_params = jax.jit(_Before().init)(jax.random.key(3), x)['params']
  jax.tree.map(np.testing.assert_array_equal, state.params, before_params)
  np.testing.assert_array_equal(state.apply_fn({'params': state.params}, x),
                                _Before().apply({'params': before_params}, x))
  # Training: the default optimizer is exactly optax.adam.
  before = state_lib.TrainState.create(apply_fn=state.apply_fn, params=state.params,
                                   tx=optax.adam(config.learning_rate))
  split = jax.device_put(mnist['train'])
  idx = order_lib.train_indices(0, len(split['label']), 100, 0, 3)
  run = jax.jit(lambda s, x, y: steps_lib.train_steps(s, x, y, idx)[0].params)
  jax.tree.map(np.testing.assert_array_equal,
               run(state, split['image'], split['label']),
               run(before, split['image'], split['label']))


def test_concat_glorot_uniform_is_the_tutorial_kernel():
  """Both parts of TF1's (28 + 128) x 512 kernel: one limit, its std."""
  cell = _params(_with(**_TF1_KERNEL))['lstm_0']['cell']
  limit = math.sqrt(6 / (156 + 512))
  for part, rows in (('input', 28), ('hidden', 128)):
    kernel = np.asarray(cell[part]['kernel'])
    assert kernel.shape == (rows, 512)
    assert np.abs(kernel).max() <= limit
    assert np.abs(kernel).max() > 0.99 * limit  # uniform: fills its range
    assert abs(kernel.std() - limit / math.sqrt(3)) < 0.03 * limit
  np.testing.assert_array_equal(cell['input']['bias'], 0.0)
  # The default kernels are another draw: LeCun-normal std 1/sqrt(28).
  default = _params(_with())['lstm_0']['cell']['input']['kernel']
  assert abs(np.std(default) - 1 / math.sqrt(28)) < 0.01


def test_head_normal_initializers_have_std_one():
  head = _params(_with(head_init='normal', head_bias_init='normal'))['head']
  assert head['kernel'].shape == (128, 10)
  assert abs(np.std(head['kernel']) - 1.0) < 0.06
  assert abs(np.mean(head['kernel'])) < 0.1
  assert np.std(head['bias']) > 0.3  # 10 draws of std 1, not zeros
  default = _params(_with())['head']
  assert abs(np.std(default['kernel']) - 1 / math.sqrt(128)) < 0.01
  np.testing.assert_array_equal(default['bias'], 0.0)


@pytest.mark.parametrize('cell', ['lstm', 'gru', 'elman'])
def test_every_table_name_builds(cell):
  """Each name of each role (shapes only), TF1's kernel for every cell."""
  names = [{role: name} for role, table in initializers.TABLES.items()
           for name in table] if cell == 'lstm' else [_TF1_KERNEL]
  for overrides in names:
    model = classifier.from_config(_with(cell=cell, hidden_size=8, **overrides),
                               'scan')
    params = jax.eval_shape(model.init, jax.random.key(0),
                            jnp.zeros((1, 28, 28)))['params']
    assert params['head']['kernel'].shape == (8, 10)


@pytest.mark.parametrize('key,bad', [
    ('input_init', 'identity'), ('recurrent_init', 'lecun_normal'),
    ('head_init', 'zeros'), ('head_bias_init', 'lecun_normal'),
    ('optimizer', 'sgd')])
def test_validate_rejects_names_outside_the_tables(key, bad):
  with pytest.raises(ConfigError, match=f'`{key}` must be one of'):
    _with(**{key: bad})
  with pytest.raises(ValueError, match=key):
    if key == 'optimizer':
      config = base_config()
      config.optimizer = bad
      optim.optimizer(config)
    else:
      initializers.resolve(key, bad)


def test_tf1_adam_matches_tensorflow_formula():
  """TF1: lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)."""
  lr, b1, b2, eps = 1e-3, 0.9, 0.999, 1e-8
  grads = [np.array([1e-7, -2e-8, 0.5]), np.array([3e-8, 1e-8, -0.1]),
           np.array([-1e-7, 5e-9, 0.2])]
  tx = optim.tf1_adam(lr)
  state = tx.init(jnp.zeros(3))
  m = v = np.zeros(3)
  adam_state = optax.adam(lr).init(jnp.zeros(3))
  for t, g in enumerate(grads, 1):
    update, state = tx.update(jnp.asarray(g, jnp.float32), state)
    m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
    expected = -lr * math.sqrt(1 - b2**t) / (1 - b1**t) * m / (np.sqrt(v) + eps)
    np.testing.assert_allclose(update, expected, rtol=2e-5)
    optax_update, adam_state = optax.adam(lr).update(
        jnp.asarray(g, jnp.float32), adam_state)
  # Where sqrt(v_hat) is near eps the two forms differ: the test can fail.
  assert not np.allclose(optax_update[:2], update[:2], rtol=1e-2)
  np.testing.assert_allclose(optax_update[2], update[2], rtol=1e-4)


def test_reference_config_is_the_tutorial():
  config = _config('reference')
  assert (config.num_train_steps, config.batch_size, config.log_every) == (
      999, 100, 10)
  assert (config.input_mean, config.input_std) == (0.0, 1.0)
  assert config.optimizer == 'tf1_adam' and config.learning_rate == 1e-3
  assert (config.input_init, config.recurrent_init, config.head_init,
          config.head_bias_init) == ('concat_glorot_uniform',) * 2 + (
              'normal',) * 2


@pytest.mark.parametrize('name', ['reference', 'budget'])
def test_recipe_configs_smoke(name, mnist):
  """A few steps of each recipe (its optimizer, schedule and initializers)."""
  config = _config(name)
  budget = config.num_train_steps * config.batch_size
  assert budget <= 100_000
  config.update(num_train_steps=20, warmup_steps=min(config.warmup_steps, 2),
                hidden_size=32)
  state = state_lib.create_train_state(config, jax.random.key(0))
  split = jax.device_put(mnist['train'])
  idx = order_lib.train_indices(0, len(split['label']), config.batch_size,
                                     0, 20)
  state, metrics = jax.jit(steps_lib.train_steps)(state, split['image'],
                                                  split['label'], idx)
  loss = np.asarray(metrics['loss'])
  assert np.isfinite(loss).all()
  assert loss[-5:].mean() < loss[:5].mean(), loss
