"""Checkpoints in NNX: a run loads as an NNX classifier with linen's logits,
and NNX params save as a checkpoint that ``seqclf evaluate`` reads."""

import json

import jax
import numpy as np
import pytest
from flax import nnx

from conftest import run_cli, small_config, toy_series, uniform
from seqclf import inference, train
from seqclf import nnx as seqnnx
from seqclf.cli import report
from seqclf.config import base_config
from seqclf.errors import ConfigError, UsageError, WorkdirError
from seqclf.training import checkpoint, state as state_lib


def _logits(model, params, nnx_model, x):
  linen = jax.jit(lambda p, x: model.apply({'params': p}, x))(params, x)
  return linen, nnx.jit(lambda m, x: m(x))(nnx_model, x)


@pytest.mark.slow
def test_a_trained_checkpoint_gives_linens_logits_in_nnx(trained_workdir,
                                                         mnist):
  model, params, config = inference.load_model(trained_workdir)
  nnx_model, nnx_config = inference.load_nnx_model(trained_workdir)
  assert nnx_config.to_dict() == config.to_dict()
  assert nnx_model.deterministic and nnx_model.impl == model.impl
  x = mnist['test']['image'][:500].astype(np.float32) / 255.0
  linen, ours = _logits(model, params, nnx_model, x)
  np.testing.assert_array_equal(ours, linen)
  assert np.mean(np.argmax(ours, -1) == mnist['test']['label'][:500]) > 0.85


def _small_run(workdir):
  config = small_config(impl='scan', hidden_size=16)
  state = state_lib.create_train_state(config, jax.random.key(3))
  mngr = checkpoint.manager(workdir)
  checkpoint.save(mngr, state, config)
  mngr.wait_until_finished()
  return state


def _nudged(model):
  """The model with every parameter changed, as training would."""
  state = nnx.state(model, nnx.Param)
  nnx.update(model, jax.tree.map(lambda v: v * 1.01 + 0.01, state))
  return model


def test_nnx_params_save_as_the_runs_next_step(tmp_path):
  """In a run's workdir: a new step with the run's config and optimizer
  state, the NNX params; load_model reads them back bitwise."""
  state = _small_run(tmp_path)
  model, _ = inference.load_nnx_model(tmp_path, impl='scan')
  np.testing.assert_array_equal(
      seqnnx.to_linen_params(model)['head']['kernel'],
      state.params['head']['kernel'])
  _nudged(model)
  assert inference.save_nnx_model(model, tmp_path) == 1
  linen, params, config = inference.load_model(tmp_path, impl='scan')
  jax.tree.map(np.testing.assert_array_equal, params,
               seqnnx.to_linen_params(model))
  assert config.hidden_size == 16 and config.num_train_steps == 30
  restored, _ = checkpoint.restore(checkpoint.manager(tmp_path), state, 1)
  jax.tree.map(np.testing.assert_array_equal, restored.opt_state,
               state.opt_state)
  x = uniform(0, (3, 28, 28))
  np.testing.assert_array_equal(*_logits(linen, params, model, x))
  with pytest.raises(UsageError, match='already holds a run'):
    inference.save_nnx_model(model, tmp_path, config=base_config())


def test_an_nnx_model_saves_as_a_fresh_run(tmp_path):
  """In a fresh workdir: the config's data keys, the model's own keys."""
  model = seqnnx.LSTMClassifier(28, 10, hidden_size=16, input_mean=0.13,
                                rngs=nnx.Rngs(0))
  assert inference.save_nnx_model(model, tmp_path) == 0
  _, params, config = inference.load_model(tmp_path, impl='scan')
  assert (config.hidden_size, config.input_mean) == (16, 0.13)
  saved = checkpoint.saved_config(checkpoint.manager(tmp_path), 0)
  assert saved['dataset'] == 'mnist' and saved['impl'] == 'auto'
  jax.tree.map(np.testing.assert_array_equal, params,
               seqnnx.to_linen_params(model))
  with pytest.raises(WorkdirError, match='holds a model but no training '
                     r'record .*: `seqclf evaluate --workdir \S+` gives'):
    report.write_report(tmp_path)


def _monitored_run(workdir, best_step):
  """A run with monitor='val_accuracy' at step 10 as the trainer leaves it:
  its checkpoint's progress names ``best_step`` (None: no best yet), saved
  in checkpoints/best/ first."""
  config = small_config(impl='scan', hidden_size=16, monitor='val_accuracy')
  state = state_lib.create_train_state(config, jax.random.key(3))
  if best_step is not None:
    best = checkpoint.manager(workdir, best=True)
    checkpoint.save(best, state.replace(step=best_step), config)
    checkpoint.wait(best)
  progress = {'monitor': 'val_accuracy', 'best_step': best_step,
              'best_score': None if best_step is None else 0.5,
              'evaluations_without_improvement': 2}
  mngr = checkpoint.manager(workdir)
  checkpoint.save(mngr, state.replace(step=10), config, progress)
  checkpoint.wait(mngr)
  return progress


def _params_equal(workdir, model):
  _, params, _ = inference.load_model(workdir, impl='scan', quiet=True)
  jax.tree.map(np.testing.assert_array_equal, params,
               seqnnx.to_linen_params(model))


def test_a_run_served_by_its_best_checkpoint_refuses_a_saved_step(tmp_path):
  """Readers take the best checkpoint, never a newer step: saving one would
  serve another model than the one saved. The fix the error names (a new
  workdir with the run's config) serves it."""
  _monitored_run(tmp_path / 'run', best_step=10)
  model, config = inference.load_nnx_model(tmp_path / 'run', impl='scan',
                                           quiet=True)
  _nudged(model)
  with pytest.raises(UsageError, match='best checkpoint .* new workdir'):
    inference.save_nnx_model(model, tmp_path / 'run')
  assert checkpoint.manager(tmp_path / 'run').all_steps() == [10]
  assert inference.save_nnx_model(model, tmp_path / 'new', config=config) == 0
  _params_equal(tmp_path / 'new', model)


@pytest.mark.slow
def test_a_trained_monitored_run_is_left_as_it_is(tmp_path):
  """A run `seqclf train` left with a best checkpoint: the save is refused
  and the run unchanged; the saved model is served from a new workdir."""
  x, y = toy_series(200, 0, steps=6, features=2, classes=3)
  np.savez(tmp_path / 'd.npz', x=x, y=y)
  config = small_config(dataset=f'npz:{tmp_path}/d.npz', num_classes=3,
                        hidden_size=8, batch_size=20, eval_batch_size=50,
                        impl='scan', monitor='val_macro_f1')
  train.train_and_evaluate(config, tmp_path / 'run', quiet=True)
  steps = checkpoint.manager(tmp_path / 'run').all_steps()
  model, saved = inference.load_nnx_model(tmp_path / 'run', impl='scan')
  with pytest.raises(UsageError, match='best checkpoint'):
    inference.save_nnx_model(_nudged(model), tmp_path / 'run')
  assert checkpoint.manager(tmp_path / 'run').all_steps() == steps
  inference.save_nnx_model(model, tmp_path / 'new', config=saved)
  _params_equal(tmp_path / 'new', model)


def test_a_monitored_run_without_a_best_keeps_its_progress(tmp_path):
  """Before its first best, a monitored run serves its newest step: the
  saved one, carrying the progress a resume continues from."""
  progress = _monitored_run(tmp_path, best_step=None)
  model, _ = inference.load_nnx_model(tmp_path, impl='scan', quiet=True)
  assert inference.save_nnx_model(_nudged(model), tmp_path) == 11
  _params_equal(tmp_path, model)
  mngr = checkpoint.manager(tmp_path)
  assert checkpoint.saved_progress(mngr, 11) == progress


def test_a_step_readers_would_pass_over_is_refused(tmp_path):
  _monitored_run(tmp_path, best_step=None)
  model, _ = inference.load_nnx_model(tmp_path, impl='scan', quiet=True)
  for step in (5, 10):
    with pytest.raises(UsageError, match='newest step.*>= 11'):
      inference.save_nnx_model(model, tmp_path, step=step)
  assert checkpoint.manager(tmp_path).all_steps() == [10]
  assert inference.save_nnx_model(model, tmp_path, step=12) == 12
  # A model of other shapes: the fix is another workdir, not config=.
  wider = seqnnx.LSTMClassifier(28, 10, hidden_size=32, rngs=nnx.Rngs(0))
  with pytest.raises(UsageError, match=(
      rf'^{tmp_path} holds a run of another model \(head.kernel: checkpoint '
      r'\(16, 10\) vs model \(32, 10\); .*\): save this one into a fresh '
      'workdir, with config= for the data it reads.$')):
    inference.save_nnx_model(wider, tmp_path)
  assert checkpoint.manager(tmp_path).all_steps() == [10, 12]


def _series_model(features=3, classes=3, **options):
  return seqnnx.LSTMClassifier(
      features, classes, hidden_size=16, missing='impute',
      channel_mean=(1000.0,) + (0.0,) * (features - 1),
      channel_std=(50.0,) + (1.0,) * (features - 1), rngs=nnx.Rngs(0),
      **options)


def test_a_model_the_default_config_does_not_describe_is_refused(tmp_path):
  """A series model saved with MNIST's config would be a run no reader can
  run: refused, naming config= and each difference, nothing written."""
  message = ('default config.*input features: model 3, data 28; classes: '
             'model 3, config num_classes=10; channel statistics: model 3, '
             'data 28 features: pass config=')
  with pytest.raises(ConfigError, match=message):
    inference.save_nnx_model(_series_model(), tmp_path / 'fresh')
  assert not (tmp_path / 'fresh').exists()


def test_a_model_saves_with_a_config_of_its_data(tmp_path):
  """With config= describing its data, it saves and loads back; a config
  of other data, or one the trainer would refuse, is refused."""
  model = _series_model()
  config = base_config()
  config.update(dataset=f'npz:{tmp_path}/d.npz', num_classes=3,
                normalize='per_channel')
  other = base_config()
  other.update(config.to_dict())
  other.update(num_classes=4, channel_mean=(0.0,) * 6,
               channel_std=(1.0,) * 6)
  with pytest.raises(ConfigError, match='input features: model 3, data 6; '
                     'classes: model 3, config num_classes=4'):
    inference.save_nnx_model(model, tmp_path / 'run', config=other)
  config.normalize = 'none'
  with pytest.raises(ConfigError, match="normalize='none'.*config="):
    inference.save_nnx_model(model, tmp_path / 'run', config=config)
  config.normalize = 'per_channel'
  assert inference.save_nnx_model(model, tmp_path / 'run', config=config) == 0
  _params_equal(tmp_path / 'run', model)
  loaded, saved = inference.load_nnx_model(tmp_path / 'run', quiet=True,
                                           impl=model.impl)
  assert loaded.in_features == 3 and saved.channel_mean == (1000.0, 0.0, 0.0)
  x = np.full((2, 5, 3), 1000.0, np.float32)
  model.eval()
  np.testing.assert_array_equal(loaded(x), model(x))


def test_a_model_of_other_data_than_the_runs_is_refused(tmp_path):
  _small_run(tmp_path)
  with pytest.raises(ConfigError, match=f'run in {tmp_path}: input features: '
                     'model 3, data 28; classes: model 3, config '
                     'num_classes=10'):
    inference.save_nnx_model(_series_model(), tmp_path)
  assert checkpoint.manager(tmp_path).all_steps() == [0]


@pytest.mark.slow
def test_seqclf_evaluate_reads_saved_nnx_params(trained_workdir, tmp_path):
  """`seqclf evaluate` on NNX params saved to a fresh workdir gives the
  trained run's metrics: the same params, the same config."""
  model, config = inference.load_nnx_model(trained_workdir)
  inference.save_nnx_model(model, tmp_path / 'nnx', config=config)
  done = run_cli('evaluate', '--workdir', str(tmp_path / 'nnx'))
  assert done.returncode == 0, done.stderr
  ours = json.loads(done.stdout)
  theirs = inference.evaluate(trained_workdir)
  for split in ('validation', 'test'):
    assert ours[split]['count'] == theirs[split]['count']
    assert ours[split]['accuracy'] == pytest.approx(
        theirs[split]['accuracy'], abs=1e-4)
