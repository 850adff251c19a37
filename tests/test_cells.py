"""GRU/Elman cells, the classifier's options, the task views, optimizer options, Fashion-MNIST."""

import dataclasses
import gzip
import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from seqclf import (cells, datasets, fashion_mnist, initializers, input_pipeline,
                    models, optim, tasks, train)
from seqclf.config import ConfigError, base_config, validate
from seqclf.mnist_files import DataError
from seqclf.models import LSTMClassifier

from conftest import REPO


def _config(name):
  spec = importlib.util.spec_from_file_location(name, REPO / 'configs' / f'{name}.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return validate(module.get_config())


@pytest.mark.parametrize('cell_type', ['gru', 'elman'])
def test_scan_layer_equals_step_by_step_cell(cell_type):
  layer = models.RNN(cells.CELLS[cell_type](16))
  x = jax.random.normal(jax.random.key(1), (3, 7, 5))
  variables = jax.jit(layer.init)(jax.random.key(0), x)
  final, outputs = layer.apply(variables, x)
  assert outputs.shape == (3, 7, 16) and final.shape == (3, 16)
  cell = cells.CELLS[cell_type](16)
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
  layer = models.Elman(8, recurrent_init='identity')
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
  x = jax.random.uniform(jax.random.key(1), (4, 28, 28))
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


def test_row_pixel_permuted_are_the_same_pixels():
  images = np.random.default_rng(0).integers(0, 256, (3, 28, 28), np.uint8)
  row = tasks.as_sequence(images, 'row')
  pixel = tasks.as_sequence(images, 'pixel')
  permuted = tasks.as_sequence(images, 'permuted', permutation_seed=7)
  assert row.shape == (3, 28, 28) and np.array_equal(row, images)
  assert pixel.shape == permuted.shape == (3, 784, 1)
  np.testing.assert_array_equal(pixel[:, 28 * 5 + 3, 0], images[:, 5, 3])
  perm = tasks.permutation(7, 784)
  assert sorted(perm) == list(range(784)) and not np.array_equal(perm,
                                                                 np.arange(784))
  np.testing.assert_array_equal(permuted[:, :, 0], pixel[:, perm, 0])
  np.testing.assert_array_equal(np.sort(permuted, 1), np.sort(pixel, 1))
  assert not np.array_equal(tasks.permutation(8, 784), perm)
  # The same view on the device, as the jitted step takes it.
  on_device = jax.jit(lambda x: tasks.as_sequence(x, 'permuted', 7))(images)
  np.testing.assert_array_equal(on_device, permuted)


def test_the_task_is_the_datas_view_and_the_model_reads_sequences():
  """``datasets.view`` reads every split as the config's task; labels and
  lengths are untouched, and the stored images are never modified."""
  images = np.random.default_rng(0).integers(0, 256, (3, 28, 28), np.uint8)
  data = {'train': {'image': images, 'label': np.arange(3)}}
  config = base_config()
  assert datasets.view_splits(config, data)['train']['image'] is images
  config.task, config.permutation_seed = 'permuted', 3
  viewed = datasets.view_splits(config, data)['train']
  np.testing.assert_array_equal(viewed['image'],
                                tasks.as_sequence(images, 'permuted', 3))
  assert viewed['label'] is data['train']['label']
  assert data['train']['image'] is images and images.shape == (3, 28, 28)
  assert tasks.sequence_shape('permuted', (28, 28)) == (784, 1)
  assert tasks.sequence_shape('row', (28, 28)) == (28, 28)
  assert not {'task', 'permutation_seed'} & {
      f.name for f in dataclasses.fields(LSTMClassifier)}


def test_task_needs_images_and_mirroring_needs_rows():
  config = base_config()
  config.dataset, config.task = 'uea_basic_motions', 'pixel'
  with pytest.raises(ConfigError, match="task.*only the image datasets"):
    validate(config)
  config = base_config()
  config.task, config.augment_hflip = 'pixel', True
  with pytest.raises(ConfigError, match="augment_hflip.*needs task='row'"):
    validate(config)


def test_default_optimizer_is_plain_adam_and_options_change_it():
  config = base_config()
  config.hidden_size = 8
  state = train.create_train_state(config, jax.random.key(0))
  adam = optax.adam(1e-3).init(state.params)
  assert jax.tree.structure(state.opt_state) == jax.tree.structure(adam)
  assert optim.learning_rate_at(config, 500) == 1e-3
  config.update(lr_schedule='cosine', warmup_steps=100, grad_clip_norm=1.0)
  assert optim.learning_rate_at(config, 1) == 0.0
  assert optim.learning_rate_at(config, 101) == pytest.approx(1e-3)
  assert optim.learning_rate_at(config, 1000) < 1e-6


def _params_after(config, params, grads):
  """``params`` after one update per gradient, by the trainer's optimizer."""
  tx = optim.optimizer(config)
  state = tx.init(params)
  for g in grads:
    updates, state = tx.update(g, state, params)
    params = optax.apply_updates(params, updates)
  return jax.tree.leaves(params)


def test_grad_clip_norm_scales_gradients_to_the_norm():
  """Clipped training = plain Adam fed each gradient scaled down to the clip
  norm when its global norm exceeds it, and visibly not plain Adam.

  One update cannot show it (Adam's first step is ~lr * sign(g) at any
  scale); the second mixes a huge and a small gradient in Adam's moments, in
  a ratio that clipping changes.
  """
  rng = np.random.default_rng(0)
  params = {'kernel': rng.standard_normal((5, 8)).astype(np.float32),
            'bias': rng.standard_normal(8).astype(np.float32)}

  def gradient(norm):
    g = jax.tree.map(lambda p: rng.standard_normal(p.shape), params)
    total = np.sqrt(sum(np.sum(x ** 2) for x in jax.tree.leaves(g)))
    return jax.tree.map(lambda x: (x * norm / total).astype(np.float32), g)

  huge, small = gradient(1e3), gradient(0.5)
  config = base_config()
  config.grad_clip_norm = 1.0
  clipped = _params_after(config, params, [huge, small])
  config.grad_clip_norm = 0.0
  by_hand = _params_after(config, params, [
      jax.tree.map(lambda g: g * np.float32(1e-3), huge),
      small])  # norm 0.5 < 1: not clipped
  plain = _params_after(config, params, [huge, small])
  for a, b in zip(clipped, by_hand):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  assert max(float(np.max(np.abs(a - b))) for a, b in zip(clipped, plain)) > 1e-4


@pytest.mark.parametrize('key,value,match', [
    ('cell', 'rnn', 'cell'), ('dropout_rate', 1.0, 'dropout_rate'),
    ('warmup_steps', 1000, 'warmup_steps'), ('task', 'col', 'task'),
    ('dataset', 'cifar', 'dataset'), ('grad_clip_norm', -1.0, 'grad_clip'),
    ('permutation_seed', -1, 'permutation_seed')])
def test_new_config_keys_are_validated(key, value, match):
  config = base_config()
  config[key] = value
  with pytest.raises(ConfigError, match=match):
    validate(config)


def _loss_before_after(config, mnist, steps):
  """Mean loss on 500 fixed validation images before and after ``steps`` steps
  (the images read as the config's task says)."""
  mnist = datasets.view_splits(config, mnist)
  state = train.create_train_state(
      config, jax.random.key(0),
      sequence_shape=mnist['train']['image'].shape[1:])
  split = jax.device_put(mnist['train'])
  idx = input_pipeline.train_indices(0, len(split['label']), config.batch_size,
                                     0, steps)
  run = jax.jit(lambda s, i: train.train_steps(s, split['image'],
                                               split['label'], i,
                                               **train.noise_kwargs(config)))
  batch = next(input_pipeline.eval_batches(mnist['validation'], 500))
  loss = jax.jit(lambda s: train.eval_step(s, batch)['loss'] / 500)
  before = float(loss(state))
  state, metrics = run(state, idx)
  assert np.isfinite(metrics['loss']).all()
  return before, float(loss(state))


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


def test_fashion_mnist_not_prepared_names_the_fix(tmp_path):
  with pytest.raises(DataError, match='prepare-data .*--dataset=fashion_mnist'):
    input_pipeline.load_datasets(str(tmp_path), dataset='fashion_mnist')
  with pytest.raises(DataError, match='apt-get install -y dataset-fashion-mnist'):
    fashion_mnist.ensure_files(tmp_path / 'manual', source=tmp_path / 'none')


@pytest.mark.slow
@pytest.mark.skipif(not fashion_mnist.available(),
                    reason=f'Fashion-MNIST files absent from '
                    f'{fashion_mnist.SYSTEM_DIR}: apt-get install -y '
                    'dataset-fashion-mnist')
def test_fashion_mnist_files_verify_and_corruption_is_caught(tmp_path):
  directory = fashion_mnist.ensure_files(tmp_path / 'manual')
  labels = fashion_mnist.load_verified(directory, 'train-labels-idx1-ubyte')
  assert np.bincount(labels).tolist() == [6000] * 10
  images = fashion_mnist.load_verified(directory, 't10k-images-idx3-ubyte')
  assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
  path = directory / 't10k-labels-idx1-ubyte.gz'
  raw = bytearray(gzip.decompress(path.read_bytes()))
  raw[100] ^= 1
  path.write_bytes(gzip.compress(bytes(raw)))
  with pytest.raises(DataError, match='SHA-256 mismatch'):
    fashion_mnist.load_verified(directory, 't10k-labels-idx1-ubyte')


@pytest.mark.parametrize('cell_type,layer', [('gru', 'GRU'), ('elman', 'Elman')])
def test_one_layer_serves_every_cell(cell_type, layer):
  """`GRU`/`Elman` are `RNN` of their cell: same tree, values and outputs;
  the LSTM-only paths refuse other cells instead of silently scanning."""
  x = jax.random.normal(jax.random.key(1), (3, 4, 5))
  named = getattr(models, layer)(8)
  generic = models.RNN(cells.CELLS[cell_type](8))
  a, b = (jax.jit(m.init)(jax.random.key(0), x) for m in (named, generic))
  jax.tree.map(np.testing.assert_array_equal, a, b)
  assert set(a['params']) == {'cell'}
  jax.tree.map(np.testing.assert_array_equal, named.apply(a, x),
               generic.apply(a, x))
  for impl in ('fused', 'kernel'):
    with pytest.raises(ValueError, match='runs only LSTM cells'):
      getattr(models, layer)(16, impl=impl).init(jax.random.key(0), x)
