"""`seqclf export`: a trained model served by jax alone, logits as load_model's."""

import json
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from conftest import perturbed, run_cli, small_config
from seqclf import export, inference
from seqclf.data import registry, views
from seqclf.training import checkpoint, state as state_lib

# Each test runs `seqclf export` in a subprocess.
pytestmark = pytest.mark.slow


def _saved_workdir(tmp_path, **overrides):
  """A workdir holding one checkpoint of a fresh (perturbed) model."""
  config = small_config(**{'impl': 'scan', 'hidden_size': 16, **overrides})
  state = state_lib.create_train_state(config, jax.random.key(3))  # its task's shape
  state = state.replace(params=perturbed(state.params, 4, scale=0.2))
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
  assert not (tmp_path / 'o').exists()  # created to check, then removed
  (tmp_path / 'kept').mkdir()  # A directory the user made stays.
  out = run_cli('export', '--workdir', str(tmp_path), '--out',
                str(tmp_path / 'kept'))
  assert out.returncode == 2 and (tmp_path / 'kept').is_dir()


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


def test_series_model_takes_raw_values_and_nan_through_every_door(tmp_path):
  """normalize='auto' (per_channel on float series) and missing='impute':
  trained on raw values with gaps, the statistics travel in the checkpoint,
  so load_model, load_nnx_model, the exported function and `seqclf predict`
  take raw values and NaN; a NaN gives finite logits."""
  from seqclf import train  # pylint: disable=g-import-not-at-top
  from seqclf.data import normalization  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  n, steps = 120, 8
  y, lengths = rng.integers(0, 3, n), rng.integers(3, steps + 1, n)
  x = (rng.normal(0, 1, (n, steps, 2)) * [2, 50] + [10, -400]).astype(
      np.float32)
  x[:, :, 0] += y[:, None] * 3.0
  x[rng.random(x.shape) < 0.05] = np.nan
  path = tmp_path / 'gaps.npz'
  np.savez(path, x=x, y=y, lengths=lengths)
  config = small_config(dataset=f'npz:{path}', num_classes=3, hidden_size=16,
                        batch_size=20, eval_batch_size=32, impl='scan',
                        learning_rate=1e-2, num_train_steps=20,
                        missing='impute')
  workdir = tmp_path / 'run'
  train.train_and_evaluate(config, workdir, quiet=True)
  model, params, saved = inference.load_model(workdir, impl='scan')
  data = views.view_splits(saved, registry.load(saved))
  mean, std = normalization.fit_channels(data['train'])
  np.testing.assert_allclose(saved.channel_mean, mean, rtol=1e-6)
  np.testing.assert_allclose(saved.channel_std, std, rtol=1e-6)
  assert params['lstm_0']['cell']['input']['kernel'].shape[0] == 4  # + masks
  raw = data['test']['image'][:6].copy()
  raw[0, 0, :] = np.nan  # a row starting with a gap: filled with the mean
  seq_lengths = data['test']['lengths'][:6]
  want = np.asarray(model.apply({'params': params}, raw,
                                seq_lengths=seq_lengths))
  assert np.isfinite(want).all()
  nnx_model, _ = inference.load_nnx_model(workdir, impl='scan')
  np.testing.assert_array_equal(nnx_model(raw, seq_lengths=seq_lengths), want)
  metadata = export.export_model(workdir, tmp_path / 'served')
  assert metadata['normalization']['channel_mean'] == list(saved.channel_mean)
  assert metadata['normalization']['missing'] == 'impute'
  exported = jax.export.deserialize(bytearray(
      (tmp_path / 'served' / export.ARTIFACT).read_bytes()))
  np.testing.assert_allclose(exported.call(raw, seq_lengths), want,
                             rtol=1e-5, atol=1e-5)
  np.save(tmp_path / 'one.npy', raw[0, :seq_lengths[0]])
  out = run_cli('predict', '--workdir', str(workdir), str(tmp_path / 'one.npy'))
  assert out.returncode == 0, out.stderr
  assert f'class {int(np.argmax(want[0]))} ' in out.stdout, out.stdout
