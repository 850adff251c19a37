"""A trained model from its workdir: restored without the trainer, as it was trained."""

import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import (all_from_cache, compilation_cache_events, perturbed,
                      small_config, uniform)
from seqclf import inference
from seqclf.errors import ConfigError
from seqclf.training import checkpoint, state as state_lib


@pytest.mark.gpu
@pytest.mark.slow
def test_load_model_reproduces_training_accuracy(trained_workdir, mnist):
  model, params, config = inference.load_model(trained_workdir)
  assert config.hidden_size == 128
  probs = inference.predict_probabilities(model, params,
                                          mnist['test']['image'][:2000])
  accuracy = np.mean(probs.argmax(-1) == mnist['test']['label'][:2000])
  assert accuracy >= 0.88
  np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)


def test_load_model_restores_the_params_alone_without_the_trainer(tmp_path):
  """Inference rebuilds the model and reads only the params (the optimizer
  state is left on disk): a saved state comes back bitwise."""
  config = small_config(impl='scan', hidden_size=16)
  state = state_lib.create_train_state(config, jax.random.key(3))
  mngr = checkpoint.manager(tmp_path)
  checkpoint.save(mngr, state, config)
  mngr.wait_until_finished()
  model, params, saved = inference.load_model(tmp_path)
  jax.tree.map(np.testing.assert_array_equal, params, state.params)
  assert saved.hidden_size == 16 and model.hidden_size == 16
  with pytest.raises(ConfigError, match=r"impl must be 'auto' or one of "
                     r"\('scan', 'fused', 'kernel', 'gpu'\), got 'bogus'"):
    inference.load_model(tmp_path, impl='bogus')


def test_another_checkpoint_of_a_model_predicts_with_the_same_program():
  """The parameters are an argument of the prediction program, not
  constants in it: other parameters of the same model load the program
  from the compilation cache instead of compiling their own."""
  from seqclf.nn import classifier  # pylint: disable=g-import-not-at-top
  config = small_config(hidden_size=8)
  model = classifier.from_config(config, 'scan')
  params = state_lib.create_train_state(config, jax.random.key(0),
                                        impl='scan').params
  other = perturbed(params)
  images = uniform(0, (5, 28, 28))
  probs = []
  for p in (params, other):
    with compilation_cache_events() as events:
      probs.append(inference.predict_probabilities(model, p, images))
  assert all_from_cache(events), events
  assert not np.allclose(*probs)  # other parameters, other predictions
  np.testing.assert_allclose(probs[1], jax.nn.softmax(model.apply(
      {'params': other}, images)), rtol=1e-5, atol=1e-6)


def test_modules_below_the_trainer_do_not_import_it():
  """`seqclf predict` loads models and checkpoints, not the trainer (nor
  tensorboardX); `parallel` takes its error type from `errors`."""
  code = ('import sys, seqclf.inference, seqclf.training.parallel; '
          'print(sorted(m for m in ("seqclf.train", "seqclf.sweep", '
          '"tensorboardX", "seqclf.training.metric_logging") if m in sys.modules))')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                       text=True, check=True).stdout
  assert out.strip() == '[]'
  code = ('import sys, seqclf.training.parallel; '
          'print("seqclf.config" in sys.modules)')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                       text=True, check=True).stdout
  assert out.strip() == 'False'
