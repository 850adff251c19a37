"""monitor/patience: the best checkpoint is kept, read by inference, resumed
exactly; early stopping; class weights in a run."""

import json
import shutil

import jax
import numpy as np
import pytest

from conftest import run_cli, small_config, tensorboard_values, toy_series
from seqclf import export, inference, train
from seqclf import nnx as seqnnx
from seqclf.errors import CheckpointError
from seqclf.training import best as best_lib, checkpoint, state as state_lib


def _series(n, seed):
  return toy_series(n, seed, steps=6, features=2, classes=3)


@pytest.fixture(scope='module')
def npz(tmp_path_factory):
  x, y = _series(200, 0)
  path = tmp_path_factory.mktemp('best') / 'd.npz'
  np.savez(path, x=x, y=y)
  return f'npz:{path}'


def _config(npz, **overrides):
  return small_config(**{**dict(
      dataset=npz, num_classes=3, hidden_size=8, batch_size=20,
      eval_batch_size=50, impl='scan', max_to_keep=2), **overrides})


def _leaves(workdir, step=None, best=False):
  target = state_lib.create_train_state(_config('npz:x'), jax.random.key(0),
                                        sequence_shape=(6, 2))
  mngr = checkpoint.manager(workdir, best=best)
  return jax.tree.leaves(checkpoint.restore(mngr, target, step)[0])


def _same(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)  # bitwise


@pytest.fixture
def scripted(monkeypatch):
  """Replaces the monitored validation accuracy with SCORES[step]."""
  scores = {}
  real = best_lib.Best.update

  def update(self, step, val, state, config):
    return real(self, step, {**val, 'accuracy': scores[step]}, state, config)

  monkeypatch.setattr(best_lib.Best, 'update', update)
  return scores


@pytest.mark.slow
def test_best_kept_while_newer_rotate_early_stop_and_inference(
    npz, tmp_path, scripted, capsys):
  scripted.update({10: 0.5, 20: 0.7, 30: 0.6, 40: 0.65, 50: 0.69, 60: 0.9})
  config = _config(npz, num_train_steps=60, monitor='val_accuracy',
                   patience=3)
  results = train.train_and_evaluate(config, tmp_path, quiet=True)
  # Stopped at 50 (30, 40, 50 no better than 20); 20 survives rotation.
  assert results['stopped_early'] and results['step'] == 50
  assert (results['best_step'], results['best_score']) == (20, 0.7)
  assert sorted(checkpoint.manager(tmp_path).all_steps()) == [40, 50]
  assert checkpoint.manager(tmp_path, best=True).all_steps() == [20]
  assert results['last_test_loss'] != results['test_loss']
  for key in ('macro_f1', 'balanced_accuracy', 'accuracy', 'loss'):
    assert f'test_{key}' in results and f'last_val_{key}' in results
  assert len(results['test']['f1']) == 3
  saved = json.loads((tmp_path / 'results.json').read_text())
  assert saved['best_step'] == 20
  # The test result is logged at the step of the parameters it scores.
  records = [json.loads(line) for line in
             (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  assert [r['step'] for r in records if r['kind'] == 'test'] == [20]
  assert {step for tag, step, _, _ in tensorboard_values(
      tmp_path / 'tensorboard') if tag.startswith('test/')} == {20}
  # A rerun is a finished run; a longer patience trains on.
  again = train.train_and_evaluate(config, tmp_path)
  assert again['already_finished'] and again['test_loss'] == results[
      'test_loss']
  assert 'raise config key `patience`' in capsys.readouterr().err
  # Inference reads the best checkpoint, says so; step= picks another.
  _, params, _ = inference.load_model(tmp_path)
  assert 'best checkpoint' in capsys.readouterr().err
  best = _leaves(tmp_path, 20, best=True)
  _same(jax.tree.leaves(params), best[1:1 + len(jax.tree.leaves(params))])
  _, params50, _ = inference.load_model(tmp_path, step=50, quiet=True)
  assert not np.array_equal(jax.tree.leaves(params50)[0],
                            jax.tree.leaves(params)[0])
  evaluated = inference.evaluate(tmp_path, quiet=True)
  assert evaluated['test']['loss'] == pytest.approx(results['test_loss'])
  assert evaluated['test']['macro_f1'] == results['test_macro_f1']
  assert inference.evaluate(tmp_path, ('test',), step=50, quiet=True)[
      'test']['loss'] == pytest.approx(results['last_test_loss'])
  nnx_model, _ = inference.load_nnx_model(tmp_path, quiet=True)
  assert np.array_equal(seqnnx.to_linen_params(nnx_model)['head']['kernel'],
                        params['head']['kernel'])
  meta = export.export_model(tmp_path, tmp_path / 'served')
  assert meta['checkpoint'].endswith('best/20')
  with pytest.raises(CheckpointError, match='use one of 20, 40, 50'):
    inference.load_model(tmp_path, step=7)
  out = run_cli('evaluate', f'--workdir={tmp_path}', '--step=50')
  shown = json.loads(out.stdout)
  assert shown['checkpoint'].endswith('checkpoints/50'), out.stderr
  assert shown['test']['loss'] == pytest.approx(results['last_test_loss'])
  # The best checkpoint deleted: the latest is read, not without a word.
  shutil.rmtree(tmp_path / 'checkpoints' / 'best')
  capsys.readouterr()
  inference.load_model(tmp_path, quiet=True)
  assert capsys.readouterr().err == (
      f'warning: {tmp_path}/checkpoints/50 names best step 20, which '
      f'{tmp_path}/checkpoints/best lacks: using the latest checkpoint, step '
      '50, instead (restore the best one there to use it).\n')
  # Said once, though both commands also name the checkpoint they read.
  for args in (['evaluate'], ['export', f'--out={tmp_path / "served2"}']):
    out = run_cli(*args, f'--workdir={tmp_path}')
    assert out.returncode == 0, out.stderr
    assert out.stderr.count('names best step 20') == 1, out.stderr


@pytest.mark.slow
def test_kill_and_resume_with_a_best_checkpoint_equals_uninterrupted(
    npz, tmp_path):
  config = _config(npz, num_train_steps=60, monitor='val_loss',
                   class_weight='balanced', learning_rate=0.02)
  full = train.train_and_evaluate(config, tmp_path / 'full', quiet=True)
  # Interrupted at 40 as a kill -9 after best/40 but before checkpoint 40
  # was complete leaves it: checkpoint 40 absent, best/ ahead of it.
  part = tmp_path / 'part'
  train.train_and_evaluate(_config(npz, num_train_steps=40, monitor='val_loss',
                                   class_weight='balanced',
                                   learning_rate=0.02), part, quiet=True)
  best_then = checkpoint.manager(part, best=True).all_steps()
  shutil.rmtree(part / 'checkpoints' / '40')
  (part / 'results.json').unlink()
  resumed = train.train_and_evaluate(config, part, quiet=True)
  assert resumed['resumed_from_step'] == 30
  for key in ('best_step', 'best_score', 'test_loss', 'test_macro_f1',
              'last_test_loss', 'evaluations_without_improvement'):
    assert resumed[key] == full[key], key
  assert full['best_step'] < 60 or best_then  # the test exercises a best
  _same(_leaves(tmp_path / 'full'), _leaves(part))
  steps = checkpoint.manager(tmp_path / 'full', best=True).all_steps()
  assert steps == checkpoint.manager(part, best=True).all_steps()
  assert full['best_step'] in steps  # (and those checkpoints 50, 60 name)
  for step in steps:
    _same(_leaves(tmp_path / 'full', step, best=True),
          _leaves(part, step, best=True))
  assert 'weighted_loss' in (tmp_path / 'full' / 'metrics.jsonl').read_text()
  # TensorBoard holds each step once, as the uninterrupted run's (the same
  # values but for the speed).
  def board(workdir):
    return sorted((tag, step, 0 if tag.endswith('per_second') else value)
                  for tag, step, _, value in tensorboard_values(
                      workdir / 'tensorboard'))
  assert board(part) == board(tmp_path / 'full')


def test_patience_running_out_at_the_last_step_is_no_early_stop(
    npz, tmp_path, scripted, capsys):
  scripted.update({10: 0.5, 20: 0.4, 30: 0.3})
  results = train.train_and_evaluate(
      _config(npz, num_train_steps=30, monitor='val_accuracy', patience=2),
      tmp_path)
  assert results['evaluations_without_improvement'] == 2
  assert not results['stopped_early'] and results['best_step'] == 10
  shown = capsys.readouterr()
  assert 'stopping early' not in shown.out + shown.err


def test_class_weight_change_on_resume_is_refused(npz, tmp_path):
  train.train_and_evaluate(_config(npz, num_train_steps=10), tmp_path,
                           quiet=True)
  with pytest.raises(CheckpointError, match="class_weight: checkpoint 'none'"):
    train.train_and_evaluate(_config(npz, num_train_steps=20,
                                     class_weight=[1.0, 2.0, 3.0]),
                             tmp_path, quiet=True)


def test_cli_bad_monitor_and_class_weight_are_one_line(tmp_path):
  out = run_cli('train', '--config', 'default', '--config.monitor=val_f1',
                f'--workdir={tmp_path}/a')
  assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
  assert '`monitor` must be one of' in out.stderr
  out = run_cli('train', '--config', 'default',
                '--config.class_weight=[1,2]', f'--workdir={tmp_path}/b')
  assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
  assert 'give one per class (num_classes=10)' in out.stderr
  assert not (tmp_path / 'a').exists() and not (tmp_path / 'b').exists()
