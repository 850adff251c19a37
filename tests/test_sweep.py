"""seqclf.sweep: model k of a vmapped sweep is the single run with seed k."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import optax
import pytest

from conftest import (REPO, run_cli, small_config, tensorboard_tags,
                      tensorboard_values,
                      unit_state)
from seqclf import errors, inference, sweep, train
from seqclf.config import ConfigError
from seqclf.data import registry
from seqclf.training import (checkpoint, hyper, optim, preemption,
                             steps as steps_lib)


def test_sweep_refuses_no_seeds_and_bad_rates(tmp_path):
  config = small_config()
  with pytest.raises(ConfigError, match='num_seeds') as e:
    sweep.run_sweep(config, tmp_path / 'a', 0)
  assert e.value.arg == 'num_seeds'
  with pytest.raises(ConfigError, match='learning_rate'):
    sweep.run_sweep(config, tmp_path / 'b', 1, [-1.0])
  assert not (tmp_path / 'b' / 'results.json').exists()


def _assert_same(swept, single):
  """Bitwise on the CPU; to float rounding where vmapped (accelerators)."""
  if jax.default_backend() == 'cpu':
    jax.tree.map(np.testing.assert_array_equal, swept, single)
  else:
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4,
                                                         atol=1e-5),
                 swept, single)


@pytest.mark.gpu
@pytest.mark.slow
def test_sweep_model_k_equals_single_run_with_seed_k(tmp_path, mnist):
  """Stacked layers, dropout and mirroring: init, batches and noise keys match."""
  config = small_config(hidden_size=16, num_layers=2, dropout_rate=0.2,
                        augment_hflip=True,
                        num_train_steps=20, eval_every=20, checkpoint_every=20,
                        steps_per_call=10, seed=5)
  out = sweep.run_unit(tmp_path / 'sweep', 'u', config, [{}], ['config'],
                       [5, 6], [], mnist['train'], {'test': mnist['test']},
                       sweep.Progress(1, quiet=True))
  params = unit_state(tmp_path / 'sweep', 'u', 20)['params']
  swept_acc = out['metrics']['test']['accuracy']
  for k, seed in enumerate((5, 6)):
    config.seed = seed
    single = train.train_and_evaluate(config, tmp_path / f'single{seed}',
                                      quiet=True, datasets=mnist)
    _, expected, _ = inference.load_model(tmp_path / f'single{seed}')
    _assert_same(jax.tree.map(lambda x, k=k: np.asarray(x)[k], params),
                 expected)
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
  untrained = steps_lib.evaluate(
      hyper.init_states(config, [0, 1], [{}, {}], impl='scan',
                        sequence_shape=(28, 28)),
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
from seqclf.training import hyper, state as state_lib
from seqclf.config import base_config
config = base_config()
config.update(hidden_size=128, bidirectional=True, impl='scan')
states = hyper.init_states(config, [0, 1, 2, 3, 4], [{}] * 5, impl='scan',
                           sequence_shape=(29, 12))
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


# --- Grids over any config keys, resume, the table -------------------------


def _series(n, seed, steps=8, features=3, classes=3):
  """Learnable toy series: the class sets which channel drifts upwards."""
  rng = np.random.default_rng(seed)
  y = rng.integers(0, classes, n)
  x = rng.normal(0, 0.3, (n, steps, features)).astype(np.float32)
  x[np.arange(n), :, y % features] += np.linspace(0, 2, steps)
  return x, y


def _npz_config(tmp_path, n=240, **overrides):
  x, y = _series(n, 0)
  xt, yt = _series(90, 1)
  path = tmp_path / 'd.npz'
  np.savez(path, x_train=x, y_train=y, x_test=xt, y_test=yt)
  config = small_config(dataset=f'npz:{path}', num_classes=3, hidden_size=8,
                        batch_size=20, eval_batch_size=100, impl='scan',
                        num_layers=2)
  config.update(overrides)
  return config


def test_every_setting_is_checked_against_the_data_before_training(
    tmp_path):
  """A setting the data cannot serve (NaN without missing='impute', labels
  past its num_classes, a constant channel under per_channel) is one line
  naming it before anything is written; settings that all can serve pass,
  whatever the base config says."""
  config = _npz_config(tmp_path, num_train_steps=4, eval_every=4,
                       num_layers=1, missing='impute')
  with np.load(tmp_path / 'd.npz') as f:
    arrays = dict(f)
  arrays['x_train'][3, 2, 1] = np.nan
  arrays['x_test'][:, :, 2] = 1.0  # constant in test only: no refusal
  np.savez(tmp_path / 'd.npz', **arrays)

  def refusal(grid, **overrides):
    c = config.copy_and_resolve_references()
    c.update(overrides)
    with pytest.raises(ConfigError) as e:
      sweep.run_sweep(c, tmp_path / 'sw', 1, quiet=True, grid=grid)
    assert not (tmp_path / 'sw').exists()
    return str(e.value)

  assert refusal({'missing': ['impute', 'refuse']}).startswith(
      "--grid setting missing=refuse: npz:")
  assert 'holds 1 NaN value(s)' in refusal({'missing': ['impute', 'refuse']})
  assert refusal({'num_classes': [3, 2]}).startswith(
      '--grid setting num_classes=2: ')
  data = registry.load(config)
  lenient = [sweep.configured(config, s) for s in (
      {'missing': 'impute', 'num_classes': 3}, {'num_classes': 4})]
  sweep.check_settings(lenient, [{}, {}], data)
  arrays['x_train'][:, :, 2] = 7.0
  np.savez(tmp_path / 'd.npz', **arrays)
  assert 'normalize=per_channel: npz:' in refusal(
      {'normalize': ['none', 'per_channel']}, normalize='none')
  assert 'channel 2 is constant' in refusal(
      {'normalize': ['none', 'per_channel']}, normalize='none')


def test_a_sweep_on_changed_data_is_another_sweep(tmp_path, monkeypatch):
  config = _npz_config(tmp_path, num_train_steps=4, eval_every=4,
                       num_layers=1)
  first = sweep.run_sweep(config, tmp_path / 'sw', 1, quiet=True)
  assert first['spec']['data']
  with np.load(tmp_path / 'd.npz') as f:
    arrays = dict(f)
  arrays['y_test'][0] = (arrays['y_test'][0] + 1) % 3
  np.savez(tmp_path / 'd.npz', **arrays)
  with pytest.raises(ConfigError, match=r'another sweep \(different data\)'):
    sweep.run_sweep(config, tmp_path / 'sw', 1, quiet=True)
  # A sweep written before the digest existed is not compared on it.
  for name in ('sweep.json', 'results.json'):
    saved = json.loads((tmp_path / 'sw' / name).read_text())
    del (saved if name == 'sweep.json' else saved['spec'])['data']
    (tmp_path / 'sw' / name).write_text(json.dumps(saved))
  assert sweep.run_sweep(config, tmp_path / 'sw', 1, quiet=True)[
      'already_finished']
  # The same file named by a relative path: the same sweep.
  monkeypatch.chdir(tmp_path)
  config.dataset = 'npz:d.npz'
  assert sweep.run_sweep(config, tmp_path / 'sw', 1, quiet=True)[
      'already_finished']
  # The file moved (its old path gone): the same data by its digest (back
  # in the files), the same sweep.
  for name in ('sweep.json', 'results.json'):
    saved = json.loads((tmp_path / 'sw' / name).read_text())
    (saved if name == 'sweep.json' else saved['spec'])['data'] = first[
        'spec']['data']
    (tmp_path / 'sw' / name).write_text(json.dumps(saved))
  arrays['y_test'][0] = (arrays['y_test'][0] - 1) % 3  # as it was
  np.savez(tmp_path / 'e.npz', **arrays)
  (tmp_path / 'd.npz').unlink()
  config.dataset = f'npz:{tmp_path / "e.npz"}'
  assert sweep.run_sweep(config, tmp_path / 'sw', 1, quiet=True)[
      'already_finished']


def test_parse_grid_types_values_and_refuses_bad_input():
  grid = sweep.parse_grid(['hidden_size=8,16', 'dropout_rate=0,0.2',
                           'bidirectional=true,false', 'cell=lstm,gru'])
  assert grid == {'hidden_size': [8, 16], 'dropout_rate': [0.0, 0.2],
                  'bidirectional': [True, False], 'cell': ['lstm', 'gru']}
  assert isinstance(grid['dropout_rate'][0], float)
  bad = {'hidden_sise=8': 'Unknown config key `hidden_sise`. Did you mean '
                          '`hidden_size`?',
         'hidden_size=8,wide': 'config key `hidden_size` takes int values, '
                               "got 'wide'",
         'hidden_size': '--grid takes KEY=V1,V2',
         'bidirectional=maybe': 'takes bool values'}
  for spec, message in bad.items():
    with pytest.raises(ConfigError, match=re.escape(message)) as e:
      sweep.parse_grid([spec])
    assert e.value.arg == 'grid' and '\n' not in str(e.value)
  with pytest.raises(ConfigError, match='names `seed` twice'):
    sweep.parse_grid(['seed=1', 'seed=2'])


def test_settings_refuse_keys_that_cannot_vary_and_bad_values():
  config = small_config()
  for key in ('dataset', 'seed', 'eval_every'):
    with pytest.raises(ConfigError, match=f'`{key}` cannot vary in a sweep: '
                       + re.escape(sweep.CANNOT_VARY[key])):
      sweep.settings_of(config, {key: [1, 2]})
  with pytest.raises(ConfigError, match=r'--grid setting dropout_rate=1.5: '
                     r'Config key `dropout_rate` must be in \[0, 1\)'):
    sweep.settings_of(config, {'dropout_rate': [0.0, 1.5]})
  with pytest.raises(ConfigError, match='repeats a value'):
    sweep.settings_of(config, {'hidden_size': [8, 8]})
  settings = sweep.settings_of(config, {'hidden_size': [8, 16],
                                        'learning_rate': [1e-3, 3e-3]})
  assert settings[1] == {'hidden_size': 8, 'learning_rate': 3e-3}
  assert len(settings) == 4


def test_groups_split_on_program_keys_only():
  """Numbers of the step share a program; shapes (and a cosine schedule's
  warmup, which sets its decay's length, and clipping off against on) do
  not."""
  config = small_config()
  grid = {'hidden_size': [8, 16], 'learning_rate': [1e-3, 3e-3],
          'dropout_rate': [0.0, 0.2], 'grad_clip_norm': [0.0, 1.0, 2.0],
          'warmup_steps': [0, 5]}
  settings = sweep.settings_of(config, grid)
  groups = sweep.group_settings(config, settings)
  assert [len(g) for g in groups] == [8, 16, 8, 16]
  assert {settings[i]['hidden_size'] for i in groups[2] + groups[3]} == {16}
  assert {settings[i]['grad_clip_norm'] for i in groups[0]} == {0.0}
  assert {settings[i]['grad_clip_norm'] for i in groups[1]} == {1.0, 2.0}
  cosine = small_config(lr_schedule='cosine')
  groups = sweep.group_settings(
      cosine, sweep.settings_of(cosine, {'warmup_steps': [0, 5],
                                         'learning_rate': [1e-3, 3e-3]}))
  assert [len(g) for g in groups] == [2, 2]


class ValidationOnly(dict):
  """A table row that fails the test if a test figure is read from it."""

  def __getitem__(self, key):
    assert key != 'test', f'selection read {key!r}'
    return super().__getitem__(key)

  def get(self, key, default=None):
    assert key != 'test', f'selection read {key!r}'
    return super().get(key, default)


def _row(acc, loss, test_acc):
  return ValidationOnly(
      validation={'accuracy': {'mean': acc}, 'loss': {'mean': loss}},
      test={'accuracy': {'mean': test_acc}})


def test_choose_by_monitor_on_validation_ties_by_loss_never_test():
  rows = [_row(0.90, 0.30, 0.99), _row(0.95, 0.40, 0.80),
          _row(0.95, 0.20, 0.70), _row(0.93, 0.10, 0.99)]
  assert sweep.choose(rows, 'val_accuracy') == 2  # a tie: the lower loss
  assert sweep.choose(rows[:2], 'val_accuracy') == 1
  assert sweep.choose(rows, 'val_loss') == 3
  with pytest.raises(ConfigError, match='validation gives val_accuracy, '
                     'val_loss'):
    sweep.choose(rows, 'val_macro_f1')
  with pytest.raises(AssertionError, match="'test'"):
    rows[0]['test']  # The guard works.
  assert sweep.monitor_of(small_config()) == 'val_accuracy'


def test_stratified_folds_partition_and_refuse_small_classes():
  labels = np.array([0] * 10 + [1] * 7 + [2] * 3)
  parts = sweep.stratified_folds(labels, 3)
  assert sorted(np.concatenate(parts).tolist()) == list(range(len(labels)))
  for part in parts:
    assert (np.bincount(labels[part], minlength=3) >= 1).all()
  with pytest.raises(ConfigError, match=r'--cv 4: class 2 has only 3 '
                     r'training examples, fewer than 4 folds: use --cv 3 or '
                     'fewer.') as e:
    sweep.stratified_folds(labels, 4)
  assert e.value.arg == 'cv'
  with pytest.raises(ConfigError, match=r'class 2 \(run\) has only 3'):
    sweep.stratified_folds(labels, 4, names=['rest', 'walk', 'run'])


def test_a_grid_takes_class_weight_lists_beside_names():
  """``[...]`` is one list value (its commas are its own), and a setting may
  give a key a value of another type than the base config's."""
  grid = sweep.parse_grid(['class_weight=none,[1,5,2],balanced'])
  assert grid == {'class_weight': ['none', [1.0, 5.0, 2.0], 'balanced']}
  config = small_config(num_classes=3)
  settings = sweep.settings_of(config, grid)
  assert [sweep.configured(config, s).class_weight for s in settings] == [
      'none', [1.0, 5.0, 2.0], 'balanced']
  listed = small_config(num_classes=3, class_weight=[1.0, 5.0, 2.0])
  assert sweep.configured(listed, {'class_weight': 'none'}).class_weight == (
      'none')
  with pytest.raises(ConfigError, match=r'class_weight=\[1.0, 2.0\]: .*has 2'):
    sweep.settings_of(config, sweep.parse_grid(['class_weight=none,[1,2]']))


def test_a_diverged_setting_is_never_chosen():
  """NaN figures rank last: compared as numbers, a NaN first row stayed the
  maximum and was chosen."""
  row = lambda acc, loss: {'validation': {'accuracy': {'mean': acc},
                                          'loss': {'mean': loss}}}
  rows = [row(float('nan'), float('nan')), row(0.5, 1.0), row(0.7, 0.9)]
  assert sweep.choose(rows, 'val_accuracy') == 2
  assert sweep.choose(rows, 'val_loss') == 2
  assert sweep.choose(rows[:2], 'val_accuracy') == 1


@pytest.mark.parametrize('key, value, fix', [
    ('data_placement', 'stream', "'device'"),
    ('bucket_by_length', True, 'False')])
def test_streaming_keys_are_refused_naming_each(tmp_path, key, value, fix):
  with pytest.raises(ConfigError, match=f'set config key `{key}` to {fix} '
                     rf'\({key}={value!r} is for seqclf train\)') as e:
    sweep.run_sweep(small_config(**{key: value}), tmp_path / 'sw', 1)
  assert e.value.arg == f'config.{key}'
  assert not (tmp_path / 'sw').exists()


def test_learning_rates_and_a_grid_over_them_are_refused_together(tmp_path):
  with pytest.raises(ConfigError, match='learning_rates is shorthand for a '
                     'grid over `learning_rate`, which the grid names too'):
    sweep.run_sweep(small_config(), tmp_path / 'sw', 1, [1e-3],
                    grid={'learning_rate': [1e-2]})
  assert not (tmp_path / 'sw').exists()


@pytest.mark.slow
def test_grouped_models_equal_their_single_runs(tmp_path):
  """Each model of one program, with its own learning rate, dropout,
  clipping and warmup (dropout and warmup off in one model, on in the
  other), trains bitwise as `seqclf train` with that setting and seed."""
  config = _npz_config(tmp_path, num_train_steps=20, eval_every=20,
                       checkpoint_every=20)
  grid = {'learning_rate': [1e-3, 1e-2], 'dropout_rate': [0.0, 0.3],
          'grad_clip_norm': [0.5, 0.05], 'warmup_steps': [0, 8]}
  # The first and last settings: every per-model key differs between them.
  settings = sweep.settings_of(config, grid)[::15]
  assert sweep.group_settings(config, settings) == [[0, 1]]
  workdir = tmp_path / 'sweep'
  out = sweep.run_unit(workdir, 'u', sweep.configured(config, settings[0]),
                       settings,
                       [sweep.name_of(s) for s in settings], [0], list(grid),
                       registry.load(config)['train'],
                       {'validation': registry.load(config)['validation']},
                       sweep.Progress(1, quiet=True))
  params = unit_state(workdir, 'u', 20)['params']
  digests = set()
  for k, setting in enumerate(settings):
    single = train.train_and_evaluate(sweep.configured(config, setting),
                                      tmp_path / f'single{k}', quiet=True)
    _, expected, _ = inference.load_model(tmp_path / f'single{k}')
    swept = jax.tree.map(lambda x, k=k: np.asarray(x)[k], params)
    jax.tree.map(np.testing.assert_array_equal, swept, expected)
    assert out['metrics']['validation']['loss'][k] == single['val_loss']
    digests.add(float(np.sum([np.sum(x) for x in jax.tree.leaves(swept)])))
  assert len(digests) == len(settings)  # every hyperparameter took effect


@pytest.mark.slow
def test_weight_decays_train_in_one_program_as_their_single_runs(tmp_path):
  """Decays other than 0 vary per model inside one program (traced), and
  each model still trains bitwise as its `seqclf train` run; 0 (no decay)
  is its own program."""
  config = _npz_config(tmp_path, num_train_steps=20, eval_every=20,
                       checkpoint_every=20, num_layers=1)
  grid = {'weight_decay': [0.3, 1e-3], 'learning_rate': [1e-2]}
  settings = sweep.settings_of(config, grid)
  assert sweep.group_settings(config, settings) == [[0, 1]]
  assert sweep.group_settings(config, sweep.settings_of(
      config, {'weight_decay': [0.0, 0.3]})) == [[0], [1]]
  workdir = tmp_path / 'sweep'
  data = registry.load(config)
  out = sweep.run_unit(workdir, 'u', sweep.configured(config, settings[0]),
                       settings, [sweep.name_of(s) for s in settings], [0],
                       list(grid), data['train'],
                       {'validation': data['validation']},
                       sweep.Progress(1, quiet=True))
  params = unit_state(workdir, 'u', 20)['params']
  for k, setting in enumerate(settings):
    single = train.train_and_evaluate(sweep.configured(config, setting),
                                      tmp_path / f'single{k}', quiet=True)
    _, expected, _ = inference.load_model(tmp_path / f'single{k}')
    jax.tree.map(np.testing.assert_array_equal,
                 jax.tree.map(lambda x, k=k: np.asarray(x)[k], params),
                 expected)
    assert out['metrics']['validation']['loss'][k] == single['val_loss']


def _sweep_cli(workdir, config_file, *extra):
  return [sys.executable, '-m', 'seqclf', 'sweep', f'--config={config_file}',
          f'--workdir={workdir}', '--seeds=2', '--grid=hidden_size=8,12',
          '--grid=learning_rate=3e-3,1e-2', *extra]


_CONFIG_FILE = """
from seqclf.config import base_config
def get_config():
  c = base_config()
  c.update({overrides})
  return c
"""


@pytest.mark.slow
def test_sweep_killed_resumes_to_the_uninterrupted_results(tmp_path):
  """SIGTERM mid-group: the unit saves where it is, exit 75 with one line,
  no lock left; then kill -9 mid-group, then the same command: the table and
  every unit's final parameters are bitwise those of a sweep never stopped;
  a finished sweep prints its table again without training."""
  config = _npz_config(tmp_path, num_train_steps=300, eval_every=100,
                       checkpoint_every=100, steps_per_call=20, log_every=20,
                       num_layers=1)
  config_file = tmp_path / 'c.py'
  config_file.write_text(_CONFIG_FILE.format(overrides=config.to_dict()))
  env = {**os.environ, 'SEQCLF_AUTOTUNE_CACHE': str(tmp_path / 'a.json')}
  killed, whole = tmp_path / 'killed', tmp_path / 'whole'
  proc = subprocess.Popen(_sweep_cli(killed, config_file), cwd=REPO, env=env,
                          text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT)
  seen = []
  for line in proc.stdout:  # Between checkpoints: the stop saves its own.
    seen.append(line)
    if line.startswith('g0: step 40/'):
      proc.send_signal(signal.SIGTERM)
      break
  output = ''.join(seen) + proc.stdout.read()
  assert proc.wait(timeout=120) == 75, output
  stopped = checkpoint.manager(killed / 'units' / 'g0',
                               create=False).latest_step()
  assert 40 <= stopped < 100 and stopped % 20 == 0, output
  assert output.strip().endswith(
      f'seqclf sweep: Stopped by SIGTERM after saving step {stopped} to '
      f'{killed}/units/g0/checkpoints; run the same command again to '
      'resume.'), output
  assert 'Traceback' not in output
  assert not (killed / 'train.lock').exists()
  proc = subprocess.Popen(_sweep_cli(killed, config_file), cwd=REPO, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 240
  ckpts = killed / 'units' / 'g1' / 'checkpoints'
  # Killed once g1 evaluated (step 100) and checkpointed after it.
  while time.time() < deadline and proc.poll() is None and not (
      ckpts.is_dir() and any(p.name.isdigit() and int(p.name) >= 100
                             for p in ckpts.iterdir())):
    time.sleep(0.05)
  assert proc.poll() is None, 'the sweep ended before it could be killed'
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert json.loads((killed / 'units' / 'g0' / 'results.json').read_text()
                    )['resumed_from_step'] == stopped
  assert not (killed / 'results.json').exists()
  # Its curves so far were flushed: the kill lost none of them.
  boards = list((killed / 'tensorboard').glob('*/seed*/g1'))
  assert len(boards) == 4
  for board in boards:
    assert tensorboard_tags(board).get('validation/loss') == {'scalar'}
  resumed = subprocess.run(_sweep_cli(killed, config_file), cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=600)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  full = subprocess.run(_sweep_cli(whole, config_file, '--quiet'), cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=600)
  assert full.returncode == 0, full.stderr[-3000:]
  a = json.loads((killed / 'results.json').read_text())
  b = json.loads((whole / 'results.json').read_text())
  assert a['rows'] == b['rows'] and a['chosen'] == b['chosen']
  assert [r['name'] for r in a['rows'] if r['chosen']] == [a['chosen']]
  for unit in ('g0', 'g1'):
    u = json.loads((killed / 'units' / unit / 'results.json').read_text())
    v = json.loads((whole / 'units' / unit / 'results.json').read_text())
    assert u['metrics'] == v['metrics']
    for x, y in zip(jax.tree.leaves(unit_state(killed, unit, 300)),
                    jax.tree.leaves(unit_state(whole, unit, 300))):
      np.testing.assert_array_equal(x, y)
  assert json.loads((killed / 'units' / 'g1' / 'results.json').read_text()
                    )['resumed_from_step'] is not None
  assert (killed / 'results.md').read_text() in resumed.stdout
  assert (killed / 'results.md').read_text() == (
      whole / 'results.md').read_text()
  # TensorBoard: each step once, as in the sweep never stopped.
  for board in (killed / 'tensorboard').glob('*/seed*/g*'):
    assert sorted(tensorboard_values(board)) == sorted(tensorboard_values(
        whole / board.relative_to(killed))), board
  assert f'Plot: {killed / "sweep.png"}' in resumed.stdout
  assert (killed / 'sweep.png').read_bytes()[:4] == b'\x89PNG'
  # The chosen setting's models, bitwise the uninterrupted sweep's.
  for seed in (0, 1):
    for x, y in zip(*(jax.tree.leaves(_checkpoint_state(
        w / 'chosen' / f'seed{seed}')) for w in (killed, whole))):
      np.testing.assert_array_equal(x, y)
  csv_lines = (killed / 'results.csv').read_text().splitlines()
  assert csv_lines[0].startswith('hidden_size,learning_rate,val_accuracy_mean')
  assert len(csv_lines) == 5
  again = run_cli(*_sweep_cli(killed, config_file)[3:])
  assert again.returncode == 0 and 'step ' not in again.stdout, again.stderr
  assert (killed / 'results.md').read_text() in again.stdout
  other = run_cli(*_sweep_cli(killed, config_file, '--seeds=3')[3:])
  assert other.returncode == 2
  assert other.stderr.strip().endswith(
      'holds another sweep (different seeds): run its own command to '
      'resume it, or use a fresh --workdir.'), other.stderr


def test_a_stop_between_units_trains_no_further_unit(tmp_path):
  """A signal that came while a unit finished (its evaluation, its
  results) stops the sweep before the next unit writes anything."""
  x, y = _series(40, 0)
  split = {'image': x, 'label': y}
  stop = preemption.StopRequest()
  stop.signum = signal.SIGTERM
  with pytest.raises(preemption.Preempted, match=re.escape(
      f'Stopped by SIGTERM with all finished work saved in {tmp_path}; run '
      'the same command again to resume.')):
    sweep.run_unit(tmp_path, 'g1', small_config(), [{}], ['config'], [0], [],
                   split, {'validation': split},
                   sweep.Progress(1, quiet=True), stop)
  assert not (tmp_path / 'units').exists()

@pytest.mark.slow
def test_sweep_on_cpu_devices_equals_seqclf_train(tmp_path):
  """On a CPU split into devices, `seqclf sweep` lays a group out as `seqclf
  train` does (each model's batches split over the devices): models with
  their own dropout and warmup equal their `seqclf train` runs bitwise."""
  config = _npz_config(tmp_path, num_train_steps=20, eval_every=20,
                       checkpoint_every=20, cpu_devices=2, num_layers=1)
  config_file = tmp_path / 'c.py'
  config_file.write_text(_CONFIG_FILE.format(overrides=config.to_dict()))
  env = {**os.environ, 'SEQCLF_AUTOTUNE_CACHE': str(tmp_path / 'a.json')}
  seqclf = [sys.executable, '-m', 'seqclf']
  swept = subprocess.run(
      [*seqclf, 'sweep', f'--config={config_file}', '--seeds=1', '--quiet',
       f'--workdir={tmp_path / "sweep"}', '--grid=dropout_rate=0,0.3',
       '--grid=warmup_steps=0,8'], cwd=REPO, env=env, capture_output=True,
      text=True, timeout=300)
  assert swept.returncode == 0, swept.stderr[-3000:]
  unit = json.loads((tmp_path / 'sweep' / 'units' / 'g0' / 'results.json'
                     ).read_text())
  assert len(unit['devices']) == 2 and len(unit['models']) == 4
  params = unit_state(tmp_path / 'sweep', 'g0', 20)['params']
  for k, (rate, warmup) in ((0, (0.0, 0)), (3, (0.3, 8))):
    workdir = tmp_path / f'single{k}'
    single = subprocess.run(
        [*seqclf, 'train', f'--config={config_file}', f'--workdir={workdir}',
         f'--config.dropout_rate={rate}', f'--config.warmup_steps={warmup}',
         '--quiet', '--noreport'], cwd=REPO, env=env, capture_output=True,
        text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    _, expected, _ = inference.load_model(workdir)
    jax.tree.map(np.testing.assert_array_equal,
                 jax.tree.map(lambda x, k=k: np.asarray(x)[k], params),
                 expected)
    result = json.loads((workdir / 'results.json').read_text())
    assert unit['metrics']['validation']['loss'][k] == result['val_loss']


@pytest.mark.slow
def test_cv_scores_folds_then_trains_the_chosen_on_all(tmp_path, capsys):
  config = _npz_config(tmp_path, num_train_steps=20, eval_every=20,
                       checkpoint_every=20, num_layers=1)
  results = sweep.run_sweep(config, tmp_path / 'w', 2, cv=3,
                            grid={'learning_rate': [1e-9, 1e-2]})
  # The progress counts the refit from the start: it never goes back.
  done = [int(p) for p in re.findall(r'\| sweep (\d+)%',
                                      capsys.readouterr().out)]
  assert done == sorted(done) and done[-1] == 100 and done[0] < 100, done
  units = sorted(p.name for p in (tmp_path / 'w' / 'units').iterdir())
  assert units == ['final-1', 'g0-fold0', 'g0-fold1', 'g0-fold2']
  low, high = results['rows']
  assert high['chosen'] and not low['test']  # test: the chosen setting only
  assert results['test_accuracies'] == high['test']['accuracy']['values']
  # The chosen models: trained on the whole training split (validation and
  # train together, so another data digest), read as runs.
  for j, path in enumerate(results['chosen_models']):
    assert inference.evaluate(path, ('test',))['test']['accuracy'] == (
        results['test_accuracies'][j])
    _, _, model_config = inference.load_model(path, quiet=True)
    assert model_config.data_digest != results['spec']['data']
  from seqclf.cli import report  # pylint: disable=g-import-not-at-top
  assert "its cross-validation folds'." in report.write_report(
      results['chosen_models'][0]).path.read_text()
  folds = [json.loads((tmp_path / 'w' / 'units' / f'g0-fold{f}' /
                       'results.json').read_text()) for f in range(3)]
  assert sum(f['count']['validation'] for f in folds) == 240
  board = tmp_path / 'w' / 'tensorboard'
  assert len(list((board / 'hparams').rglob('events.out.tfevents.*'))) >= 2
  assert list((board / 'learning_rate=0.01' / 'seed1' / 'g0-fold2').glob(
      'events.out.tfevents.*'))
  with pytest.raises(ConfigError, match='--cv 100: class'):
    sweep.run_sweep(config, tmp_path / 'w2', 1, cv=100, quiet=True)
  assert not (tmp_path / 'w2').exists()


@pytest.mark.parametrize('grid, message', [
    ('hidden_sise=8', 'Unknown config key `hidden_sise`.'),
    ('hidden_size=8,wide', "takes int values, got 'wide'"),
    ('dataset=mnist', '`dataset` cannot vary in a sweep: settings are '
                      'compared on one validation split'),
])
def test_cli_bad_grid_is_one_line(tmp_path, grid, message):
  out = run_cli('sweep', '--config=default', f'--workdir={tmp_path / "w"}',
                f'--grid={grid}')
  assert out.returncode == 2, out.stderr
  assert message in out.stderr, out.stderr
  assert len(out.stderr.strip().splitlines()) == 1, out.stderr
  assert not (tmp_path / 'w').exists()


@pytest.mark.slow
def test_early_stopping_freezes_each_model_and_ends_the_group(tmp_path):
  """With `patience` (read where the config has the key), a model whose
  validation score stops improving stops changing; when all have, the group
  ends; each model's result is its best evaluation's parameters."""
  config = _npz_config(tmp_path, num_train_steps=60, eval_every=10,
                       checkpoint_every=10, num_layers=1)
  config.patience = 1
  grid = {'learning_rate': [1e-9, 1e-2]}
  settings = sweep.settings_of(small_config(), grid)
  data = registry.load(config)
  out = sweep.run_unit(tmp_path / 'w', 'u', config, settings,
                       [sweep.name_of(s) for s in settings], [0], list(grid),
                       data['train'], {'validation': data['validation']},
                       sweep.Progress(1, quiet=True))
  # A rate of 1e-9 never moves the accuracy: best at the first evaluation,
  # stopped at the second.
  assert out['best_step'][0] == 10 and out['stopped_early'][0]
  state = lambda step=None: unit_state(tmp_path / 'w', 'u', step)
  last = state()
  for a, b in zip(jax.tree.leaves(state(20)['params']),
                  jax.tree.leaves(last['params'])):
    np.testing.assert_array_equal(np.asarray(a)[0], np.asarray(b)[0])
  last_step = int(np.asarray(last['step'])[0])  # the newest checkpoint's
  if out['stopped_early'][1]:  # Both stopped: the group ended early.
    assert last_step < 60
  else:
    assert last_step == 60
  # Patience running out at the last evaluation is no early stop.
  config.num_train_steps = 20
  out = sweep.run_unit(tmp_path / 'w20', 'u', config, settings,
                       [sweep.name_of(s) for s in settings], [0], list(grid),
                       data['train'], {'validation': data['validation']},
                       sweep.Progress(1, quiet=True))
  assert out['best_step'][0] == 10 and not out['stopped_early'][0]


def _checkpoint_state(workdir):
  """The newest training checkpoint's state of a run, with orbax alone."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  from seqclf.training import checkpoint  # pylint: disable=g-import-not-at-top
  mngr = checkpoint.manager(workdir, create=False)
  return mngr.restore(mngr.latest_step(), args=ocp.args.Composite(
      state=ocp.args.StandardRestore()))['state']


@pytest.mark.slow
def test_chosen_models_are_the_single_runs_and_are_read_as_runs(tmp_path):
  """`W/chosen/seedS` holds the chosen setting's model of seed S as the
  trainer's checkpoint: bitwise `seqclf train`'s state (params and optimizer
  state), read by evaluate with the sweep's figures; training refuses it and
  the sweep's own workdir, and reading the sweep's workdir names them; a
  sweep refuses a single run's workdir, which it would overwrite."""
  config = _npz_config(tmp_path, num_train_steps=8, eval_every=4,
                       checkpoint_every=4, num_layers=1)
  workdir = tmp_path / 'w'
  results = sweep.run_sweep(config, workdir, 2, quiet=True,
                            grid={'learning_rate': [1e-9, 1e-2]})
  row = next(r for r in results['rows'] if r['chosen'])
  assert row['setting'] == {'learning_rate': 1e-2}
  assert results['chosen_models'] == [str(workdir / 'chosen' / f'seed{s}')
                                      for s in (0, 1)]
  for j, seed in enumerate((0, 1)):
    chosen = workdir / 'chosen' / f'seed{seed}'
    single = tmp_path / f'single{seed}'
    train.train_and_evaluate(sweep.configured(config, {**row['setting'],
                                                       'seed': seed}),
                             single, quiet=True)
    ours, theirs = _checkpoint_state(chosen), _checkpoint_state(single)
    assert jax.tree.structure(ours) == jax.tree.structure(theirs)
    jax.tree.map(np.testing.assert_array_equal, ours, theirs)
    evaluated = inference.evaluate(chosen)
    for split, prefix in (('validation', 'val'), ('test', 'test')):
      # Evaluated on the path `impl='auto'` picks here: equal to rounding.
      assert evaluated[split]['loss'] == pytest.approx(
          row[split]['loss']['values'][j], rel=1e-5)
      saved = json.loads((chosen / 'results.json').read_text())
      assert saved[f'{prefix}_accuracy'] == evaluated[split]['accuracy']
  with pytest.raises(errors.WorkdirError, match='holds a model that the sweep'):
    train.train_and_evaluate(config, workdir / 'chosen' / 'seed0', quiet=True)
  with pytest.raises(errors.WorkdirError, match=r'holds a sweep \(sweep.json'):
    train.train_and_evaluate(config, workdir, quiet=True)
  with pytest.raises(errors.CheckpointError, match='chosen/seedS'):
    inference.load_model(workdir)
  kept = (tmp_path / 'single0' / 'results.json').read_bytes()
  with pytest.raises(errors.WorkdirError, match=r'holds a training run or '
                     r'saved model \(checkpoints, metrics.jsonl\): sweep in '
                     'another workdir'):
    sweep.run_sweep(config, tmp_path / 'single0', 1, quiet=True,
                    grid={'learning_rate': [1e-2]})
  assert (tmp_path / 'single0' / 'results.json').read_bytes() == kept
  assert not (tmp_path / 'single0' / 'sweep.json').exists()


@pytest.mark.slow
def test_chosen_models_of_early_stopping_and_cv_hold_their_results(tmp_path,
                                                                  capsys):
  """With early stopping a chosen model holds its best evaluation's params,
  saved even where the group ended between checkpoints; under --cv with
  early stopping, the chosen setting trains on the whole training split for
  its folds' mean best step."""
  config = _npz_config(tmp_path, num_train_steps=40, eval_every=4,
                       checkpoint_every=100, num_layers=1,
                       monitor='val_loss', patience=1)
  # A rate this high makes the validation loss rise soon after it fell.
  stopped = sweep.run_sweep(config, tmp_path / 'es', 1, quiet=True,
                            grid={'learning_rate': [0.3]})
  unit = json.loads((tmp_path / 'es' / 'units' / 'g0' / 'results.json'
                     ).read_text())
  assert unit['stopped_early'] == [True] and unit['saved_step'] < 40
  chosen = tmp_path / 'es' / 'chosen' / 'seed0'
  saved = json.loads((chosen / 'results.json').read_text())
  assert saved['best_step'] == unit['best_step'][0] < unit['saved_step']
  # Its checkpoint is numbered by the step its parameters are of.
  assert checkpoint.manager(chosen, create=False).all_steps() == [
      saved['best_step']]
  best = unit_state(tmp_path / 'es', 'g0')['best_params']
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a)[0], b),
               best, _checkpoint_state(chosen)['params'])
  assert inference.evaluate(chosen)['validation']['loss'] == pytest.approx(
      stopped['rows'][0]['validation']['loss']['values'][0], rel=1e-5)
  from seqclf.cli import report  # pylint: disable=g-import-not-at-top
  written = report.write_report(chosen)
  text = written.path.read_text()
  assert f"best checkpoint's (step {saved['best_step']}, by val_loss" in text
  # Its sweep logged its curves: no empty figure, a pointer instead.
  assert 'training_curves' not in written.plots
  assert f'(`{tmp_path / "es"}/tensorboard/`)' in text
  assert f'Chosen by the sweep in `{tmp_path / "es"}` (setting ' in text
  # A unit whose checkpoints are gone: the table again, no models, a note.
  (tmp_path / 'es' / 'results.json').unlink()
  shutil.rmtree(tmp_path / 'es' / 'units' / 'g0' / 'checkpoints')
  again = sweep.run_sweep(config, tmp_path / 'es', 1, quiet=True,
                          grid={'learning_rate': [0.3]})
  assert again['chosen_models'] == [] and again['rows'] == stopped['rows']
  assert 'lacks the state its results are of' in capsys.readouterr().err
  # --cv with early stopping: the chosen setting trains on the whole split
  # (no validation to stop on) for its folds' mean best step.
  refit = sweep.run_sweep(config, tmp_path / 'cv-es', 1, cv=2, quiet=True,
                          grid={'learning_rate': [0.3]})
  units = tmp_path / 'cv-es' / 'units'
  best = [json.loads((units / f'g0-fold{f}' / 'results.json').read_text())[
      'best_step'][0] for f in (0, 1)]
  assert refit['refit_steps'] == round(np.mean(best)) < 40
  final = json.loads((units / f'final-0-steps{refit["refit_steps"]}' /
                      'results.json').read_text())
  assert final['saved_step'] == refit['refit_steps'] and 'best_step' not in final
  assert f'for {refit["refit_steps"]} steps, its folds' in refit['table']
  # Its validation split is training data: evaluate scores test alone.
  out = run_cli('evaluate', '--workdir',
                str(tmp_path / 'cv-es' / 'chosen' / 'seed0'))
  assert out.returncode == 0, out.stderr
  assert "note: this model trained on the validation split too" in out.stderr
  scored = json.loads(out.stdout)
  assert 'validation' not in scored
  assert scored['test']['accuracy'] == pytest.approx(
      refit['rows'][0]['test']['accuracy']['values'][0], rel=1e-6)


def test_table_shows_a_spread_only_over_several_seeds():
  summary = lambda *v: {'mean': float(np.mean(v)), 'std': sweep._std(
      np.asarray(v)), 'values': list(v)}
  row = lambda n: {'name': 'lr=1', 'chosen': True,
                   'validation': {'loss': summary(*[0.5, 0.7][:n])},
                   'test': {'loss': summary(*[0.4, 0.6][:n])}}
  one = sweep.markdown({'rows': [row(1)], 'num_seeds': 1, 'cv': 0,
                        'monitor': 'val_accuracy'})
  assert '| **lr=1** (chosen) | 0.5000 | 0.4000 |' in one
  assert '±' not in one and 'one seed each, so no spread' in one
  two = sweep.markdown({'rows': [row(2)], 'num_seeds': 2, 'cv': 0,
                        'monitor': 'val_accuracy'})
  assert '0.6000 ± 0.1414 | 0.5000 ± 0.1414 |' in two


def test_table_columns_do_not_depend_on_the_order_metrics_were_read():
  """Rows read back from a resumed sweep's units hold their metrics in
  another order than rows just trained: the table is the same."""
  summary = lambda v: {'mean': v, 'std': 0.0, 'values': [v]}
  figures = {'loss': summary(0.5), 'accuracy': summary(0.9),
             'macro_f1': summary(0.8)}
  row = lambda order: {'name': 'a', 'chosen': True,
                       'validation': {m: figures[m] for m in order},
                       'test': {m: figures[m] for m in order}}
  table = lambda *rows: sweep.markdown({'rows': list(rows), 'num_seeds': 1,
                                        'cv': 0, 'monitor': 'val_accuracy'})
  fresh = table(row(['loss', 'accuracy', 'macro_f1']))
  assert table(row(['accuracy', 'macro_f1', 'loss'])) == fresh
  assert '| setting | val loss | val accuracy | val macro_f1 | test loss |' in (
      fresh)


def test_a_unit_grouped_otherwise_is_refused_not_misread(tmp_path):
  """A unit whose saved models are not those this sweep groups there (as
  after a seqclf that grouped settings otherwise) stops the sweep in one
  line instead of giving its figures to other settings."""
  config = _npz_config(tmp_path, num_train_steps=4, eval_every=4,
                       num_layers=1)
  grid = {'learning_rate': [1e-3, 1e-2]}
  sweep.run_sweep(config, tmp_path / 'sw', 1, quiet=True, grid=grid)
  unit = tmp_path / 'sw' / 'units' / 'g0' / 'results.json'
  saved = json.loads(unit.read_text())
  assert saved['models'] == [[0, 0], [1, 0]]
  unit.write_text(json.dumps({**saved, 'models': [[0, 0]]}))
  (tmp_path / 'sw' / 'results.json').unlink()
  with pytest.raises(ConfigError, match='holds other models than this sweep'):
    sweep.run_sweep(config, tmp_path / 'sw', 1, quiet=True, grid=grid)


def test_samples_draw_settings_of_the_grid_at_random_and_resume(tmp_path,
                                                                capsys):
  """--samples N trains N settings of the grid drawn without replacement
  from config.seed, in the grid's order; the same draw on a rerun (a
  finished sweep), another N is another sweep; N < 0 is one line, and N
  not fewer than the grid's settings a note."""
  grid = {'learning_rate': [1e-3, 3e-3, 1e-2], 'dropout_rate': [0.0, 0.2]}
  settings = sweep.settings_of(small_config(), grid)
  drawn = sweep.sample(settings, 3, 0)
  assert len(drawn) == 3 and len({json.dumps(s) for s in drawn}) == 3
  assert drawn == sorted(drawn, key=settings.index)
  assert drawn == sweep.sample(settings, 3, 0)
  assert any(sweep.sample(settings, 3, seed) != drawn for seed in (1, 2, 3))
  assert sweep.sample(settings, 0, 0) == sweep.sample(settings, 9, 0) == settings
  config = _npz_config(tmp_path, num_train_steps=4, eval_every=4,
                       num_layers=1)
  results = sweep.run_sweep(config, tmp_path / 'sw', 1, quiet=True,
                            grid=grid, samples=2)
  assert [r['setting'] for r in results['rows']] == sweep.sample(
      settings, 2, config.seed)
  assert "2 settings (drawn at random from the grid's 6)" in results['table']
  assert sweep.run_sweep(config, tmp_path / 'sw', 1, quiet=True, grid=grid,
                         samples=2)['already_finished']
  with pytest.raises(ConfigError, match=r'another sweep \(different samples'):
    sweep.run_sweep(config, tmp_path / 'sw', 1, quiet=True, grid=grid,
                    samples=3)
  with pytest.raises(ConfigError, match='samples must be >= 0'):
    sweep.run_sweep(config, tmp_path / 'sw2', 1, quiet=True, grid=grid,
                    samples=-1)
  with pytest.raises(errors.DataError):  # (after the note, before training)
    sweep.run_sweep(small_config(dataset=f'npz:{tmp_path}/none.npz'),
                    tmp_path / 'sw3', 1, grid=grid, samples=6)
  assert capsys.readouterr().err == ("note: samples=6 is not fewer than the "
                                     "grid's 6 settings: training them all.\n")
