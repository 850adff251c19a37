"""`seqclf export`: a trained model served by jax alone, logits as load_model's."""

import json
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from conftest import run_cli, small_config
from seqclf import export, inference
from seqclf.data import views
from seqclf.training import checkpoint, state as state_lib

# Each test runs `seqclf export` in a subprocess.
pytestmark = pytest.mark.slow


def _saved_workdir(tmp_path, **overrides):
  """A workdir holding one checkpoint of a fresh (perturbed) model."""
  config = small_config(**{'impl': 'scan', 'hidden_size': 16, **overrides})
  state = state_lib.create_train_state(config, jax.random.key(3))  # its task's shape
  leaves, tree = jax.tree.flatten(state.params)
  keys = jax.random.split(jax.random.key(4), len(leaves))
  state = state.replace(params=jax.tree.unflatten(tree, [
      p + 0.2 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)]))
  workdir = tmp_path / 'run'
  mngr = checkpoint.manager(workdir)
  checkpoint.save(mngr, state, config)
  mngr.wait_until_finished()
  return workdir


# Runs in a fresh interpreter: jax and numpy only.
_SERVE = textwrap.dedent('''
    import json, sys
    import jax, numpy as np
    out, images = sys.argv[1], np.load(sys.argv[2])
    meta = json.load(open(f'{out}/model.json'))
    exported = jax.export.deserialize(
        bytearray(open(f'{out}/{meta["artifact"]}', 'rb').read()))
    logits = [np.asarray(exported.call(images[:n])) for n in (1, len(images))]
    assert not [m for m in sys.modules if m.split('.')[0] in ('seqclf', 'flax')]
    np.savez(sys.argv[3], small=logits[0], full=logits[1])
    print(json.dumps(meta['class_names']))
''')


@pytest.mark.gpu
def test_exported_model_runs_with_jax_alone(tmp_path):
  workdir = _saved_workdir(tmp_path, bidirectional=True)
  out = run_cli('export', '--workdir', str(workdir), '--out',
                str(tmp_path / 'served'))
  assert out.returncode == 0, out.stderr
  meta = json.loads((tmp_path / 'served' / export.METADATA).read_text())
  assert meta['input']['shape'] == ['batch', 28, 28]
  assert meta['config']['bidirectional'] is True
  images = np.random.default_rng(0).integers(0, 256, (7, 28, 28), np.uint8)
  np.save(tmp_path / 'images.npy', images.astype(np.float32) / 255)
  served = subprocess.run(
      [sys.executable, '-c', _SERVE, str(tmp_path / 'served'),
       str(tmp_path / 'images.npy'), str(tmp_path / 'logits.npz')],
      capture_output=True, text=True, cwd=tmp_path, check=False)
  assert served.returncode == 0, served.stderr
  assert json.loads(served.stdout) == [str(d) for d in range(10)]
  logits = np.load(tmp_path / 'logits.npz')
  model, params, _ = inference.load_model(workdir)
  expected = np.asarray(model.apply({'params': params},
                                    images.astype(np.float32) / 255))
  np.testing.assert_allclose(logits['full'], expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(logits['small'], expected[:1], rtol=1e-5,
                             atol=1e-5)


def test_export_needs_out_and_a_checkpoint(tmp_path):
  out = run_cli('export', '--workdir', str(tmp_path))
  assert out.returncode == 2 and '--out' in out.stderr
  out = run_cli('export', '--workdir', str(tmp_path), '--out',
                str(tmp_path / 'o'))
  assert out.returncode == 2 and 'No checkpoint' in out.stderr
  assert 'Traceback' not in out.stderr


def test_a_permuted_pixel_model_is_given_images_everywhere(tmp_path):
  """The task is the data's view: `predict` and the exported function take
  28 x 28 images and read them as the run did; the model reads sequences."""
  workdir = _saved_workdir(tmp_path, task='permuted', permutation_seed=3,
                           hidden_size=8)
  model, params, config = inference.load_model(workdir)
  assert params['lstm_0']['cell']['input']['kernel'].shape[0] == 1
  images = np.random.default_rng(1).integers(0, 256, (2, 28, 28), np.uint8)
  pixels = images.astype(np.float32) / 255
  expected = np.asarray(model.apply({'params': params},
                                    views.view(config, pixels)))
  assert views.view(config, pixels).shape == (2, 784, 1)
  metadata = export.export_model(workdir, tmp_path / 'served')
  assert metadata['input']['shape'] == ['batch', 28, 28]
  assert metadata['input']['read_as'].startswith('permuted')
  exported = jax.export.deserialize(bytearray(
      (tmp_path / 'served' / export.ARTIFACT).read_bytes()))
  np.testing.assert_allclose(exported.call(pixels), expected, rtol=1e-5,
                             atol=1e-5)
  from PIL import Image  # pylint: disable=g-import-not-at-top
  Image.fromarray(images[0]).save(tmp_path / 'digit.png')
  out = run_cli('predict', '--workdir', str(workdir),
                str(tmp_path / 'digit.png'))
  assert out.returncode == 0, out.stderr
  assert f'class {int(np.argmax(expected[0]))} ' in out.stdout, out.stdout
