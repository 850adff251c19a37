"""seqclf.data.timeseries: the archive's .ts files, read without aeon, as tfds splits.

The real files come from the aeon wheel, which CI does not install: these
tests build a tiny problem in the same format on the fly, pin it, and run it
through the same code (wheel, checksums, tfds files, splits, training).
"""

import hashlib
import tempfile
import zipfile

import numpy as np
import pytest

from conftest import small_config
from seqclf import inference, train
from seqclf.data import prepared, registry, timeseries
from seqclf.errors import DataError

NAME = 'uea_basic_motions'  # the problem whose pins the tiny one replaces


def _ts(rng, n, classes=('a', 'b', 'c'), channels=2, max_len=9, nan_pad=True):
  """A .ts text of ``n`` cases: class k drifts channel 0 by k; NaN-padded."""
  lines = ['# a comment', '@problemName Tiny', '@univariate false',
           f'@classLabel true {" ".join(classes)}', '@data']
  labels = rng.integers(0, len(classes), n)
  for label in labels:
    steps = int(rng.integers(3, max_len + 1))
    x = rng.normal(0, 0.2, (channels, steps)) + 5.0
    x[0] += label * np.linspace(0, 1, steps)
    pad = ['NaN'] * (max_len - steps) if nan_pad else []
    lines.append(':'.join(','.join([f'{v:.4f}' for v in row] + pad)
                          for row in x) + f':{classes[label]}')
  return '\n'.join(lines) + '\n'


def _tiny(tmp_path, monkeypatch, seed=0):
  """A wheel holding a tiny problem in the manual dir, pinned as ``NAME``."""
  rng = np.random.default_rng(seed)
  texts = {'TRAIN': _ts(rng, 60), 'TEST': _ts(rng, 30)}
  manual = tmp_path / 'data' / 'downloads' / 'manual'
  manual.mkdir(parents=True)
  archive = timeseries.PROBLEMS[NAME].archive_name
  with zipfile.ZipFile(manual / timeseries.WHEEL, 'w') as z:
    for part, text in texts.items():
      z.writestr(f'{timeseries.WHEEL_DATA}/{archive}/{archive}_{part}.ts', text)
  sha = {k: hashlib.sha256(v.encode()).hexdigest() for k, v in texts.items()}
  problem = timeseries.Problem(archive, sha['TRAIN'], sha['TEST'], 'tiny')
  monkeypatch.setitem(timeseries.PROBLEMS, NAME, problem)
  monkeypatch.setitem(timeseries.SHAPES, NAME, (3, 9, 2))
  return tmp_path / 'data', texts


def test_parse_ts_cuts_nan_padding_and_reads_labels():
  text = ('@classLabel true x y\n@data\n1,2,3:4,5,6:y\n'
          '1,NaN,NaN:2,NaN,NaN:x\n')
  series, labels, classes = timeseries.parse_ts(text, 'mem')
  assert [s.shape for s in series] == [(3, 2), (1, 2)]
  np.testing.assert_array_equal(series[0][:, 1], [4, 5, 6])
  assert labels == ['y', 'x'] and classes == ['x', 'y']
  with pytest.raises(DataError, match='missing value inside'):
    timeseries.parse_ts('@classLabel true x\n@data\n1,NaN,3:x\n', 'mem')
  with pytest.raises(DataError, match=r"labels \['z'\] not in @classLabel"):
    timeseries.parse_ts('@classLabel true x\n@data\n1,2:z\n', 'mem')


def test_splits_are_padded_stratified_and_raw():
  rng = np.random.default_rng(1)
  train_text, test_text = _ts(rng, 60), _ts(rng, 30, nan_pad=False)
  splits, classes = timeseries.build_splits(train_text, test_text, 'tiny')
  again, _ = timeseries.build_splits(train_text, test_text, 'tiny')
  assert classes == ['a', 'b', 'c']
  assert len(splits['train']['label']) + len(
      splits['validation']['label']) == 60
  assert len(splits['test']['label']) == 30
  for name, split in splits.items():
    np.testing.assert_array_equal(split['image'], again[name]['image'])
    x, n = split['image'], split['lengths']
    valid = np.arange(x.shape[1])[None, :] < n[:, None]
    assert (x[~valid] == 0).all()  # padding is zero
  # The archive's values as they are: the model standardizes them.
  series, _, _ = timeseries.parse_ts(test_text, 'tiny')
  np.testing.assert_array_equal(
      splits['test']['image'][0, :len(series[0])], series[0])
  # Every class is in both train and validation (stratified carving).
  assert set(splits['validation']['label']) == set(splits['train']['label'])


def test_prepare_from_a_wheel_loads_and_trains(tmp_path, monkeypatch):
  data_dir, _ = _tiny(tmp_path, monkeypatch)
  prepared.prepare(str(data_dir), NAME)
  config = small_config(dataset=NAME, data_dir=str(data_dir), num_classes=3,
                        hidden_size=16, batch_size=10, eval_batch_size=16,
                        impl='scan', learning_rate=1e-2, num_train_steps=40,
                        eval_every=40, checkpoint_every=40)
  data = registry.load(config)
  assert data['train']['image'].shape[1:] == (9, 2)
  assert data['train']['lengths'].min() >= 3
  results = train.train_and_evaluate(config, tmp_path / 'run', quiet=True)
  assert results['test_accuracy'] > 0.5  # chance is 1/3
  # The saved model is rebuilt for the series' width, not MNIST's images.
  _, params, saved = inference.load_model(tmp_path / 'run')
  assert params['lstm_0']['cell']['input']['kernel'].shape[0] == 2
  # normalize='auto' on series: per-channel statistics of the raw train split.
  valid = data['train']['image'][np.arange(9)[None, :]
                                 < data['train']['lengths'][:, None]]
  np.testing.assert_allclose(saved.channel_mean, valid.mean(0), rtol=1e-5)
  np.testing.assert_allclose(saved.channel_std, valid.std(0), rtol=1e-4)
  again = train.train_and_evaluate(config, tmp_path / 'run', quiet=True)
  assert again.get('already_finished'), again


def test_missing_wheel_and_wrong_file_are_one_line(tmp_path, monkeypatch):
  monkeypatch.setattr(timeseries, '_installed_aeon_data', lambda: None)
  with pytest.raises(DataError, match=r'pip download aeon==1\.6\.0 '
                     r'--no-deps') as e:
    prepared.prepare(str(tmp_path / 'empty'), NAME)
  assert '\n' not in str(e.value)
  data_dir, _ = _tiny(tmp_path, monkeypatch)
  manual = data_dir / 'downloads' / 'manual' / NAME
  manual.mkdir(parents=True)
  archive = timeseries.PROBLEMS[NAME].archive_name
  (manual / f'{archive}_TRAIN.ts').write_text('@classLabel true a\n@data\n')
  with pytest.raises(DataError, match='SHA-256 mismatch'):
    prepared.prepare(str(data_dir), NAME)


@pytest.mark.parametrize('dataset', sorted(prepared.BUILDERS))
def test_a_builder_leaves_nothing_in_the_temporary_directory(
    tmp_path, monkeypatch, dataset):
  """tfds' own DatasetInfo looks an unprepared dataset up on its bucket
  through a temporary directory it never removes (one per preparation)."""
  tmp = tmp_path / 'tmp'
  tmp.mkdir()
  monkeypatch.setattr(tempfile, 'tempdir', str(tmp))
  builder = prepared.BUILDERS[dataset](data_dir=str(tmp_path / 'data'),
                                       file_format='array_record')
  assert not builder.is_prepared()
  assert not list(tmp.iterdir())
