"""The packaged configs train (small versions of each)."""

import functools
import importlib.util

import jax
import numpy as np
import pytest

from conftest import REPO
from seqclf.config import validate
from seqclf.data import order as order_lib, views
from seqclf.training import state as state_lib, steps as steps_lib


def _config(name):
  spec = importlib.util.spec_from_file_location(name, REPO / 'configs' / f'{name}.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return validate(module.get_config())


def _loss_before_after(config, mnist, steps):
  """Mean loss on 500 fixed validation images before and after ``steps`` steps
  (the images read as the config's task says)."""
  mnist = views.view_splits(config, mnist)
  state = state_lib.create_train_state(
      config, jax.random.key(0),
      sequence_shape=mnist['train']['image'].shape[1:])
  split = jax.device_put(mnist['train'])
  idx = order_lib.train_indices(0, len(split['label']), config.batch_size,
                                     0, steps)
  # The data as arguments: closed over, it would be compiled into the
  # program as a constant, which doubles the compile time.
  run = jax.jit(functools.partial(steps_lib.train_steps,
                                  **steps_lib.noise_kwargs(config)))
  batch = next(order_lib.eval_batches(mnist['validation'], 500))
  loss = jax.jit(lambda s, b: steps_lib.eval_step(s, b)['loss'] / 500)
  before = float(loss(state, batch))
  state, metrics = run(state, split['image'], split['label'], idx)
  assert np.isfinite(metrics['loss']).all()
  return before, float(loss(state, batch))


@pytest.mark.slow
@pytest.mark.parametrize('name', ['gru_row', 'elman_row', 'row_best'])
def test_row_configs_train(name, mnist):
  config = _config(name)
  config.update(hidden_size=32, batch_size=50, num_train_steps=40,
                learning_rate=3e-3, warmup_steps=min(config.warmup_steps, 5),
                dropout_rate=0.1)
  before, after = _loss_before_after(config, mnist, 40)
  assert after < before - 0.2, (before, after)


@pytest.mark.slow
@pytest.mark.parametrize('name', ['smnist', 'psmnist'])
def test_long_sequence_configs_smoke(name, mnist):
  """784-step tasks: a few CPU steps of a small model; the loss must drop."""
  config = _config(name)
  config.update(hidden_size=16, batch_size=32, num_train_steps=30,
                warmup_steps=2, learning_rate=1e-2)
  before, after = _loss_before_after(config, mnist, 30)
  assert after < before - 0.02, (before, after)
