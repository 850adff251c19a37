"""Config validation: keys, types, ranges, choices."""

import subprocess
import sys

import pytest

from seqclf.config import ConfigError, base_config, validate


@pytest.mark.parametrize('key,value,match', [
    ('cell', 'rnn', 'cell'), ('dropout_rate', 1.0, 'dropout_rate'),
    ('warmup_steps', 1000, 'warmup_steps'), ('task', 'col', 'task'),
    ('dataset', 'cifar', 'dataset'), ('grad_clip_norm', -1.0, 'grad_clip'),
    ('permutation_seed', -1, 'permutation_seed'),
    ('pooling', 'max', "pooling` must be one of \\('last', 'mean'\\)"),
    ('input_noise', -0.1, 'input_noise` must be >= 0'),
    ('weight_decay', float('nan'), 'weight_decay` must be >= 0'),
    ('conv_features', -1, 'conv_features` must be >= 0'),
    ('class_names', ('a', 'a'), 'class_names` must be distinct strings'),
    ('class_names', (1, 2), 'class_names` must be distinct strings'),
    ('class_names', tuple('abcdefghijk'), r'names 11 classes, more than '
     r'num_classes=10: set --config.num_classes=11')])
def test_new_config_keys_are_validated(key, value, match):
  config = base_config()
  config[key] = value
  with pytest.raises(ConfigError, match=match):
    validate(config)


@pytest.mark.parametrize('cell', ['gru', 'elman'])
@pytest.mark.parametrize('impl', ['kernel', 'fused'])
def test_lstm_only_impls_reject_other_cells(cell, impl):
  """They would run nn.scan while results.json recorded ``impl``."""
  c = base_config()
  c.update(cell=cell, impl=impl)
  with pytest.raises(ConfigError, match=rf"impl='{impl}' cannot run this "
                     rf"layer: it runs only seqclf's LSTMCell \(cell='lstm'\), "
                     rf"got '{cell}'; use impl='scan'") as e:
    validate(c)
  assert e.value.arg == 'config.impl'
  c.impl = 'auto'
  validate(c)  # auto resolves to scan for these cells


@pytest.mark.parametrize('changes, match', [
    ({'hidden_size': 20}, 'multiple of 16, got 20'),
    ({'dtype': 'bfloat16'}, "computes in float32, got dtype='bfloat16'"),
])
def test_kernel_impl_rejects_what_the_kernel_cannot_run(changes, match):
  c = base_config()
  c.update(impl='kernel', **changes)
  with pytest.raises(ConfigError, match=match):
    validate(c)
  c.impl = 'fused'
  validate(c)


def test_choice_lists_come_from_the_modules_that_use_them(monkeypatch):
  """validate reads each list where it is defined: extending the module's
  list is all a new choice needs, and the message shows that list."""
  from seqclf.data import views  # pylint: disable=g-import-not-at-top
  from seqclf.training import optim  # pylint: disable=g-import-not-at-top
  c = base_config()
  c.task = 'spiral'
  with pytest.raises(ConfigError, match=r"`task` must be one of \('row', "):
    validate(c)
  monkeypatch.setattr(views, 'TASKS', (*views.TASKS, 'spiral'))
  validate(c)
  c.lr_schedule = 'step'
  with pytest.raises(ConfigError, match='lr_schedule'):
    validate(c)
  monkeypatch.setattr(optim, 'SCHEDULES', (*optim.SCHEDULES, 'step'))
  validate(c)


def test_validating_a_config_builds_and_initializes_nothing():
  """validate imports the choice lists' modules: that must neither build the
  CPU kernel nor start a JAX backend (the CLI splits the CPU into devices
  after validating, which a started backend would refuse)."""
  code = ('from seqclf.kernels import lstm_kernel\n'
          'def build(*a, **k): raise AssertionError("kernel built")\n'
          'lstm_kernel.build = build\n'
          'from seqclf import config\n'
          'config.validate(config.base_config())\n'
          'from jax._src import xla_bridge\n'
          'assert not xla_bridge.backends_are_initialized(), "backend"\n')
  proc = subprocess.run([sys.executable, '-c', code], capture_output=True,
                        text=True, check=False)
  assert proc.returncode == 0, proc.stderr
