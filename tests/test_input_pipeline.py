"""Data: pinned files, splits as TF1's read_data_sets, deterministic order, masking."""

import gzip
import shutil

import numpy as np
import pytest

from seqclf import input_pipeline, mnist_files

CANONICAL_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
CANONICAL_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851,
                          5949]


@pytest.fixture(scope='module')
def raw_dir():
  return input_pipeline.manual_dir(input_pipeline.resolve_data_dir(None))


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


def test_train_order_depends_only_on_seed_and_step():
  a = input_pipeline.train_indices(0, 1000, 100, 0, 25)
  assert a.shape == (25, 100)
  # Each epoch (10 steps) is a permutation; epochs differ.
  for e in range(2):
    assert sorted(a[10 * e:10 * e + 10].ravel()) == list(range(1000))
  assert not np.array_equal(a[:10], a[10:20])
  # Resuming at step 13 sees exactly the same batches.
  np.testing.assert_array_equal(
      input_pipeline.train_indices(0, 1000, 100, 13, 12), a[13:])
  assert not np.array_equal(input_pipeline.train_indices(1, 1000, 100, 0, 25), a)


def test_train_batches_shapes(mnist):
  batch = next(input_pipeline.train_batches(mnist['train'], 0, 32))
  assert batch['image'].shape == (32, 28, 28)
  assert batch['image'].dtype == np.float32 and batch['label'].dtype == np.int32
  assert 0.0 <= batch['image'].min() and batch['image'].max() <= 1.0


def test_eval_batches_cover_every_example_once():
  split = {'image': np.arange(250 * 784, dtype=np.uint32).astype(np.uint8)
                    .reshape(250, 28, 28),
           'label': np.arange(250, dtype=np.int32)}
  batches = list(input_pipeline.eval_batches(split, 100))
  assert [b['image'].shape for b in batches] == [(100, 28, 28)] * 3
  assert batches[-1]['mask'].sum() == 50
  seen = np.concatenate([b['label'][b['mask']] for b in batches])
  np.testing.assert_array_equal(seen, split['label'])


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
    input_pipeline.load_datasets(str(tmp_path))


@pytest.mark.slow
def test_prepare_from_manual_files_in_fresh_dir(tmp_path, raw_dir, mnist):
  """A data dir with the files in its manual dir prepares without network."""
  manual = input_pipeline.manual_dir(tmp_path)
  manual.mkdir(parents=True)
  for name in mnist_files.FILES:
    shutil.copy(raw_dir / name, manual / name)
  builder = input_pipeline.prepare(str(tmp_path))
  test = input_pipeline.load_datasets(str(tmp_path), ('test',))['test']
  np.testing.assert_array_equal(test['label'], mnist['test']['label'])
  # The decoded-array cache is written, and a damaged one is rebuilt.
  cache = tmp_path / 'seqclf_mnist' / '1.0.0' / 'test-arrays.npz'
  assert cache.exists() and str(builder.data_dir) == str(cache.parent)
  for damage in (b'garbage', cache.read_bytes()[:100_000]):  # junk, truncated
    cache.write_bytes(damage)
    again = input_pipeline.load_datasets(str(tmp_path), ('test',))['test']
    np.testing.assert_array_equal(again['image'], mnist['test']['image'])
  assert cache.stat().st_size > 1000


def _prepared_copy(tmp_path):
  """The prepared MNIST files (not the decoded caches) in a fresh data dir,
  its manual dir linked to the shared source files."""
  shared = input_pipeline.resolve_data_dir(None)
  version = tmp_path / 'seqclf_mnist' / '1.0.0'
  version.mkdir(parents=True)
  for f in (shared / 'seqclf_mnist' / '1.0.0').iterdir():
    if not f.name.endswith(input_pipeline.CACHE_SUFFIX):
      shutil.copy(f, version / f.name)
  manual = input_pipeline.manual_dir(tmp_path)
  manual.parent.mkdir(parents=True)
  manual.symlink_to(input_pipeline.manual_dir(shared))
  return version


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
    input_pipeline.load_datasets(str(tmp_path), ('validation',))
  named = file if file.exists() else str(file).split('-00000')[0] + '*'
  assert str(e.value).startswith(f'{named}: cannot read the prepared '
                                 f'validation split ({reason}')
  assert str(e.value).endswith(
      f'Rebuild it with `seqclf prepare-data --force --data_dir={tmp_path}`.')
  assert '\n' not in str(e.value)


@pytest.mark.slow
def test_prepare_data_force_rebuilds_a_truncated_split(tmp_path, mnist):
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
  again = input_pipeline.load_datasets(str(tmp_path), ('train',))['train']
  np.testing.assert_array_equal(again['image'], mnist['train']['image'])
  np.testing.assert_array_equal(again['label'], mnist['train']['label'])


def test_random_hflip_mirrors_about_half_the_images_reproducibly():
  import jax  # pylint: disable=g-import-not-at-top
  images = np.arange(1000 * 28 * 28, dtype=np.float32).reshape(1000, 28, 28)
  out = np.asarray(input_pipeline.random_hflip(images, jax.random.key(0)))
  same = np.all(out == images, axis=(1, 2))
  mirrored = np.all(out == images[..., ::-1], axis=(1, 2))
  assert np.all(same ^ mirrored)  # each image whole, either way round
  assert 400 < mirrored.sum() < 600
  np.testing.assert_array_equal(
      out, input_pipeline.random_hflip(images, jax.random.key(0)))
  assert not np.array_equal(
      out, input_pipeline.random_hflip(images, jax.random.key(1)))
