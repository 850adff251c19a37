"""One run per workdir (train.lock), and a finished run left as it was."""

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from conftest import REPO, run_cli, small_config
from seqclf import config, errors, train
from seqclf.cli import common as cli_common
from seqclf.training.workdir import LOCK_NAME, WorkdirLock

# Steps and cadence small enough for a test; the rest is configs/default.py.
SHORT = {'num_train_steps': 20, 'steps_per_call': 10, 'eval_every': 20,
         'checkpoint_every': 20, 'log_every': 10, 'eval_batch_size': 5000}


def test_second_lock_refuses_naming_the_holder(tmp_path):
  with WorkdirLock(tmp_path):
    holder = json.loads((tmp_path / LOCK_NAME).read_text())
    assert holder['pid'] == os.getpid()
    with pytest.raises(errors.WorkdirError) as info:
      WorkdirLock(tmp_path).acquire()
    message = str(info.value)
    assert f'pid {os.getpid()} on {socket.gethostname()}' in message
    assert 'another workdir' in message and info.value.arg == 'workdir'
  assert not (tmp_path / LOCK_NAME).exists()  # released and removed
  with WorkdirLock(tmp_path):  # free again
    pass


def test_lock_is_released_on_error(tmp_path):
  with pytest.raises(RuntimeError):
    with WorkdirLock(tmp_path):
      raise RuntimeError('boom')
  with WorkdirLock(tmp_path):
    pass


def test_lock_of_a_killed_run_is_taken_over_with_a_note(tmp_path, capsys):
  holder = subprocess.Popen(
      [sys.executable, '-c', 'import sys, time; from seqclf.training.workdir import '
       'WorkdirLock; WorkdirLock(sys.argv[1]).acquire(); print("held", '
       'flush=True); time.sleep(120)', str(tmp_path)],
      cwd=REPO, stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == 'held'
    with pytest.raises(errors.WorkdirError, match=f'pid {holder.pid} '):
      WorkdirLock(tmp_path).acquire()
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  assert json.loads((tmp_path / LOCK_NAME).read_text())['pid'] == holder.pid
  with WorkdirLock(tmp_path):
    assert json.loads((tmp_path / LOCK_NAME).read_text())['pid'] == os.getpid()
  note = capsys.readouterr().err
  assert f'taking over {tmp_path / LOCK_NAME}' in note
  assert f'pid {holder.pid} on {socket.gethostname()}' in note


@pytest.mark.slow
def test_cli_train_refuses_a_workdir_in_use(tmp_path):
  with WorkdirLock(tmp_path):
    out = run_cli('train', '--config', 'default', '--workdir', str(tmp_path))
  assert out.returncode == 2, out.stderr
  line = out.stderr.strip()
  assert len(line.splitlines()) == 1 and 'Traceback' not in line, line
  assert f'is in use by another `seqclf train` (pid {os.getpid()} on ' in line
  assert not (tmp_path / 'checkpoints').exists()


def _snapshot(workdir):
  """Bytes and mtime of every file of a run but its checkpoints."""
  return {str(p.relative_to(workdir)): (p.read_bytes(), p.stat().st_mtime_ns)
          for p in sorted(workdir.rglob('*'))
          if p.is_file() and 'checkpoints' not in p.parts}


@pytest.mark.slow
def test_finished_run_run_again_changes_nothing(tmp_path, mnist):
  default = cli_common.load_config_file('default')
  default.update(SHORT)
  first = train.train_and_evaluate(default, tmp_path, quiet=True,
                                   datasets=mnist)
  assert not (tmp_path / LOCK_NAME).exists()
  before = _snapshot(tmp_path)
  assert {'results.json', 'metrics.jsonl'} <= set(before)
  assert any(name.startswith('tensorboard/') for name in before)

  again = train.train_and_evaluate(default, tmp_path, quiet=True,
                                   datasets=mnist)
  assert again['already_finished'] and 'already_finished' not in first
  assert {k: v for k, v in again.items() if k != 'already_finished'} == (
      json.loads((tmp_path / 'results.json').read_text()))
  assert again['train_seconds'] == first['train_seconds'] > 0
  assert _snapshot(tmp_path) == before

  # The CLI too: the saved result printed, no report written, nothing changed.
  out = run_cli('train', '--config', 'default', '--workdir', str(tmp_path),
                *(f'--config.{k}={v}' for k, v in SHORT.items()))
  assert out.returncode == 0, out.stderr
  assert 'holds a finished run of 20 steps' in out.stderr
  assert f'Test accuracy: {first["test_accuracy"]:.4f}' in out.stdout
  assert _snapshot(tmp_path) == before


def test_check_resume_refuses_model_optimizer_and_data_changes():
  saved = json.loads(json.dumps(small_config().to_dict()))
  changed = small_config(hidden_size=64, learning_rate=3e-3, seed=1,
                         num_train_steps=50, eval_every=5)
  with pytest.raises(errors.CheckpointError) as info:
    config.check_resume(saved, changed, 30, 'W/checkpoints/30')
  message = str(info.value)
  for part in ('hidden_size: checkpoint 128, now 64',
               'learning_rate: checkpoint 0.001, now 0.003',
               'seed: checkpoint 0, now 1'):
    assert part in message
  assert 'num_train_steps' not in message and 'eval_every' not in message
  accepted = small_config(num_train_steps=50, eval_every=5, impl='scan',
                          eval_batch_size=500, data_dir='/elsewhere')
  notes = config.check_resume(saved, accepted, 30, 'W/checkpoints/30')
  assert 'num_train_steps: 30 -> 50' in notes and 'eval_every: 10 -> 5' in notes
  assert len(notes) == 5
  assert config.check_resume(saved, small_config(), 30, 'W') == []
  del saved['dropout_rate']  # a key newer than the checkpoint: not compared
  assert config.check_resume(saved, small_config(dropout_rate=0.5), 30, 'W') == []


def test_check_resume_takes_moved_npz_data_by_its_digest():
  """npz data at another path (the old one gone) is the data the checkpoint
  trained on where its digest is the same; other data, or no digest, not."""
  saved = json.loads(json.dumps(small_config(
      dataset='npz:/old/d.npz', data_digest='aaaa').to_dict()))
  notes = config.check_resume(
      saved, small_config(dataset='npz:/new/d.npz', data_digest='aaaa'), 30,
      'W')
  assert notes == ["dataset: 'npz:/old/d.npz' -> 'npz:/new/d.npz'"]
  for digests in (('aaaa', 'bbbb'), ('', '')):
    saved['data_digest'] = digests[0]
    with pytest.raises(errors.CheckpointError, match='dataset: checkpoint'):
      config.check_resume(saved, small_config(
          dataset='npz:/new/d.npz', data_digest=digests[1]), 30, 'W')


def test_check_resume_takes_normalize_auto_for_what_it_resolved_to():
  stats = dict(channel_mean=(1.0, 2.0), channel_std=(3.0, 4.0))
  saved = json.loads(json.dumps(small_config(normalize='per_channel',
                                             **stats).to_dict()))
  notes = config.check_resume(saved, small_config(normalize='auto', **stats),
                              30, 'W')
  assert notes == ["normalize: 'per_channel' -> 'auto'"]
  with pytest.raises(errors.CheckpointError, match='normalize: checkpoint'):
    config.check_resume(saved, small_config(normalize='auto'), 30, 'W')
  with pytest.raises(errors.CheckpointError, match='normalize: checkpoint'):
    config.check_resume(saved, small_config(normalize='none', **stats), 30,
                        'W')
  # normalize='none' also empties the statistics it fits: normalize is named.
  with pytest.raises(errors.CheckpointError) as e:
    config.check_resume(saved, small_config(normalize='none'), 30, 'W')
  assert "data: normalize: checkpoint 'per_channel', now 'none'. " in str(
      e.value)


def test_check_resume_names_other_data_apart_from_changed_keys():
  saved = json.loads(json.dumps(small_config(data_digest='aaaa').to_dict()))
  with pytest.raises(errors.CheckpointError, match='trained on other data'):
    config.check_resume(saved, small_config(data_digest='bbbb'), 30, 'W')
  # Other data fits other statistics: still named as other data.
  with pytest.raises(errors.CheckpointError, match='trained on other data'):
    config.check_resume(saved, small_config(
        data_digest='bbbb', channel_mean=(1.0,), channel_std=(2.0,)), 30, 'W')
  with pytest.raises(errors.CheckpointError,
                     match="data_digest: checkpoint 'aaaa'.*seed: checkpoint"):
    config.check_resume(saved, small_config(data_digest='bbbb', seed=1), 30,
                        'W')
  del saved['data_digest']  # a checkpoint older than the key: not compared
  assert config.check_resume(saved, small_config(data_digest='b'), 30, 'W') == []


def test_check_resume_takes_another_path_to_the_same_npz_file(tmp_path,
                                                             monkeypatch):
  (tmp_path / 'd.npz').write_bytes(b'')
  (tmp_path / 'e.npz').write_bytes(b'')
  (tmp_path / 'link.npz').symlink_to(tmp_path / 'd.npz')
  monkeypatch.chdir(tmp_path)
  saved = json.loads(json.dumps(small_config(dataset='npz:d.npz').to_dict()))
  for same in (f'npz:{tmp_path}/d.npz', 'npz:./link.npz'):
    assert config.check_resume(saved, small_config(dataset=same), 30, 'W') == [
        f"dataset: 'npz:d.npz' -> '{same}'"]
  for other in ('npz:e.npz', 'npz:missing.npz', 'mnist'):
    with pytest.raises(errors.CheckpointError, match='dataset: checkpoint'):
      config.check_resume(saved, small_config(dataset=other), 30, 'W')


def test_check_resume_step_budget():
  saved = json.loads(json.dumps(small_config().to_dict()))
  with pytest.raises(errors.CheckpointError, match='below the step 30'):
    config.check_resume(saved, small_config(num_train_steps=20), 30, 'W')
  cosine = json.loads(json.dumps(small_config(lr_schedule='cosine').to_dict()))
  with pytest.raises(errors.CheckpointError,
                     match='num_train_steps: checkpoint 30, now 60'):
    config.check_resume(cosine, small_config(lr_schedule='cosine',
                                             num_train_steps=60), 30, 'W')


@pytest.mark.slow
def test_resume_with_changed_config(tmp_path, mnist, capsys):
  train.train_and_evaluate(small_config(num_train_steps=10), tmp_path,
                           quiet=True, datasets=mnist)
  before = _snapshot(tmp_path)
  with pytest.raises(errors.CheckpointError, match='learning_rate: checkpoint '):
    train.train_and_evaluate(small_config(learning_rate=3e-3), tmp_path,
                             quiet=True, datasets=mnist)
  assert _snapshot(tmp_path) == before
  out = run_cli('train', '--config', 'default', '--workdir', str(tmp_path),
                '--config.seed=3', '--config.num_train_steps=30')
  assert out.returncode == 2, out.stderr
  line = out.stderr.strip()
  assert len(line.splitlines()) == 1 and 'Traceback' not in line, line
  assert 'seed: checkpoint 0, now 3' in line
  assert 'input_mean: checkpoint 0.0, now 0.1307' in line  # default.py's
  assert _snapshot(tmp_path) == before
  capsys.readouterr()
  results = train.train_and_evaluate(
      small_config(eval_batch_size=2500), tmp_path, datasets=mnist)
  assert results['resumed_from_step'] == 10 and results['step'] == 30
  note = capsys.readouterr().err
  assert 'eval_batch_size: 1000 -> 2500' in note
  assert 'num_train_steps: 10 -> 30' in note


@pytest.mark.slow
def test_bad_input_on_a_fresh_workdir_leaves_no_checkpoints_or_lock(tmp_path):
  out = run_cli('train', '--config', 'default', '--workdir', str(tmp_path),
                '--config.data_dir=/nonexistent')
  assert out.returncode == 2 and 'not prepared' in out.stderr, out.stderr
  assert sorted(p.name for p in tmp_path.iterdir()) == []
