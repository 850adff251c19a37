"""MNIST: pinned files, splits as TF1's read_data_sets, preparing and damaged prepared files."""

import gzip
import shutil

import numpy as np
import pytest

from seqclf.data import mnist_files, prepared

CANONICAL_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


CANONICAL_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851,
                          5949]


@pytest.fixture(scope='module')
def raw_dir():
  return prepared.manual_dir(prepared.resolve_data_dir(None))


def test_split_sizes_dtypes_and_label_counts(mnist):
  sizes = {k: v['image'].shape for k, v in mnist.items()}
  assert sizes == {'train': (55000, 28, 28), 'validation': (5000, 28, 28),
                   'test': (10000, 28, 28)}
  for split in mnist.values():
    assert split['image'].dtype == np.uint8 and split['label'].dtype == np.int32
  assert np.bincount(mnist['test']['label']).tolist() == CANONICAL_TEST_COUNTS
  combined = np.concatenate([mnist['validation']['label'],
                             mnist['train']['label']])
  assert np.bincount(combined).tolist() == CANONICAL_TRAIN_COUNTS


def test_validation_is_first_5000_of_official_train_file(mnist, raw_dir):
  images = mnist_files.load_verified(raw_dir, 'train-images-idx3-ubyte')
  labels = mnist_files.load_verified(raw_dir, 'train-labels-idx1-ubyte')
  np.testing.assert_array_equal(mnist['validation']['image'], images[:5000])
  np.testing.assert_array_equal(mnist['validation']['label'], labels[:5000])
  np.testing.assert_array_equal(mnist['train']['image'], images[5000:])


def test_gz_files_verify_like_raw(tmp_path, raw_dir):
  name = 't10k-labels-idx1-ubyte'
  (tmp_path / f'{name}.gz').write_bytes(
      gzip.compress((raw_dir / name).read_bytes()))
  labels = mnist_files.load_verified(tmp_path, name)
  assert np.bincount(labels).tolist() == CANONICAL_TEST_COUNTS


@pytest.mark.parametrize('corrupt, message', [
    (lambda b: b[:-10], 'SHA-256 mismatch'),
    (lambda b: b[:8] + bytes([b[8] ^ 1]) + b[9:], 'SHA-256 mismatch'),
])
def test_corrupt_file_is_rejected(tmp_path, raw_dir, corrupt, message):
  name = 't10k-labels-idx1-ubyte'
  (tmp_path / name).write_bytes(corrupt((raw_dir / name).read_bytes()))
  with pytest.raises(mnist_files.DataError, match=message):
    mnist_files.load_verified(tmp_path, name)


def test_idx_parser_errors():
  with pytest.raises(mnist_files.DataError, match='bad magic'):
    mnist_files.read_idx(b'\x01\x02\x08\x01\x00\x00\x00\x01\x05')
  with pytest.raises(mnist_files.DataError, match='truncated'):
    mnist_files.read_idx(b'\x00\x00\x08\x01\x00\x00\x00\x05\x01\x02')


def test_missing_file_names_fix(tmp_path):
  with pytest.raises(mnist_files.DataError, match='prepare-data'):
    mnist_files.load_verified(tmp_path, 't10k-labels-idx1-ubyte')


def test_unprepared_data_dir_says_how_to_prepare(tmp_path):
  with pytest.raises(mnist_files.DataError, match='seqclf prepare-data'):
    prepared.load_datasets(str(tmp_path))


def _prepared_copy(tmp_path):
  """The prepared MNIST files (not the decoded caches) in a fresh data dir,
  its manual dir linked to the shared source files."""
  shared = prepared.resolve_data_dir(None)
  version = tmp_path / 'seqclf_mnist' / '1.0.0'
  version.mkdir(parents=True)
  for f in (shared / 'seqclf_mnist' / '1.0.0').iterdir():
    if f.is_file() and not f.name.endswith(prepared.CACHE_SUFFIX):
      shutil.copy(f, version / f.name)
  manual = prepared.manual_dir(tmp_path)
  manual.parent.mkdir(parents=True)
  manual.symlink_to(prepared.manual_dir(shared))
  return version


def test_decoded_array_cache_is_written_and_a_damaged_one_rebuilt(
    tmp_path, mnist):
  version = _prepared_copy(tmp_path)
  test = prepared.load_datasets(str(tmp_path), ('test',))['test']
  np.testing.assert_array_equal(test['label'], mnist['test']['label'])
  cache = version / 'test-arrays.npz'
  assert cache.exists()
  for damage in (b'garbage', cache.read_bytes()[:100_000]):  # junk, truncated
    cache.write_bytes(damage)
    again = prepared.load_datasets(str(tmp_path), ('test',))['test']
    np.testing.assert_array_equal(again['image'], mnist['test']['image'])
  assert cache.stat().st_size > 1000


def _truncate(path):
  path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])


@pytest.mark.parametrize('damage, reason', [
    (_truncate, 'Corrupted Riegeli/records file'),
    (lambda path: path.unlink(), 'missing'),
], ids=['truncated', 'missing'])
def test_damaged_prepared_split_names_the_file_and_the_fix(tmp_path, damage,
                                                           reason):
  version = _prepared_copy(tmp_path)
  file = version / 'seqclf_mnist-validation.array_record-00000-of-00001'
  damage(file)
  with pytest.raises(mnist_files.DataError) as e:
    prepared.load_datasets(str(tmp_path), ('validation',))
  named = file if file.exists() else str(file).split('-00000')[0] + '*'
  assert str(e.value).startswith(f'{named}: cannot read the prepared '
                                 f'validation split ({reason}')
  assert str(e.value).endswith(
      f'Rebuild it with `seqclf prepare-data --force --data_dir={tmp_path}`.')
  assert '\n' not in str(e.value)


@pytest.mark.slow
def test_prepare_data_force_rebuilds_a_truncated_split(tmp_path, mnist):
  """From the manual files (no network), bitwise the prepared MNIST."""
  from conftest import run_cli  # pylint: disable=g-import-not-at-top
  version = _prepared_copy(tmp_path)
  file = version / 'seqclf_mnist-train.array_record-00000-of-00001'
  _truncate(file)
  out = run_cli('prepare-data', '--data_dir', str(tmp_path))
  assert out.returncode == 2, out.stderr
  assert out.stderr.strip().startswith(f'seqclf prepare-data: error: {file}:')
  assert len(out.stderr.strip().splitlines()) == 1, out.stderr
  out = run_cli('prepare-data', '--data_dir', str(tmp_path), '--force')
  assert out.returncode == 0, out.stderr[-2000:]
  again = prepared.load_datasets(str(tmp_path), ('train',))['train']
  np.testing.assert_array_equal(again['image'], mnist['train']['image'])
  np.testing.assert_array_equal(again['label'], mnist['train']['label'])
