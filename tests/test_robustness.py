"""Never lose a run: signals, kills, damaged checkpoints, bad input, full disks."""

import errno
import json
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from conftest import DEFAULT_INPUT, REPO, built_once, run_cli, small_config
from seqclf import errors, inference, train
from seqclf.training import checkpoint, optim, state as state_lib

# Trainings, subprocesses, signals.
pytestmark = pytest.mark.slow

# The CLI runs start from configs/default.py: its input standardization too.
SMALL = {'hidden_size': 32, 'num_train_steps': 40, 'steps_per_call': 5,
         'checkpoint_every': 10, 'eval_every': 20, 'log_every': 5,
         **DEFAULT_INPUT}


def _small(**overrides):
  return small_config(**{**SMALL, **overrides})


def _cli_train(workdir, **overrides):
  return [sys.executable, '-m', 'seqclf', 'train', '--config',
          'configs/default.py', '--workdir', str(workdir), '--noreport',
          *(f'--config.{k}={v}' for k, v in {**SMALL, **overrides}.items())]


def _state(workdir, step=None):
  target = state_lib.create_train_state(_small(), jax.random.key(0))
  return checkpoint.restore(checkpoint.manager(workdir, create=False), target,
                            step)[0]


def _assert_same_state(a, b):
  for x, y in zip(jax.tree.leaves((a.params, a.opt_state)),
                  jax.tree.leaves((b.params, b.opt_state))):
    np.testing.assert_array_equal(x, y)


def _copy_run(trained_workdir, tmp_path):
  workdir = tmp_path / 'run'
  shutil.copytree(trained_workdir, workdir)
  return workdir


def test_sigterm_saves_exits_75_and_resumes_bitwise(tmp_path, mnist):
  reference = tmp_path / 'reference'
  train.train_and_evaluate(_small(), reference, quiet=True,
                           datasets=mnist)
  workdir = tmp_path / 'preempted'
  # One CPU device like the in-process reference: bitwise equality needs the
  # same summation order (test_sigkill_cycles_lose_nothing covers the split).
  one_device = {'cpu_devices': 1}
  proc = subprocess.Popen(_cli_train(workdir, **one_device), cwd=REPO, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
  for line in proc.stdout:  # Signal once training has visibly started.
    if line.startswith('step 5 '):
      proc.send_signal(signal.SIGTERM)
      break
  output = proc.stdout.read()
  assert proc.wait(timeout=120) == 75, output
  assert 'Stopped by SIGTERM after saving step' in output
  stopped_at = checkpoint.manager(workdir, create=False).latest_step()
  assert 0 < stopped_at < SMALL['num_train_steps']
  out = subprocess.run(_cli_train(workdir, **one_device), cwd=REPO,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr
  assert f'Resumed from {workdir}/checkpoints/{stopped_at}' in out.stdout
  _assert_same_state(_state(reference, 40), _state(workdir, 40))
  results = [json.loads((d / 'results.json').read_text())
             for d in (reference, workdir)]
  assert results[0]['test_accuracy'] == results[1]['test_accuracy']


def test_ctrl_c_says_when_it_stops_and_a_second_one_exits_130(tmp_path):
  workdir = tmp_path / 'run'
  # Long chunks: the first Ctrl-C must be answered while one runs.
  chunk = 250
  proc = subprocess.Popen(
      _cli_train(workdir, hidden_size=128, num_train_steps=10 * chunk,
                 steps_per_call=chunk, checkpoint_every=chunk,
                 log_every=chunk, eval_every=10 * chunk),
      cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
  seen = []
  for line in proc.stdout:
    seen.append(line)
    if line.startswith(f'step {chunk} '):
      break
  while not (workdir / 'checkpoints' / str(chunk)).is_dir():
    # Saved: the next chunk is running. A run that ended first fails here.
    assert proc.poll() is None, ''.join(seen) + proc.stdout.read()
    time.sleep(0.05)
  proc.send_signal(signal.SIGINT)
  for line in proc.stdout:
    seen.append(line)
    if line.startswith('Ctrl-C: '):
      proc.send_signal(signal.SIGINT)
      break
  output = ''.join(seen) + proc.stdout.read()
  assert proc.wait(timeout=120) == 130, output
  assert (f'Ctrl-C: stopping after step {2 * chunk} with a checkpoint; '
          'Ctrl-C again stops now.') in output, output
  # Answered at once, while the chunk ran: no step of it was logged before.
  assert f'step {2 * chunk} ' not in output.split('Ctrl-C: ')[0], output
  assert ('Ctrl-C again: stopping now (exit status 130); the newest complete '
          'checkpoint is kept.') in output
  assert 'Traceback' not in output
  mngr = checkpoint.manager(workdir, create=False)
  assert mngr.all_steps() == [chunk]
  target = state_lib.create_train_state(_small(hidden_size=128), jax.random.key(0))
  assert int(checkpoint.restore(mngr, target)[0].step) == chunk


def test_sigkill_cycles_lose_nothing(tmp_path, monkeypatch):
  """A short version of experiments/fault_injection.py: three kills, within
  a run half as long."""
  sys.path.insert(0, str(REPO / 'experiments'))
  import random  # pylint: disable=g-import-not-at-top

  import fault_injection  # pylint: disable=g-import-not-at-top
  monkeypatch.setitem(fault_injection.OVERRIDES, 'num_train_steps', 300)
  stats = fault_injection.run_cycles(tmp_path / 'faulty', 3,
                                     random.Random(1), max_delay=12.0)
  assert stats['checkpoints_lost_or_corrupt'] == 0, stats
  out = subprocess.run(fault_injection.command(tmp_path / 'faulty'), cwd=REPO,
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-2000:]
  ref = tmp_path / 'reference'
  subprocess.run(fault_injection.reference_command(ref), cwd=REPO, check=True,
                 capture_output=True, timeout=600)
  _assert_same_state(fault_injection.final_state(ref),
                     fault_injection.final_state(tmp_path / 'faulty'))


def _truncate_arrays(step_dir):
  for f in (step_dir / 'state').rglob('*'):
    if f.is_file() and f.stat().st_size > 0 and f.parent.name == 'd':
      f.write_bytes(f.read_bytes()[:7])  # truncated


def _delete(*parts):
  def damage(step_dir):
    for part in parts:
      target = step_dir / part
      shutil.rmtree(target) if target.is_dir() else target.unlink()
  return damage


# Each way a step can be damaged: (name, damage, the one line's reason).
DAMAGE = {
    'truncated_arrays': (_truncate_arrays, 'cannot read array '),
    'no_config_metadata': (_delete('config/metadata'),
                           'missing config/metadata'),
    'no_state_metadata': (_delete('state/_METADATA'),
                          'no state metadata (state/_METADATA)'),
    'no_state_manifest': (_delete('state/manifest.ocdbt'),
                          'cannot read array '),
    'empty_step_dir': (_delete('config', 'state'), 'missing config/'),
}


def _damage_newest(workdir, kind='truncated_arrays'):
  newest = checkpoint.manager(workdir, create=False).latest_step()
  DAMAGE[kind][0](workdir / 'checkpoints' / str(newest))
  return newest


@pytest.fixture(scope='session')
def small_run(tmp_path_factory, mnist):
  """A finished 20-step run with checkpoints at 10 and 20 (shared, read-only)."""
  return built_once(tmp_path_factory, 'small_run', lambda workdir:
                    train.train_and_evaluate(_small(num_train_steps=20),
                                             workdir, quiet=True,
                                             datasets=mnist))


@pytest.mark.parametrize('kind', DAMAGE)
def test_damaged_newest_checkpoint_is_moved_aside_and_saved_again(
    small_run, tmp_path, mnist, capsys, kind):
  workdir = _copy_run(small_run, tmp_path)
  good = _state(workdir, 10)
  assert _damage_newest(workdir, kind) == 20
  # A reader falls back, says so in one line, and moves nothing.
  _, params, _ = inference.load_model(workdir)
  for x, y in zip(jax.tree.leaves(good.params), jax.tree.leaves(params)):
    np.testing.assert_array_equal(x, y)
  line = capsys.readouterr().err.strip()
  assert len(line.splitlines()) == 1, line
  assert f'damaged checkpoint {workdir}/checkpoints/20 (' in line, line
  assert DAMAGE[kind][1] in line and f'using {workdir}/checkpoints/10' in line
  assert (workdir / 'checkpoints' / '20').is_dir()
  # Training (the finished run's final step is damaged) moves it aside,
  # resumes from step 10 and saves step 20 again.
  results = train.train_and_evaluate(_small(num_train_steps=20), workdir,
                                     quiet=True, datasets=mnist)
  assert results['resumed_from_step'] == 10 and results['step'] == 20
  line = capsys.readouterr().err.strip()
  assert len(line.splitlines()) == 1, line
  assert (f'moved to {workdir}/checkpoints/damaged/20; resuming from '
          f'{workdir}/checkpoints/10, which saves step 20 again.') in line
  assert (workdir / 'checkpoints' / 'damaged' / '20').is_dir()
  _assert_same_state(_state(workdir, 20), _state(small_run, 20))
  inference.load_model(workdir)
  assert not capsys.readouterr().err  # nothing damaged any more


def test_all_checkpoints_unreadable_is_clear_error_and_moves_nothing(
    small_run, tmp_path, mnist):
  workdir = _copy_run(small_run, tmp_path)
  for step in (20, 10):
    _truncate_arrays(workdir / 'checkpoints' / str(step))
  with pytest.raises(checkpoint.CheckpointError,
                     match='No readable checkpoint.*20: cannot read.*10: '
                     'cannot read.*Move or delete the damaged'):
    train.train_and_evaluate(_small(num_train_steps=20), workdir, quiet=True,
                             datasets=mnist)
  assert sorted(p.name for p in (workdir / 'checkpoints').iterdir()) == [
      '10', '20']


@pytest.mark.parametrize('command', ['evaluate', 'report', 'predict', 'train'])
def test_cli_falls_back_past_a_damaged_checkpoint_in_one_line(
    small_run, tmp_path, mnist, command):
  workdir = _copy_run(small_run, tmp_path)
  _damage_newest(workdir, 'no_config_metadata' if command != 'train'
                 else 'truncated_arrays')
  args = {'evaluate': ('evaluate', '--workdir', str(workdir)),
          'report': ('report', '--workdir', str(workdir)),
          'predict': ('predict', '--workdir', str(workdir),
                      str(tmp_path / 'digit.png'))}
  from PIL import Image  # pylint: disable=g-import-not-at-top
  Image.fromarray(mnist['test']['image'][0]).save(tmp_path / 'digit.png')
  if command == 'train':
    out = subprocess.run(_cli_train(workdir, num_train_steps=20), cwd=REPO,
                         capture_output=True, text=True, timeout=300)
  else:
    out = run_cli(*args[command], process=True)  # what reaches stderr at exit
  assert out.returncode == 0, out.stderr
  lines = [l for l in out.stderr.splitlines() if 'damaged' in l]
  assert len(lines) == 1 and 'TensorStore' not in out.stderr, out.stderr
  assert len(out.stderr.splitlines()) <= 2, out.stderr  # the line (+ report)
  assert f'{workdir}/checkpoints/20 (' in lines[0]


def test_empty_checkpoint_dir(tmp_path):
  (tmp_path / 'checkpoints').mkdir()
  out = run_cli('evaluate', '--workdir', str(tmp_path))
  assert out.returncode == 2 and 'No checkpoint' in out.stderr, out.stderr


def _full_disk_on_config_write(monkeypatch):
  """ENOSPC from orbax's own write of a step's config, in its commit thread,
  after it made the step's temporary directory (as a full disk does)."""
  from orbax.checkpoint._src.handlers import json_checkpoint_handler  # pylint: disable=g-import-not-at-top

  async def full_disk(self, item, directory):
    del item
    raise OSError(errno.ENOSPC, 'No space left on device',
                  str(directory / self._filename))  # pylint: disable=protected-access

  monkeypatch.setattr(json_checkpoint_handler.JsonCheckpointHandler,
                      '_save_fn', full_disk)


def test_disk_full_while_saving_is_one_error_and_keeps_previous(
    small_run, tmp_path, mnist, monkeypatch):
  workdir = _copy_run(small_run, tmp_path)
  before = _state(workdir)
  _full_disk_on_config_write(monkeypatch)
  with pytest.raises(errors.DiskFullError) as e:
    train.train_and_evaluate(_small(), workdir, quiet=True, datasets=mnist)
  monkeypatch.undo()
  assert str(e.value).startswith(
      f'No space left on the device writing checkpoint {workdir}/checkpoints/30'
      f': free space there (or use another workdir); checkpoint '
      f'{workdir}/checkpoints/20 is intact')
  assert sorted(p.name for p in (workdir / 'checkpoints').iterdir()) == [
      '10', '20']  # no *.orbax-checkpoint-tmp left behind
  _assert_same_state(_state(workdir), before)


def test_disk_full_while_logging_names_the_file(small_run, tmp_path, mnist,
                                                monkeypatch):
  from seqclf.training import metric_logging  # pylint: disable=g-import-not-at-top
  workdir = _copy_run(small_run, tmp_path)
  metrics = workdir / 'metrics.jsonl'

  def full_disk(self, *args, **kwargs):
    raise OSError(errno.ENOSPC, 'No space left on device', str(metrics))

  closed, close = [], metric_logging.MetricLogger.close

  def recorded_close(self):
    closed.append(self)
    close(self)

  monkeypatch.setattr(metric_logging.MetricLogger, 'write', full_disk)
  monkeypatch.setattr(metric_logging.MetricLogger, 'close', recorded_close)
  with pytest.raises(errors.DiskFullError, match=(
      f'^No space left on the device writing {metrics}: free space there')):
    train.train_and_evaluate(_small(), workdir, quiet=True, datasets=mnist)
  assert checkpoint.manager(workdir, create=False).all_steps() == [10, 20]
  # Closed on the error too: on Python 3.12 an open tensorboardX writer that
  # never wrote makes the interpreter's exit print a traceback.
  assert len(closed) == 1


FULL_DISK_CLI = """
import errno, sys
from orbax.checkpoint._src.handlers import json_checkpoint_handler as j
async def full_disk(self, item, directory):
  raise OSError(errno.ENOSPC, 'No space left on device', str(directory))
j.JsonCheckpointHandler._save_fn = full_disk
from seqclf.cli import main as cli_main
sys.argv = ['seqclf', *sys.argv[1:]]
cli_main.run()
"""


def test_cli_disk_full_is_one_line_exit_2(tmp_path):
  workdir = tmp_path / 'run'
  out = subprocess.run([sys.executable, '-c', FULL_DISK_CLI,
                        *_cli_train(workdir)[3:]], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 2, out.stderr
  assert out.stderr.strip() == (
      f'seqclf train: error: No space left on the device writing checkpoint '
      f'{workdir}/checkpoints/10: free space there (or use another '
      '--workdir); no checkpoint was saved yet, so run the same command '
      'again to resume.'), out.stderr
  assert not list((workdir / 'checkpoints').glob(checkpoint.TMP_GLOB))


def test_skip_nonfinite_updates_option(tmp_path, mnist):
  config = _small(num_train_steps=10, learning_rate=1e38,
                        skip_nonfinite_updates=True)
  results = train.train_and_evaluate(config, tmp_path, quiet=True,
                                     datasets=mnist)
  assert results['step'] == 10
  state = state_lib.create_train_state(config, jax.random.key(0))
  restored, _ = checkpoint.restore(checkpoint.manager(tmp_path), state)
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(restored.params))


def test_divergence_exits_3_and_keeps_checkpoint(trained_workdir, tmp_path,
                                                 mnist, monkeypatch):
  # The CLI: exit 3, and nothing saved from a run that diverged at once.
  out = run_cli('train', '--config', 'configs/default.py', '--workdir',
                str(tmp_path / 'fresh'), '--noreport',
                '--config.learning_rate=1e38', '--config.num_train_steps=20',
                '--config.steps_per_call=10', '--config.eval_every=10',
                '--config.checkpoint_every=10')
  assert out.returncode == 3, out.stderr
  assert out.stderr.strip().splitlines()[-1] == (
      'seqclf train: error: Non-finite loss by step 10; no checkpoint was '
      'saved before it. Lower learning_rate.')
  assert checkpoint.manager(tmp_path / 'fresh', create=False).all_steps() == []
  # Diverging after a resume keeps the last good checkpoint. A resume cannot
  # change learning_rate, so the optimizer's rate is raised behind its back.
  workdir = _copy_run(trained_workdir, tmp_path)
  monkeypatch.setattr(optim, 'learning_rate_schedule',
                      lambda config, peak=None: 1e38)
  config = small_config(num_train_steps=400, steps_per_call=10, eval_every=100,
                        checkpoint_every=100, **DEFAULT_INPUT)
  with pytest.raises(FloatingPointError, match=r'Non-finite loss by step 310; '
                     r'the last good checkpoint \(step 300\) in \S+ is untouched'):
    train.train_and_evaluate(config, workdir, quiet=True, datasets=mnist)
  assert checkpoint.manager(workdir, create=False).all_steps() == [300]
  inference.load_model(workdir)


@pytest.mark.parametrize('args, message', [
    (('--config.hiden_size=3',), 'Did you mean `hidden_size`'),
    (('--config.hidden_size=64',), 'different model'),
    (('--config.data_dir=/nonexistent',), 'not prepared'),
])
def test_bad_input_keeps_saved_checkpoint(trained_workdir, tmp_path, args,
                                          message):
  workdir = _copy_run(trained_workdir, tmp_path)
  before = sorted(p.name for p in (workdir / 'checkpoints').iterdir())
  out = run_cli('train', '--config', 'configs/default.py', '--workdir',
                str(workdir), '--noreport', *args)
  assert out.returncode == 2 and message in out.stderr, out.stderr
  assert 'Traceback' not in out.stderr
  assert sorted(p.name for p in (workdir / 'checkpoints').iterdir()) == before
  _, params, _ = inference.load_model(workdir)
  assert params['head']['kernel'].shape == (128, 10)


def test_unwritable_workdir(tmp_path):
  blocker = tmp_path / 'file'
  blocker.write_text('')
  out = run_cli('train', '--config', 'configs/default.py', '--workdir',
                str(blocker / 'run'))
  assert out.returncode == 2 and 'error' in out.stderr, out.stderr
  assert 'Traceback' not in out.stderr


@pytest.mark.slow
def test_a_step_a_kill_left_unfinished_is_redone_without_orbax_warning(
    tmp_path):
  """The temporary directory of a step being written when kill -9 came is
  never listed; saving that step again, orbax removes it with a warning
  that only the resume's own line should replace."""
  workdir = tmp_path / 'run'
  args = ['train', '--config', 'configs/default.py', '--workdir',
          str(workdir), '--noreport', '--quiet',
          *(f'--config.{k}={v}' for k, v in {
              **SMALL, 'hidden_size': 8, 'num_train_steps': 10}.items())]
  assert run_cli(*args).returncode == 0
  (workdir / 'results.json').unlink()
  (workdir / 'checkpoints' / '20.orbax-checkpoint-tmp').mkdir()
  out = run_cli(*args[:-1], '--config.num_train_steps=20', process=True)
  assert out.returncode == 0, out.stderr
  assert 'Attempted to create temporary directory' not in out.stderr
  assert checkpoint.manager(workdir, create=False).latest_step() == 20
