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
import orbax.checkpoint as ocp
import pytest

from conftest import DEFAULT_INPUT, REPO, run_cli, small_config
from seqclf import checkpoint, inference, optim, train

# Trainings, subprocesses, signals.
pytestmark = pytest.mark.slow

# The CLI runs start from configs/default.py: its input standardization too.
SMALL = {'hidden_size': 32, 'num_train_steps': 40, 'steps_per_call': 5,
         'checkpoint_every': 10, 'eval_every': 20, 'log_every': 5,
         **DEFAULT_INPUT}


def _small(**overrides):
  return small_config(**{**SMALL, **overrides})


def _cli_train(workdir, **overrides):
  return [sys.executable, '-m', 'seqclf.main', 'train', '--config',
          'configs/default.py', '--workdir', str(workdir), '--noreport',
          *(f'--config.{k}={v}' for k, v in {**SMALL, **overrides}.items())]


def _state(workdir, step=None):
  target = train.create_train_state(_small(), jax.random.key(0))
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


def test_sigkill_cycles_lose_nothing(tmp_path):
  """A short version of experiments/fault_injection.py."""
  sys.path.insert(0, str(REPO / 'experiments'))
  import fault_injection  # pylint: disable=g-import-not-at-top
  import random  # pylint: disable=g-import-not-at-top
  stats = fault_injection.run_cycles(tmp_path / 'faulty', 3,
                                     random.Random(1), max_delay=14.0)
  assert stats['checkpoints_lost_or_corrupt'] == 0, stats
  out = subprocess.run(fault_injection.command(tmp_path / 'faulty'), cwd=REPO,
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-2000:]
  ref = tmp_path / 'reference'
  subprocess.run(fault_injection.command(ref), cwd=REPO, check=True,
                 capture_output=True, timeout=600)
  _assert_same_state(fault_injection.final_state(ref),
                     fault_injection.final_state(tmp_path / 'faulty'))


def _damage_newest(workdir):
  mngr = checkpoint.manager(workdir, create=False)
  newest = mngr.latest_step()
  for f in (workdir / 'checkpoints' / str(newest) / 'state').rglob('*'):
    if f.is_file() and f.stat().st_size > 0:
      f.write_bytes(b'\0' * 7)  # truncated/garbled
  return newest


def test_unreadable_newest_checkpoint_falls_back(tmp_path, mnist, caplog):
  workdir = tmp_path / 'run'
  train.train_and_evaluate(_small(num_train_steps=20), workdir,
                           quiet=True, datasets=mnist)
  good = _state(workdir, 10)
  newest = _damage_newest(workdir)
  assert newest == 20
  with caplog.at_level('WARNING'):
    restored = _state(workdir)
  assert int(restored.step) == 10
  _assert_same_state(restored, good)
  assert f'checkpoints/{newest} is unreadable' in caplog.text
  # Training on it resumes from step 10 and finishes.
  results = train.train_and_evaluate(_small(), workdir,
                                     quiet=True, datasets=mnist)
  assert results['resumed_from_step'] == 10 and results['step'] == 40


def test_all_checkpoints_unreadable_is_clear_error(tmp_path, mnist):
  workdir = tmp_path / 'run'
  train.train_and_evaluate(_small(num_train_steps=10), workdir,
                           quiet=True, datasets=mnist)
  _damage_newest(workdir)
  with pytest.raises(checkpoint.CheckpointError,
                     match='No readable checkpoint.*Delete the damaged'):
    _state(workdir)


def test_empty_checkpoint_dir(tmp_path):
  (tmp_path / 'checkpoints').mkdir()
  out = run_cli('evaluate', '--workdir', str(tmp_path))
  assert out.returncode == 2 and 'No checkpoint' in out.stderr, out.stderr


def test_disk_full_while_saving_keeps_previous(tmp_path, mnist, monkeypatch):
  workdir = tmp_path / 'run'
  train.train_and_evaluate(_small(num_train_steps=10), workdir,
                           quiet=True, datasets=mnist)
  before = _state(workdir)

  def full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, 'No space left on device')

  monkeypatch.setattr(ocp.CheckpointManager, 'save', full_disk)
  with pytest.raises(OSError, match='No space left'):
    train.train_and_evaluate(_small(), workdir, quiet=True,
                             datasets=mnist)
  monkeypatch.undo()
  assert checkpoint.manager(workdir, create=False).all_steps() == [10]
  _assert_same_state(_state(workdir), before)


def test_skip_nonfinite_updates_option(tmp_path, mnist):
  config = _small(num_train_steps=10, learning_rate=1e38,
                        skip_nonfinite_updates=True)
  results = train.train_and_evaluate(config, tmp_path, quiet=True,
                                     datasets=mnist)
  assert results['step'] == 10
  state = train.create_train_state(config, jax.random.key(0))
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
  assert 'Non-finite loss by step 10' in out.stderr
  assert checkpoint.manager(tmp_path / 'fresh', create=False).all_steps() == []
  # Diverging after a resume keeps the last good checkpoint. A resume cannot
  # change learning_rate, so the optimizer's rate is raised behind its back.
  workdir = _copy_run(trained_workdir, tmp_path)
  monkeypatch.setattr(optim, 'learning_rate_schedule',
                      lambda config, peak=None: 1e38)
  config = small_config(num_train_steps=400, steps_per_call=10, eval_every=100,
                        checkpoint_every=100, **DEFAULT_INPUT)
  with pytest.raises(FloatingPointError, match='Non-finite loss by step 310'):
    train.train_and_evaluate(config, workdir, quiet=True, datasets=mnist)
  assert checkpoint.manager(workdir, create=False).all_steps() == [300]
  inference.load_model(workdir)


@pytest.mark.parametrize('args, message', [
    (('--config.hiden_size=3',), 'Did you mean "hidden_size"'),
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
