"""The trainer: learns MNIST, resumes exactly, runs under pmap, reports results."""

import functools
import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from conftest import (REPO, all_from_cache, compilation_cache_events,
                      small_config)
from seqclf import train
from seqclf.training import checkpoint, state as state_lib, steps as steps_lib


@pytest.mark.gpu
@pytest.mark.slow
def test_short_run_learns_mnist(trained_workdir):
  results = json.loads((trained_workdir / 'results.json').read_text())
  assert results['test_accuracy'] >= 0.90, results
  for key in ('test_accuracy', 'val_accuracy', 'test_loss', 'step',
              'examples_seen', 'train_examples_per_second', 'compile_seconds',
              'wall_seconds', 'config'):
    assert key in results
  parts = [results[k] for k in ('setup_seconds', 'compile_seconds',
                                'train_seconds', 'eval_and_save_seconds')]
  assert all(p > 0 for p in parts) and sum(parts) <= results['wall_seconds']
  assert results['step'] == 300 and results['examples_seen'] == 30000
  lines = [json.loads(l) for l in
           (trained_workdir / 'metrics.jsonl').read_text().splitlines()]
  assert [l['step'] for l in lines if l['kind'] == 'train'] == list(
      range(10, 301, 10))
  assert any(p.name.startswith('events') for p in
             (trained_workdir / 'tensorboard').iterdir())


def _params(workdir):
  state = state_lib.create_train_state(small_config(), jax.random.key(0))
  restored, _ = checkpoint.restore(checkpoint.manager(workdir), state)
  return restored


@pytest.mark.gpu
@pytest.mark.slow
def test_resume_equals_uninterrupted_run(tmp_path, mnist):
  full = tmp_path / 'full'
  train.train_and_evaluate(small_config(), full, quiet=True, datasets=mnist)
  part = tmp_path / 'part'
  train.train_and_evaluate(small_config(num_train_steps=20), part, quiet=True,
                           datasets=mnist)
  results = train.train_and_evaluate(small_config(), part, quiet=True,
                                     datasets=mnist)
  assert results['resumed_from_step'] == 20
  a, b = _params(full), _params(part)
  assert int(a.step) == int(b.step) == 30
  for x, y in zip(jax.tree.leaves((a.params, a.opt_state)),
                  jax.tree.leaves((b.params, b.opt_state))):
    np.testing.assert_array_equal(x, y)  # bitwise
  full_results = json.loads((full / 'results.json').read_text())
  assert full_results['test_accuracy'] == results['test_accuracy']


@pytest.mark.slow
def test_same_seed_same_result_other_seed_differs(tmp_path, mnist):
  runs = [train.train_and_evaluate(small_config(num_train_steps=10, seed=s),
                                   tmp_path / f'{i}', quiet=True,
                                   datasets=mnist)
          for i, s in enumerate((0, 0, 1))]
  assert runs[0]['test_loss'] == runs[1]['test_loss']
  assert runs[0]['test_loss'] != runs[2]['test_loss']


@pytest.mark.slow
def test_divergence_stops_with_error_naming_step(tmp_path, mnist):
  with pytest.raises(FloatingPointError, match='Non-finite loss by step'):
    train.train_and_evaluate(small_config(learning_rate=1e38), tmp_path,
                             quiet=True, datasets=mnist)


PMAP_SCRIPT = textwrap.dedent('''
    import functools, jax, jax.numpy as jnp, numpy as np
    from seqclf import train  # pylint: disable=g-import-not-at-top
    from seqclf.training import state as state_lib  # pylint: disable=g-import-not-at-top
    from seqclf.training import steps as steps_lib  # pylint: disable=g-import-not-at-top
    from seqclf.config import base_config
    assert jax.device_count() == 2, jax.devices()
    config = base_config(); config.hidden_size = 16
    state = state_lib.create_train_state(config, jax.random.key(0))
    rng = np.random.default_rng(0)
    batches = [{'image': rng.random((8, 28, 28), np.float32),
                'label': rng.integers(0, 10, 8).astype(np.int32)}
               for _ in range(3)]
    single = state
    step = jax.jit(steps_lib.train_step)
    for b in batches:
      single, m1 = step(single, b)
    pstep = jax.pmap(functools.partial(steps_lib.train_step, axis_name='batch'),
                     axis_name='batch')
    replicated = jax.tree.map(lambda a: jnp.broadcast_to(a, (2, *jnp.shape(a))),
                              state)
    for b in batches:
      shard = jax.tree.map(lambda a: a.reshape(2, 4, *a.shape[1:]), b)
      replicated, m2 = pstep(replicated, shard)
    p = jax.tree.map(lambda a: a[0], replicated.params)
    for x, y in zip(jax.tree.leaves(single.params), jax.tree.leaves(p)):
      np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m1['loss'], m2['loss'][0], rtol=1e-5)
    print('PMAP_OK')
''')


@pytest.mark.slow  # a 2-device subprocess (test_parallel runs many more)
def test_pmap_over_two_devices_matches_one_device():
  env = {'XLA_FLAGS': '--xla_force_host_platform_device_count=2',
         'JAX_PLATFORMS': 'cpu', 'PATH': '/usr/bin:/bin'}
  out = subprocess.run([sys.executable, '-c', PMAP_SCRIPT], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=300)
  assert 'PMAP_OK' in out.stdout, out.stderr[-3000:]


def test_hflip_mirrors_training_images_and_nothing_else(mnist):
  state = state_lib.create_train_state(small_config(hidden_size=16),
                                   jax.random.key(0))
  images = mnist['train']['image'][:50].astype(np.float32) / 255
  labels = mnist['train']['label'][:50]
  symmetric = (images + images[..., ::-1]) / 2
  key = steps_lib.train_key(0)
  flip = jax.jit(lambda s, b: steps_lib.train_step(s, b, rng=key, hflip=True))
  plain = jax.jit(lambda s, b: steps_lib.train_step(s, b, rng=key))

  def params(step, x):
    return jax.tree.leaves(step(state, {'image': x, 'label': labels})[0].params)

  # On mirror-symmetric images a flip changes no input, so no update either.
  for a, b in zip(params(flip, symmetric), params(plain, symmetric)):
    np.testing.assert_array_equal(a, b)
  assert not all(np.array_equal(a, b) for a, b in
                 zip(params(flip, images), params(plain, images)))
  with pytest.raises(ValueError, match='rng'):
    steps_lib.train_step(state, {'image': images, 'label': labels}, hflip=True)


TORCH_STUB = """
import os
open(os.environ['TORCH_STUB_MARKER'], 'w').close()
class Tensor:
  pass
"""


def test_trainer_does_not_import_torch(tmp_path):
  """tensorboardX imports torch where it is installed (~4 s on every `seqclf`
  command); seqclf.training.metric_logging hides it. A stub torch on the path makes
  this check run, and able to fail, whether or not torch is installed."""
  (tmp_path / 'torch').mkdir()
  (tmp_path / 'torch' / '__init__.py').write_text(TORCH_STUB)
  marker = tmp_path / 'imported'
  env = {**os.environ, 'TORCH_STUB_MARKER': str(marker),
         'PYTHONPATH': os.pathsep.join(
             [str(tmp_path), *filter(None, [os.environ.get('PYTHONPATH')])])}

  def python(code):
    return subprocess.run([sys.executable, '-c', code], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)

  out = python('import sys, seqclf.train, seqclf.training.metric_logging; '
               'print("torch" in sys.modules)')
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.strip() == 'False' and not marker.exists()
  # The stub is what `import torch` finds there, so the check is live.
  out = python('import torch')
  assert out.returncode == 0 and marker.exists(), out.stderr[-3000:]


def test_another_seed_of_a_noisy_run_compiles_nothing_new(mnist, tmp_path):
  """Training noise's key is an argument of the training program, not a
  constant in it: a second seed loads the first one's programs from the
  compilation cache (the suite's here, the CLI's for a user) instead of
  compiling its own."""
  data = {k: {kk: v[:400] for kk, v in split.items()}
          for k, split in mnist.items()}
  for seed in (1, 2):
    with compilation_cache_events() as events:
      train.train_and_evaluate(
          small_config(hidden_size=8, num_train_steps=4, steps_per_call=4,
                       eval_every=4, checkpoint_every=4, eval_batch_size=200,
                       input_noise=0.3, seed=seed),
          tmp_path / str(seed), quiet=True, datasets=data)
  assert all_from_cache(events), events


def test_a_keyed_chunk_trains_as_the_key_bound_in():
  """``steps.keyed`` takes the key as data; its steps are bitwise those of
  the key given as ``train_steps``' keyword."""
  config = small_config(hidden_size=8, input_noise=0.3)
  state = state_lib.create_train_state(config, jax.random.key(0))
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (40, 28, 28), dtype=np.uint8)
  labels = rng.integers(0, 10, 40).astype(np.int32)
  indices = rng.integers(0, 40, (3, 8)).astype(np.int32)
  key = steps_lib.train_key(7)
  bound = jax.jit(functools.partial(steps_lib.train_steps, rng=key))(
      state, images, labels, indices)
  keyed = jax.jit(steps_lib.keyed(steps_lib.train_steps, hflip=False))(
      state, images, labels, jax.random.key_data(key), indices)
  jax.tree.map(np.testing.assert_array_equal, bound, keyed)
