"""Fashion-MNIST: verified files and a clear error when not prepared."""

import gzip

import numpy as np
import pytest

from seqclf.data import fashion_mnist, prepared
from seqclf.errors import DataError


def test_fashion_mnist_not_prepared_names_the_fix(tmp_path):
  with pytest.raises(DataError, match='prepare-data .*--dataset=fashion_mnist'):
    prepared.load_datasets(str(tmp_path), dataset='fashion_mnist')
  with pytest.raises(DataError, match='apt-get install -y dataset-fashion-mnist'):
    fashion_mnist.ensure_files(tmp_path / 'manual', source=tmp_path / 'none')


@pytest.mark.slow
@pytest.mark.skipif(not fashion_mnist.available(),
                    reason=f'Fashion-MNIST files absent from '
                    f'{fashion_mnist.SYSTEM_DIR}: apt-get install -y '
                    'dataset-fashion-mnist')
def test_fashion_mnist_files_verify_and_corruption_is_caught(tmp_path):
  directory = fashion_mnist.ensure_files(tmp_path / 'manual')
  labels = fashion_mnist.load_verified(directory, 'train-labels-idx1-ubyte')
  assert np.bincount(labels).tolist() == [6000] * 10
  images = fashion_mnist.load_verified(directory, 't10k-images-idx3-ubyte')
  assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
  path = directory / 't10k-labels-idx1-ubyte.gz'
  raw = bytearray(gzip.decompress(path.read_bytes()))
  raw[100] ^= 1
  path.write_bytes(gzip.compress(bytes(raw)))
  with pytest.raises(DataError, match='SHA-256 mismatch'):
    fashion_mnist.load_verified(directory, 't10k-labels-idx1-ubyte')
