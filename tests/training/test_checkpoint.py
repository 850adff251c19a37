"""Checkpoints: orbax-only restore, foreign-model errors, the saved config,
and checkpoints of earlier versions."""

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from conftest import REPO, small_config
from seqclf import inference, train
from seqclf.training import checkpoint, state as state_lib


def _readme_recipe() -> str:
  """The orbax-only restore recipe, exactly as the README shows it."""
  readme = (REPO / 'README.md').read_text()
  block = re.search(r'Restore with orbax alone.*?```python\n(.*?)```', readme,
                    re.S)
  assert block, 'README lost its orbax-only restore recipe'
  return block.group(1)


def _recipe_run_beside(ckpt: Path, where: Path) -> str:
  """The recipe, to run with ``cwd=where`` unchanged: its relative path
  ``runs/default/checkpoints/1000`` made a link to ``ckpt``."""
  link = where / 'runs' / 'default' / 'checkpoints' / '1000'
  link.parent.mkdir(parents=True)
  link.symlink_to(ckpt)
  return _readme_recipe()


@pytest.mark.gpu
@pytest.mark.slow
def test_orbax_only_restore_matches_flax_model(trained_workdir, mnist,
                                               tmp_path):
  images = mnist['test']['image'][:64].astype(np.float32) / 255.0
  np.save(tmp_path / 'images.npy', images)
  script = _recipe_run_beside(trained_workdir / 'checkpoints' / '300',
                             tmp_path)
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
  other = state_lib.create_train_state(small_config(hidden_size=64),
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


FIXTURE = Path(__file__).resolve().parents[1] / 'fixtures' / 'v0_1_0_run'


def _fixture_module():
  spec = importlib.util.spec_from_file_location('make_fixture',
                                                FIXTURE / 'make_fixture.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.gpu
def test_a_v0_1_0_checkpoint_restores_and_resumes_to_its_own_result(
    tmp_path):
  """A run written by seqclf 0.1.0 (before the subpackages) loads for
  inference, and resumed from its step 2 trains to its own step 4, to float
  rounding: bitwise would need the jax and the CPU it was written on (XLA
  compiles for the host's vector instructions: an AVX2 CPU rounds otherwise
  than an AVX-512 one). Resumes are bitwise on one machine
  (test_sigterm_saves_exits_75_and_resumes_bitwise and others)."""
  fixture = _fixture_module()
  workdir = tmp_path / 'run'
  shutil.copytree(FIXTURE, workdir)
  model, params, config = inference.load_model(workdir)
  assert config.hidden_size == 16 and model.impl in ('kernel', 'fused', 'scan')
  saved = checkpoint.restore_params(checkpoint.manager(workdir, create=False),
                                    params, step=4)
  shutil.rmtree(workdir / 'checkpoints' / '4')
  (workdir / 'results.json').unlink()
  results = train.train_and_evaluate(fixture.config(), workdir, quiet=True,
                                     datasets=fixture.data())
  assert results['resumed_from_step'] == 2 and results['step'] == 4
  _, resumed, _ = inference.load_model(workdir)
  for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(saved)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_a_checkpoint_saved_on_another_backend_restores_here(tmp_path):
  """Checkpoints record each array's device (`cuda:0` for one saved on a
  GPU); restores always give orbax this process's target shardings, so a
  GPU's checkpoint loads and resumes on a CPU (and the CPU fixture above
  on a GPU, in the GPU tier)."""
  fixture = _fixture_module()
  workdir = tmp_path / 'run'
  shutil.copytree(FIXTURE, workdir)
  here = jax.devices()[0]
  elsewhere = 'cuda:0' if here.platform == 'cpu' else 'cpu:0'
  for sharding in workdir.glob('checkpoints/*/state/_sharding'):
    text = sharding.read_text()
    assert '\\"device_str\\": \\"cpu:0\\"' in text
    sharding.write_text(text.replace('cpu:0', elsewhere))
  _, params, _ = inference.load_model(workdir)
  assert jax.tree.leaves(params)[0].devices() == {here}
  (workdir / 'results.json').unlink()
  config = fixture.config()
  config.num_train_steps = 6
  results = train.train_and_evaluate(config, workdir, quiet=True,
                                     datasets=fixture.data())
  assert results['resumed_from_step'] == 4 and results['step'] == 6


@pytest.mark.slow
def test_orbax_only_restore_of_a_per_channel_series_model(tmp_path):
  """The README's recipe applies the fitted per-channel statistics the
  config carries: raw series in, the model's logits out."""
  rng = np.random.default_rng(0)
  x = (rng.normal(0, 1, (60, 6, 3)) * [1, 20, 300] + [2, -50, 900]).astype(
      np.float32)
  y = rng.integers(0, 2, 60)
  np.savez(tmp_path / 'd.npz', x=x, y=y)
  config = small_config(dataset=f'npz:{tmp_path / "d.npz"}', num_classes=2,
                        hidden_size=8, batch_size=10, num_train_steps=10,
                        checkpoint_every=10, eval_every=10, impl='scan',
                        eval_batch_size=16)
  train.train_and_evaluate(config, tmp_path / 'run', quiet=True)
  np.save(tmp_path / 'x.npy', x[:5])
  script = _recipe_run_beside(tmp_path / 'run' / 'checkpoints' / '10',
                             tmp_path)
  script += (f"\nnp.save({str(tmp_path / 'logits.npy')!r}, "
             f"classify(np.load({str(tmp_path / 'x.npy')!r})))\n")
  out = subprocess.run([sys.executable, '-c', script], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  model, params, saved = inference.load_model(tmp_path / 'run', impl='scan')
  assert len(saved.channel_mean) == 3  # normalize='auto' on float series
  expected = model.apply({'params': params}, x[:5])
  np.testing.assert_allclose(np.load(tmp_path / 'logits.npy'), expected,
                             rtol=1e-4, atol=1e-4)
