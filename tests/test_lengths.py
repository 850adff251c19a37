"""Training, evaluation, sweeps and inference on variable-length sequences."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from conftest import small_config, unit_state
from seqclf import inference, sweep, train
from seqclf.data import registry
from seqclf.training import checkpoint, state as state_lib


def _ragged(n, seed, steps=12, features=3, classes=4):
  """Toy series of lengths 4..steps whose padding is loud noise: a model
  reading past a row's length would see it (the class sets which channel
  drifts upwards over the valid steps)."""
  rng = np.random.default_rng(seed)
  y = rng.integers(0, classes, n)
  lengths = rng.integers(4, steps + 1, n)
  x = rng.normal(0, 0.3, (n, steps, features)).astype(np.float32)
  for i in range(n):
    x[i, :lengths[i], y[i] % features] += np.linspace(0, 2, lengths[i])
    x[i, lengths[i]:] = rng.normal(0, 5, (steps - lengths[i], features))
  return x, y, lengths


def _dataset(tmp_path):
  (x, y, n), (xt, yt, nt) = _ragged(300, 0), _ragged(90, 1)
  path = tmp_path / 'ragged.npz'
  np.savez(path, x_train=x, y_train=y, lengths_train=n,
           x_test=xt, y_test=yt, lengths_test=nt)
  return f'npz:{path}'


def _config(dataset, **overrides):
  config = dict(dataset=dataset, num_classes=4, hidden_size=16, batch_size=20,
                eval_batch_size=32, impl='scan', learning_rate=1e-2,
                num_train_steps=40, eval_every=20, checkpoint_every=20,
                steps_per_call=10, log_every=10)
  return small_config(**{**config, **overrides})


def _restored(workdir, config):
  state = state_lib.create_train_state(config, jax.random.key(0),
                                   sequence_shape=(12, 3))
  restored, _ = checkpoint.restore(checkpoint.manager(workdir), state)
  return restored


@pytest.mark.slow
def test_variable_lengths_train_and_resume_bitwise(tmp_path):
  name = _dataset(tmp_path)
  full = train.train_and_evaluate(_config(name), tmp_path / 'full', quiet=True)
  losses = [json.loads(line)['loss'] for line in
            (tmp_path / 'full' / 'metrics.jsonl').read_text().splitlines()
            if json.loads(line)['kind'] == 'train']
  assert losses[-1] < 0.7 * losses[0], losses
  assert full['test_accuracy'] > 0.6  # chance is 0.25
  train.train_and_evaluate(_config(name, num_train_steps=20),
                           tmp_path / 'part', quiet=True)
  resumed = train.train_and_evaluate(_config(name), tmp_path / 'part',
                                     quiet=True)
  assert resumed['resumed_from_step'] == 20
  a, b = (_restored(tmp_path / w, _config(name)) for w in ('full', 'part'))
  assert int(a.step) == int(b.step) == 40
  for x, y in zip(jax.tree.leaves((a.params, a.opt_state)),
                  jax.tree.leaves((b.params, b.opt_state))):
    np.testing.assert_array_equal(x, y)  # bitwise
  assert resumed['test_accuracy'] == full['test_accuracy']


def test_evaluation_with_lengths_equals_each_row_cropped_alone(tmp_path):
  name = _dataset(tmp_path)
  config = _config(name, num_train_steps=10, eval_every=10,
                   checkpoint_every=10)
  results = train.train_and_evaluate(config, tmp_path / 'run', quiet=True)
  model, params, _ = inference.load_model(tmp_path / 'run')
  test = registry.load(config)['test']
  # Each row cropped to its length, without padding: rows of one length
  # run together (one program per length, not per row).
  alone = np.zeros((len(test['label']), 4), np.float32)
  for n in np.unique(test['lengths']):
    rows = test['lengths'] == n
    alone[rows] = jax.nn.softmax(jax.jit(model.apply)(
        {'params': params}, test['image'][rows, :n]))
  batched = inference.predict_probabilities(model, params, test['image'],
                                            batch_size=32,
                                            lengths=test['lengths'])
  np.testing.assert_allclose(batched, alone, rtol=1e-5, atol=1e-6)
  accuracy = np.mean(np.argmax(alone, -1) == test['label'])
  assert results['test_accuracy'] == pytest.approx(accuracy, abs=1e-12)
  # The loud padding changes the answer when the lengths are ignored.
  whole = inference.predict_probabilities(model, params, test['image'])
  assert np.abs(whole - alone).max() > 1e-2


@pytest.mark.slow
def test_sweep_on_lengths_model_k_equals_single_run(tmp_path):
  """Bitwise, with input jitter (the sweep's only noise here), mean
  pooling, weight decay and a convolutional branch."""
  name = _dataset(tmp_path)
  config = _config(name, num_train_steps=20, input_noise=0.2, pooling='mean',
                   weight_decay=0.1, conv_features=4, seed=3)
  data = registry.load(config)
  out = sweep.run_unit(tmp_path / 'sweep', 'u', config, [{}], ['config'],
                       [3, 4], [], data['train'], {'test': data['test']},
                       sweep.Progress(1, quiet=True))
  stacked = unit_state(tmp_path / 'sweep', 'u', 20)['params']
  for k, seed in enumerate((3, 4)):
    config.seed = seed
    single = train.train_and_evaluate(config, tmp_path / f'single{seed}',
                                      quiet=True, datasets=data)
    _, params, _ = inference.load_model(tmp_path / f'single{seed}')
    swept = jax.tree.map(lambda x, k=k: np.asarray(x)[k], stacked)
    jax.tree.map(np.testing.assert_array_equal, swept, params)
    assert out['metrics']['test']['accuracy'][k] == single['test_accuracy']

_MODES_SCRIPT = '''
import sys, jax, numpy as np
sys.path.insert(0, sys.argv[2])
from test_lengths import _config
from seqclf import inference
from seqclf import train
from seqclf.data import registry
from seqclf.training import state as state_lib
name = sys.argv[1]
data = registry.load(_config(name))
params = {}
for mode in ('single', 'pmap', 'sharded'):
  workdir = f'{sys.argv[3]}/{mode}'
  train.train_and_evaluate(_config(name, parallelism=mode, num_train_steps=20,
                                   conv_features=4),
                           workdir, quiet=True, datasets=data)
  params[mode] = inference.load_model(workdir)[1]
for mode in ('pmap', 'sharded'):
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4,
                                                       atol=1e-5),
               params[mode], params['single'])
print('agree', jax.device_count())
'''


@pytest.mark.slow  # a subprocess with 2 forced CPU devices, 3 trainings
def test_lengths_train_the_same_under_pmap_and_sharded(tmp_path):
  name = _dataset(tmp_path)
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu',
         'XLA_FLAGS': '--xla_force_host_platform_device_count=2'}
  out = subprocess.run(
      [sys.executable, '-c', _MODES_SCRIPT, name,
       str(Path(__file__).parent), str(tmp_path)],
      env=env, capture_output=True, text=True, timeout=600, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'agree 2' in out.stdout
