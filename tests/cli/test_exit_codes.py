"""The command line's errors: bad input is one line and exit 2; anything else is a bug with its traceback."""

import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO
from seqclf import errors
from seqclf.cli import main as cli_main, report
from seqclf.kernels import lstm_kernel

SEQCLF_ERRORS = [errors.UsageError, errors.ConfigError, errors.DataError,
                 errors.CheckpointError, errors.ImageError, errors.WorkdirError]


def _main_raising(monkeypatch, error):
  def fail(*args, **kwargs):
    raise error
  monkeypatch.setattr(report, 'write_and_say', fail)
  cli_main.run(['seqclf', 'report', '--workdir', 'unused'])


@pytest.mark.parametrize('error_type', [*SEQCLF_ERRORS, lstm_kernel.KernelError])
def test_seqclf_errors_are_one_line_and_exit_2(monkeypatch, capsys, error_type):
  with pytest.raises(SystemExit) as exit_:
    _main_raising(monkeypatch, error_type('Bad thing:\n  fix it.'))
  assert exit_.value.code == cli_main.EXIT_BAD_INPUT
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
from seqclf.cli import main as cli_main
from seqclf.cli import report
from seqclf.cli import report
def boom(*args, **kwargs):
  raise ValueError('an unexpected bug')
report.write_report = boom
sys.argv = ['seqclf', 'report', '--workdir', sys.argv[1]]
cli_main.run()
'''


def test_cli_shows_a_bugs_traceback(tmp_path):
  out = subprocess.run([sys.executable, '-c', UNEXPECTED, str(tmp_path)],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
  assert out.returncode not in (0, cli_main.EXIT_BAD_INPUT), out.stderr
  assert 'Traceback (most recent call last)' in out.stderr
  assert 'ValueError: an unexpected bug' in out.stderr
  assert 'seqclf report: error:' not in out.stderr


def test_ctrl_c_outside_training_is_one_line_and_exit_130(monkeypatch,
                                                         capsys):
  """Ctrl-C while a command loads data or evaluates (no StopRequest there)
  is 128 + SIGINT with one line, not a KeyboardInterrupt traceback."""
  with pytest.raises(SystemExit) as exit_:
    _main_raising(monkeypatch, KeyboardInterrupt())
  assert exit_.value.code == 130
  assert capsys.readouterr().err == (
      '\nseqclf report: stopped by Ctrl-C (exit status 130).\n')


def test_ctrl_c_while_the_command_line_loads_is_one_line_and_exit_130(
    tmp_path):
  """Ctrl-C while JAX loads: a KeyboardInterrupt there comes out as an
  ImportError traceback or aborts the process, so it is answered at once."""
  # Started as a foreground job is, taking Ctrl-C: a test runner started in
  # the background passes SIGINT on ignored, and seqclf leaves it so.
  foreground = ('import runpy, signal; '
                'signal.signal(signal.SIGINT, signal.SIG_DFL); '
                "runpy.run_module('seqclf', run_name='__main__')")
  proc = subprocess.Popen(
      [sys.executable, '-c', foreground, 'train', '--config=default',
       f'--workdir={tmp_path / "run"}'], cwd=REPO, text=True,
      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  time.sleep(0.3)  # Python has started; JAX takes a second to load.
  proc.send_signal(signal.SIGINT)
  out, err = proc.communicate(timeout=60)
  assert proc.returncode == 130, err
  assert err in ('\nseqclf: stopped by Ctrl-C (exit status 130).\n',
                 '\nseqclf train: stopped by Ctrl-C (exit status 130).\n'), err
  assert out == '' and not (tmp_path / 'run').exists()
