"""Checkpoints: restore for inference, orbax-only restore, foreign-model errors."""

import json
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import REPO, small_config
from seqclf import checkpoint, inference, train


def _readme_recipe() -> str:
  """The orbax-only restore recipe, exactly as the README shows it."""
  readme = (REPO / 'README.md').read_text()
  block = re.search(r'Restore with orbax alone.*?```python\n(.*?)```', readme,
                    re.S)
  assert block, 'README lost its orbax-only restore recipe'
  return block.group(1)


@pytest.mark.slow
def test_load_model_reproduces_training_accuracy(trained_workdir, mnist):
  model, params, config = inference.load_model(trained_workdir)
  assert config.hidden_size == 128
  probs = inference.predict_probabilities(model, params,
                                          mnist['test']['image'][:2000])
  accuracy = np.mean(probs.argmax(-1) == mnist['test']['label'][:2000])
  assert accuracy >= 0.88
  np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)


@pytest.mark.slow
def test_orbax_only_restore_matches_flax_model(trained_workdir, mnist,
                                               tmp_path):
  images = mnist['test']['image'][:64].astype(np.float32) / 255.0
  np.save(tmp_path / 'images.npy', images)
  script = _readme_recipe().replace(
      "'runs/default/checkpoints/1000'",
      repr(str(trained_workdir / 'checkpoints' / '300')))
  script += (
      '\nimport sys\n'
      f"logits = classify(np.load({str(tmp_path / 'images.npy')!r}))\n"
      "assert not any(m.startswith('seqclf') for m in sys.modules), 'imported'\n"
      f"np.save({str(tmp_path / 'logits.npy')!r}, logits)\n")
  out = subprocess.run([sys.executable, '-c', script], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  model, params, _ = inference.load_model(trained_workdir)
  expected = model.apply({'params': params}, images)
  np.testing.assert_allclose(np.load(tmp_path / 'logits.npy'), expected,
                             rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_restore_into_other_model_names_shapes(trained_workdir):
  other = train.create_train_state(small_config(hidden_size=64),
                                   jax.random.key(0))
  with pytest.raises(checkpoint.CheckpointError) as e:
    checkpoint.restore(checkpoint.manager(trained_workdir, create=False), other)
  assert 'lstm_0.cell.hidden.kernel: checkpoint (128, 512) vs model (64, 256)' \
      in str(e.value)


@pytest.mark.slow
def test_training_on_foreign_checkpoint_fails_and_keeps_it(trained_workdir,
                                                           tmp_path, mnist):
  import shutil
  workdir = tmp_path / 'w'
  shutil.copytree(trained_workdir, workdir)
  before = sorted(p.name for p in (workdir / 'checkpoints').iterdir())
  with pytest.raises(checkpoint.CheckpointError, match='different model'):
    train.train_and_evaluate(small_config(num_layers=2), workdir, quiet=True,
                             datasets=mnist)
  assert sorted(p.name for p in (workdir / 'checkpoints').iterdir()) == before
  model, params, _ = inference.load_model(workdir)  # still restores
  assert params['head']['kernel'].shape == (128, 10)


def test_no_checkpoint_is_a_clear_error(tmp_path):
  with pytest.raises(checkpoint.CheckpointError, match='No checkpoint'):
    inference.load_model(tmp_path)


@pytest.mark.slow
def test_saved_config_is_json(trained_workdir):
  saved = json.loads(
      (trained_workdir / 'checkpoints' / '300' / 'config' / 'metadata')
      .read_text())
  assert saved['hidden_size'] == 128 and saved['forget_bias'] == 1.0


def test_load_model_restores_the_params_alone_without_the_trainer(tmp_path):
  """Inference rebuilds the model and reads only the params (the optimizer
  state is left on disk): a saved state comes back bitwise."""
  config = small_config(impl='scan', hidden_size=16)
  state = train.create_train_state(config, jax.random.key(3))
  mngr = checkpoint.manager(tmp_path)
  checkpoint.save(mngr, state, config)
  mngr.wait_until_finished()
  model, params, saved = inference.load_model(tmp_path)
  jax.tree.map(np.testing.assert_array_equal, params, state.params)
  assert saved.hidden_size == 16 and model.hidden_size == 16


def test_modules_below_the_trainer_do_not_import_it():
  """`seqclf predict` loads models and checkpoints, not the trainer (nor
  tensorboardX); `parallel` takes its error type from `errors`."""
  code = ('import sys, seqclf.inference, seqclf.parallel; '
          'print(sorted(m for m in ("seqclf.train", "seqclf.sweep", '
          '"tensorboardX", "seqclf.metric_logging") if m in sys.modules))')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                       text=True, check=True).stdout
  assert out.strip() == '[]'
  code = ('import sys, seqclf.parallel; '
          'print("seqclf.config" in sys.modules)')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                       text=True, check=True).stdout
  assert out.strip() == 'False'
