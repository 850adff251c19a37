"""Fashion-MNIST: the same four-IDX-file layout as MNIST, served by the same builder.

The Debian package ``dataset-fashion-mnist`` (``apt-get install -y
dataset-fashion-mnist``) installs the canonical gz files in
``/usr/share/datasets/fashion-mnist/``. Its gzip streams differ from the ones
tfds registers (so tfds' own checksums reject them), but the decompressed
files are the canonical ones: they are pinned here by the SHA-256 of their
decompressed bytes, like ``seqclf.data.mnist_files`` pins MNIST. Splits follow
MNIST's: validation is the first 5,000 training images.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from seqclf.data import mnist_builder, mnist_files
from seqclf.errors import DataError

SYSTEM_DIR = Path('/usr/share/datasets/fashion-mnist')
INSTALL_HINT = ('`apt-get install -y dataset-fashion-mnist` (puts them in '
                f'{SYSTEM_DIR}), or copy the four Fashion-MNIST IDX files '
                '(raw or .gz) to')

# name -> (sha256 of the decompressed file, shape); measured on the files of
# dataset-fashion-mnist 0.0~git20200523.55506a9-1 (labels: 6,000 per class).
FILES: dict[str, tuple[str, tuple[int, ...]]] = {
    'train-images-idx3-ubyte': (
        'c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888',
        (60000, 28, 28)),
    'train-labels-idx1-ubyte': (
        'bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9',
        (60000,)),
    't10k-images-idx3-ubyte': (
        '5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b',
        (10000, 28, 28)),
    't10k-labels-idx1-ubyte': (
        '0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34',
        (10000,)),
}
CLASS_NAMES = ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat',
               'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot')


def _find(directory: Path, name: str) -> Path | None:
  for path in (directory / name, directory / f'{name}.gz'):
    if path.exists():
      return path
  return None


def available(directory: Path = SYSTEM_DIR) -> bool:
  """Whether ``directory`` holds all four files (raw or .gz), unverified."""
  return all(_find(directory, name) for name in FILES)


def load_verified(directory: Path, name: str) -> np.ndarray:
  """Reads ``name`` (raw or .gz) from ``directory``, checks its pin, parses it."""
  return mnist_files.load_verified(
      directory, name, FILES, how_to_fix=f'run {INSTALL_HINT} {directory}')


def ensure_files(directory: Path, source: Path = SYSTEM_DIR) -> Path:
  """Fills ``directory`` from ``source`` (the Debian package's dir) and verifies."""
  mnist_files.make_dir(directory)
  for name in FILES:
    if _find(directory, name) is None:
      found = _find(source, name)
      if found is None:
        raise DataError(f'Fashion-MNIST file {name} is in neither {directory} '
                        f'nor {source}. Run {INSTALL_HINT} {directory}.')
      shutil.copyfile(found, directory / found.name)
  for name in FILES:
    load_verified(directory, name)
  return directory


class SeqclfFashionMnist(mnist_builder.SeqclfMnist):
  """Fashion-MNIST from its four IDX files, with MNIST's 55k/5k/10k splits."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Splits 55k/5k/10k as seqclf_mnist.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      'Put the four Fashion-MNIST IDX files (raw or .gz) in the manual dir, '
      'or run `apt-get install -y dataset-fashion-mnist` and `seqclf '
      'prepare-data --dataset=fashion_mnist`, which copies them.')
  load_verified = staticmethod(load_verified)
  DESCRIPTION = 'Fashion-MNIST (Zalando), 28x28 uint8, 10 classes.'
  HOMEPAGE = 'https://github.com/zalandoresearch/fashion-mnist'
  CLASS_NAMES = CLASS_NAMES
