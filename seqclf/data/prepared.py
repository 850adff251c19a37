"""Prepared tfds datasets: fetched, verified and prepared once, loaded as numpy.

``prepare`` runs a dataset's builder (``BUILDERS``: MNIST and Fashion-MNIST
from their IDX files, the UEA/UCR series from the aeon wheel's files) into
``array_record`` files without TensorFlow; ``load_datasets`` reads whole
splits into numpy, in the official files' order, through a decoded-array
cache beside the prepared files.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from seqclf.data import fashion_mnist, mnist_files, npz, stream, timeseries
from seqclf.data.mnist_builder import SeqclfMnist
from seqclf.data.splits import SPLITS, Split, write_cache
from seqclf.errors import ConfigError, DataError
from seqclf.logs import absl_silenced

CACHE_SUFFIX = '-arrays.npz'  # {split}-arrays.npz: decoded arrays of a split
# Each dataset's tfds builder, and what fetches and verifies its source files
# into a manual dir (returning the dir that holds them).
BUILDERS: dict[str, type[tfds.core.GeneratorBasedBuilder]] = {
    'mnist': SeqclfMnist, 'fashion_mnist': fashion_mnist.SeqclfFashionMnist,
    **timeseries.BUILDERS}
SOURCES: dict[str, Callable[[Path], Path]] = {
    'mnist': mnist_files.ensure_files,
    'fashion_mnist': fashion_mnist.ensure_files,
    **{name: functools.partial(timeseries.ensure_files, name=name)
       for name in timeseries.BUILDERS}}


def resolve_data_dir(data_dir: str | None) -> Path:
  """The tfds data dir: the config's, else $TFDS_DATA_DIR, else tfds' default."""
  if not data_dir:
    data_dir = os.environ.get('TFDS_DATA_DIR', '~/tensorflow_datasets')
  return Path(data_dir).expanduser().resolve()


def manual_dir(data_dir: Path, dataset: str = 'mnist') -> Path:
  return data_dir / 'downloads' / 'manual' / dataset


def _builder(root: Path, dataset: str) -> tfds.core.GeneratorBasedBuilder:
  if dataset not in BUILDERS:
    raise ConfigError(f'dataset must be one of {tuple(BUILDERS)}, got '
                      f'{dataset!r}.', arg='dataset')
  with absl_silenced():  # tfds logs a data dir not prepared: we say it.
    return BUILDERS[dataset](data_dir=str(root), file_format='array_record')


def _is_prepared(builder: tfds.core.GeneratorBasedBuilder) -> bool:
  with absl_silenced():  # tfds logs a data dir not prepared: we say it.
    return builder.is_prepared()


def prepare_command(root: Path, dataset: str = 'mnist',
                    force: bool = False) -> str:
  """The ``seqclf prepare-data`` command line that (re)builds ``dataset``."""
  flag = '' if dataset == 'mnist' else f' --dataset={dataset}'
  return (f'seqclf prepare-data{" --force" if force else ""} '
          f'{shlex.quote(f"--data_dir={root}")}{flag}')


def prepare(data_dir: str | None, dataset: str = 'mnist',
            force: bool = False) -> tfds.core.GeneratorBasedBuilder:
  """Fetches (if needed), verifies and prepares the dataset; a no-op when
  done, unless ``force``: then the prepared files and the decoded-array
  caches are built again from the verified source files (damaged ones)."""
  root = resolve_data_dir(data_dir)
  builder = _builder(root, dataset)
  if force or not _is_prepared(builder):
    files = SOURCES[dataset](manual_dir(root, dataset))
    mode = (tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS if force
            else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=str(files), download_mode=mode))
    for cache in [*Path(builder.data_dir).glob(f'*{CACHE_SUFFIX}'),
                  *Path(builder.data_dir).glob(f'*{stream.INDEX_SUFFIX}')]:
      cache.unlink()
    shutil.rmtree(stream.stream_dir(builder), ignore_errors=True)
    builder = _builder(root, dataset)
  for split in SPLITS:
    load_split(builder, split)  # Fills the decoded-array cache.
  return builder


def _read_split(builder: tfds.core.GeneratorBasedBuilder, split: str) -> list[dict[str, Any]]:
  """Every example of ``split`` from the prepared array_record files, with
  a missing, truncated or corrupt file as one ``DataError`` naming it."""
  data_dir = Path(builder.data_dir)
  files = sorted(data_dir.glob(f'{builder.name}-{split}.array_record*'))
  try:
    source = builder.as_data_source()[split]
    return source.__getitems__(range(len(source)))
  except Exception as e:  # pylint: disable=broad-except
    # array_record raises RuntimeError/ValueError/OSError for these.
    root, dataset = data_dir.parents[1], builder.name.removeprefix('seqclf_')
    what = ', '.join(str(f) for f in files) or (
        f'{data_dir}/{builder.name}-{split}.array_record*')
    reason = (' '.join(re.split(r'[;(]', str(e))[0].split())[:120]
              if files else 'missing') or type(e).__name__
    raise DataError(
        f'{what}: cannot read the prepared {split} split ({reason}). '
        f'Rebuild it with `{prepare_command(root, dataset, force=True)}`.'
        ) from e


def load_split(builder: tfds.core.GeneratorBasedBuilder, split: str) -> Split:
  """Reads a whole split into numpy, in the official files' order.

  Decoding 70k tfds examples one by one takes seconds at every start, so the
  decoded arrays are kept beside the prepared dataset as ``{split}-arrays.npz``
  (numpy only, never pickles) and rebuilt if missing or not the split's size.
  """
  cache = Path(builder.data_dir) / f'{split}{CACHE_SUFFIX}'
  expected = builder.info.splits[split].num_examples
  if cache.exists():
    try:
      with np.load(cache, allow_pickle=False) as f:
        arrays = {k: f[k] for k in ('image', 'label', 'lengths')
                  if k in f.files}
      if len(arrays['label']) == expected == len(arrays['image']):
        return arrays
    except (*npz.LOAD_ERRORS, KeyError):
      pass  # Damaged cache: rebuild it below.
  examples = _read_split(builder, split)
  order = np.argsort([e['id'] for e in examples])
  arrays = {
      'image': np.stack([examples[i]['image'] for i in order]),
      'label': np.array([examples[i]['label'] for i in order], np.int32),
  }
  if examples and 'lengths' in examples[0]:  # variable-length series
    arrays['lengths'] = np.array([examples[i]['lengths'] for i in order],
                                 np.int32)
  write_cache(cache, arrays)
  return arrays


def _prepared_builder(data_dir: str | None, dataset: str
                      ) -> tfds.core.GeneratorBasedBuilder:
  """The dataset's builder; a ``DataError`` saying how to prepare it when it
  is not prepared."""
  root = resolve_data_dir(data_dir)
  builder = _builder(root, dataset)
  if not _is_prepared(builder):
    raise DataError(
        f'{dataset} is not prepared in {root}. Run '
        f'`{prepare_command(root, dataset)}` (or `make setup`).')
  return builder


def load_datasets(data_dir: str | None,
                  splits: tuple[str, ...] = SPLITS,
                  dataset: str = 'mnist') -> dict[str, Split]:
  """Loads prepared splits; says how to prepare them when they are missing."""
  builder = _prepared_builder(data_dir, dataset)
  return {split: load_split(builder, split) for split in splits}


def open_datasets(data_dir: str | None, splits: tuple[str, ...] = SPLITS,
                  dataset: str = 'mnist') -> dict[str, Split]:
  """Prepared splits with their sequences left on disk, for streaming
  (``seqclf.data.stream.open_split`` of its ``stream_copy``), in
  ``load_datasets``' order."""
  builder = _prepared_builder(data_dir, dataset)
  copy = stream.stream_copy(builder, splits)
  return {split: stream.open_split(copy, split) for split in splits}


def builder_info(data_dir: str | None, dataset: str) -> Any:
  """A prepared dataset's ``DatasetInfo`` (sizes and features), or the
  ``DataError`` saying how to prepare it."""
  builder = _prepared_builder(data_dir, dataset)
  return builder.info
