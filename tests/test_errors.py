"""Bad input is one line and exit 2; anything else is a bug with its traceback."""

import subprocess
import sys

import pytest

from conftest import REPO
from seqclf import checkpoint, config, errors, main, mnist_files
from seqclf.kernels import lstm_kernel
from seqclf.config import ConfigError, base_config, validate

SEQCLF_ERRORS = [errors.UsageError, errors.ConfigError, errors.DataError,
                 errors.CheckpointError, errors.ImageError, errors.WorkdirError]


def test_error_types_keep_their_old_bases_and_names():
  assert config.ConfigError is errors.ConfigError
  assert mnist_files.DataError is errors.DataError
  assert checkpoint.CheckpointError is errors.CheckpointError
  assert main.UsageError is errors.UsageError
  for error, old in zip(SEQCLF_ERRORS, (ValueError, ValueError, RuntimeError,
                                        RuntimeError, ValueError, OSError)):
    assert issubclass(error, errors.SeqclfError) and issubclass(error, old)


@pytest.mark.parametrize('cell', ['gru', 'elman'])
@pytest.mark.parametrize('impl', ['kernel', 'fused'])
def test_lstm_only_impls_reject_other_cells(cell, impl):
  """They would run nn.scan while results.json recorded ``impl``."""
  c = base_config()
  c.update(cell=cell, impl=impl)
  with pytest.raises(ConfigError, match=rf"impl`='{impl}' runs only the LSTM "
                     rf"cell, got cell='{cell}': use impl='scan'"):
    validate(c)
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


def _main_raising(monkeypatch, error):
  def fail(*args, **kwargs):
    raise error
  monkeypatch.setattr(main, '_report', fail)
  main.main(['seqclf', 'report'])


@pytest.mark.parametrize('error_type', [*SEQCLF_ERRORS, lstm_kernel.KernelError])
def test_seqclf_errors_are_one_line_and_exit_2(monkeypatch, capsys, error_type):
  with pytest.raises(SystemExit) as exit_:
    _main_raising(monkeypatch, error_type('Bad thing:\n  fix it.'))
  assert exit_.value.code == main.EXIT_BAD_INPUT
  assert capsys.readouterr().err == 'seqclf report: error: Bad thing: fix it.\n'


@pytest.mark.parametrize('error', [
    ValueError('boom'), OSError('boom'), FileNotFoundError('boom'),
    PermissionError('boom'), KeyError('boom'), RuntimeError('boom')])
def test_other_exceptions_are_bugs_and_propagate(monkeypatch, capsys, error):
  with pytest.raises(type(error), match='boom'):
    _main_raising(monkeypatch, error)
  assert 'error:' not in capsys.readouterr().err


UNEXPECTED = '''
import sys
from seqclf import main, report
def boom(*args, **kwargs):
  raise ValueError('an unexpected bug')
report.write_report = boom
sys.argv = ['seqclf', 'report', '--workdir', sys.argv[1]]
main.run()
'''


def test_cli_shows_a_bugs_traceback(tmp_path):
  out = subprocess.run([sys.executable, '-c', UNEXPECTED, str(tmp_path)],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
  assert out.returncode not in (0, main.EXIT_BAD_INPUT), out.stderr
  assert 'Traceback (most recent call last)' in out.stderr
  assert 'ValueError: an unexpected bug' in out.stderr
  assert 'seqclf report: error:' not in out.stderr


def test_choice_lists_come_from_the_modules_that_use_them(monkeypatch):
  """validate reads each list where it is defined: extending the module's
  list is all a new choice needs, and the message shows that list."""
  from seqclf import optim, tasks  # pylint: disable=g-import-not-at-top
  c = base_config()
  c.task = 'spiral'
  with pytest.raises(ConfigError, match=r"`task` must be one of \('row', "):
    validate(c)
  monkeypatch.setattr(tasks, 'TASKS', (*tasks.TASKS, 'spiral'))
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
