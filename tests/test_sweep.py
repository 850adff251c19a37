"""seqclf.sweep: model k of a vmapped sweep is the single run with seed k."""

import json
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest

from conftest import REPO, run_cli, small_config
from seqclf import inference, sweep, train
from seqclf.config import ConfigError
from seqclf.training import optim, steps as steps_lib


def test_grid_crosses_rates_with_seeds():
  config = small_config(seed=3)
  assert sweep.grid(config, 2) == ([3, 4], [config.learning_rate] * 2)
  assert sweep.grid(config, 2, [1e-3, 2e-3]) == ([3, 4, 3, 4],
                                                 [1e-3, 1e-3, 2e-3, 2e-3])
  with pytest.raises(ConfigError, match='num_seeds') as e:
    sweep.grid(config, 0)
  assert e.value.arg == 'num_seeds'
  with pytest.raises(ConfigError, match='learning_rates') as e:
    sweep.grid(config, 1, [-1.0])
  assert e.value.arg == 'learning_rates'


@pytest.mark.gpu
@pytest.mark.slow
def test_sweep_model_k_equals_single_run_with_seed_k(tmp_path, mnist):
  """Stacked layers, dropout and mirroring: init, batches and noise keys match."""
  config = small_config(hidden_size=16, num_layers=2, dropout_rate=0.2,
                        augment_hflip=True,
                        num_train_steps=20, eval_every=20, checkpoint_every=20,
                        steps_per_call=10, seed=5)
  states, _ = sweep.train_models(config, [5, 6], None, mnist['train'],
                                 quiet=True)
  swept_acc = steps_lib.evaluate(states, mnist['test'], 1000,
                             stacked=True)['accuracy']
  for k, seed in enumerate((5, 6)):
    config.seed = seed
    single = train.train_and_evaluate(config, tmp_path / f'single{seed}',
                                      quiet=True, datasets=mnist)
    _, params, _ = inference.load_model(tmp_path / f'single{seed}')
    swept = jax.tree.map(lambda x, k=k: x[k], states.params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4,
                                                         atol=1e-5),
                 swept, params)
    assert swept_acc[k] == pytest.approx(single['test_accuracy'],
                                         abs=2e-4)  # at most 2 of 10,000 flip
  assert swept_acc[0] != swept_acc[1]


@pytest.mark.slow
def test_learning_rate_sweep_results_json(tmp_path, mnist):
  """Each model trains with its own rate; results.json summarises the grid."""
  config = small_config(hidden_size=8, num_train_steps=5, steps_per_call=5)
  results = sweep.run_sweep(config, tmp_path, 2, [1e-9, 1e-2], quiet=True,
                            datasets=mnist)
  saved = json.loads((tmp_path / 'results.json').read_text())
  assert saved['test_accuracies'] == results['test_accuracies']
  assert saved['seeds'] == [0, 1, 0, 1]
  assert saved['learning_rates'] == [1e-9, 1e-9, 1e-2, 1e-2]
  accs = saved['test_accuracies']
  assert saved['test_accuracy_mean'] == pytest.approx(np.mean(accs))
  assert saved['test_accuracy_std'] == pytest.approx(np.std(accs, ddof=1))
  assert saved['by_learning_rate']['0.01']['test_accuracies'] == accs[2:]
  # A rate of 1e-9 leaves the models where they started; 1e-2 moves them.
  untrained = steps_lib.evaluate(sweep.init_states(config, [0, 1]),
                             mnist['test'], 1000, stacked=True)['loss']
  np.testing.assert_allclose(saved['test_losses'][:2], untrained, rtol=1e-4)
  assert max(saved['test_losses'][2:]) < min(untrained) - 0.01


@pytest.mark.slow
def test_cli_sweep_rejects_bad_seeds(tmp_path):
  proc = run_cli('sweep', '--config=configs/default.py',
                 f'--workdir={tmp_path}', '--seeds=0')
  assert proc.returncode == 2
  # The library says `num_seeds`; the command line names its flag.
  assert '--seeds must be >= 1, got 0.' in proc.stderr
  assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_cosine_schedule_takes_a_sweeps_traced_peak():
  """A learning-rate grid injects the peak as an array: the cosine schedule
  must trace it, and give optax's warmup_cosine_decay_schedule's values."""
  config = small_config(lr_schedule='cosine', warmup_steps=5,
                        num_train_steps=30, learning_rate=4e-3)
  steps = jax.numpy.arange(35)
  expected = jax.vmap(optax.warmup_cosine_decay_schedule(
      0.0, 4e-3, 5, 30, end_value=0.0))(steps)
  np.testing.assert_array_equal(
      jax.vmap(optim.learning_rate_schedule(config))(steps), expected)
  traced = jax.jit(lambda peak: jax.vmap(
      optim.learning_rate_schedule(config, peak))(steps))
  np.testing.assert_allclose(traced(jax.numpy.float32(4e-3)), expected,
                             rtol=1e-6)


_INIT_MANY = """
import jax, numpy as np
from seqclf import sweep
from seqclf import train
from seqclf.training import state as state_lib
from seqclf.training import steps as steps_lib
from seqclf.config import base_config
config = base_config()
config.update(hidden_size=128, bidirectional=True, impl='scan')
states = sweep.init_states(config, [0, 1, 2, 3, 4], sequence_shape=(29, 12))
one = state_lib.create_train_state(config, jax.random.key(3), impl='scan',
                               sequence_shape=(29, 12))
for a, b in zip(jax.tree.leaves(states.params), jax.tree.leaves(one.params)):
  np.testing.assert_array_equal(a[3], b)
print('equal')
"""


@pytest.mark.slow
def test_init_states_of_five_bidirectional_models_finish_as_single_inits():
  """A vmapped init (a batched LAPACK QR for the orthogonal initializers)
  deadlocked XLA's two CPU threads here; a subprocess, so a hang fails."""
  out = subprocess.run([sys.executable, '-c', _INIT_MANY], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0 and out.stdout.strip() == 'equal', out.stderr
