"""Checkpoints in NNX: a run loads as an NNX classifier with linen's logits,
and NNX params save as a checkpoint that ``seqclf evaluate`` reads."""

import json

import jax
import numpy as np
import pytest
from flax import nnx

from conftest import run_cli, small_config
from seqclf import inference
from seqclf import nnx as seqnnx
from seqclf.config import base_config
from seqclf.errors import UsageError
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
  x = jax.random.uniform(jax.random.key(0), (3, 28, 28))
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
