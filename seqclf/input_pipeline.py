"""Prepared tfds splits in memory, and a data order that is a pure function of (seed, step).

MNIST is tiny, so each split is read once from tfds into numpy; the training
images then live on the device and batches are gathered there from index
arrays computed here. Because the indices depend only on (seed, step), a run
resumed at step k sees exactly the batches an uninterrupted run sees.
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow_datasets as tfds

from seqclf import datasets
from seqclf import fashion_mnist
from seqclf import mnist_files
from seqclf.errors import ConfigError
from seqclf.logs import absl_silenced
from seqclf.mnist_builder import SeqclfMnist

SPLITS = datasets.SPLITS
Split = dict[str, np.ndarray]
CACHE_SUFFIX = '-arrays.npz'  # {split}-arrays.npz: decoded arrays of a split


def resolve_data_dir(data_dir: str | None) -> Path:
  """The tfds data dir: the config's, else $TFDS_DATA_DIR, else tfds' default."""
  if not data_dir:
    data_dir = os.environ.get('TFDS_DATA_DIR', '~/tensorflow_datasets')
  return Path(data_dir).expanduser().resolve()


def manual_dir(data_dir: Path, dataset: str = 'mnist') -> Path:
  return data_dir / 'downloads' / 'manual' / dataset


def _builder(root: Path, dataset: str) -> SeqclfMnist:
  if dataset not in datasets.TFDS:
    raise ConfigError(f'dataset must be one of {datasets.TFDS}, got '
                      f'{dataset!r}.')
  if dataset in datasets.TIMESERIES:
    from seqclf import timeseries  # pylint: disable=g-import-not-at-top
    cls = timeseries.BUILDERS[dataset]
  else:
    cls = (SeqclfMnist if dataset == 'mnist'
           else fashion_mnist.SeqclfFashionMnist)
  with absl_silenced():  # tfds logs a data dir not prepared: we say it.
    return cls(data_dir=str(root), file_format='array_record')


def _is_prepared(builder: SeqclfMnist) -> bool:
  with absl_silenced():  # tfds logs a data dir not prepared: we say it.
    return builder.is_prepared()


def prepare_command(root: Path, dataset: str = 'mnist',
                    force: bool = False) -> str:
  """The ``seqclf prepare-data`` command line that (re)builds ``dataset``."""
  flag = '' if dataset == 'mnist' else f' --dataset={dataset}'
  return (f'seqclf prepare-data{" --force" if force else ""} '
          f'--data_dir={root}{flag}')


def prepare(data_dir: str | None, dataset: str = 'mnist',
            force: bool = False) -> SeqclfMnist:
  """Fetches (if needed), verifies and prepares the dataset; a no-op when
  done, unless ``force``: then the prepared files and the decoded-array
  caches are built again from the verified source files (damaged ones)."""
  root = resolve_data_dir(data_dir)
  builder = _builder(root, dataset)
  if force or not _is_prepared(builder):
    if dataset in datasets.TIMESERIES:
      from seqclf import timeseries  # pylint: disable=g-import-not-at-top
      files = timeseries.ensure_files(manual_dir(root, dataset), dataset)
    else:
      ensure = (mnist_files.ensure_files if dataset == 'mnist'
                else fashion_mnist.ensure_files)
      files = ensure(manual_dir(root, dataset))
    mode = (tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS if force
            else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=str(files), download_mode=mode))
    for cache in Path(builder.data_dir).glob(f'*{CACHE_SUFFIX}'):
      cache.unlink()
    builder = _builder(root, dataset)
  for split in SPLITS:
    load_split(builder, split)  # Fills the decoded-array cache.
  return builder


def _read_split(builder: SeqclfMnist, split: str) -> list[dict[str, Any]]:
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
    raise mnist_files.DataError(
        f'{what}: cannot read the prepared {split} split ({reason}). '
        f'Rebuild it with `{prepare_command(root, dataset, force=True)}`.'
        ) from e


def load_split(builder: SeqclfMnist, split: str) -> Split:
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
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
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
  tmp = cache.with_name(f'{cache.name}.{os.getpid()}.tmp.npz')
  try:
    np.savez(tmp, **arrays)
    os.replace(tmp, cache)
  except OSError:
    tmp.unlink(missing_ok=True)  # Read-only data dir: just don't cache.
  return arrays


def load_datasets(data_dir: str | None,
                  splits: tuple[str, ...] = SPLITS,
                  dataset: str = 'mnist') -> dict[str, Split]:
  """Loads prepared splits; says how to prepare them when they are missing."""
  root = resolve_data_dir(data_dir)
  builder = _builder(root, dataset)
  if not _is_prepared(builder):
    raise mnist_files.DataError(
        f'{dataset} is not prepared in {root}. Run '
        f'`{prepare_command(root, dataset)}` (or `make setup`).')
  return {split: load_split(builder, split) for split in splits}


def epoch_permutation(seed: int, epoch: int, num_examples: int) -> np.ndarray:
  """The example order of one epoch: a pure function of (seed, epoch)."""
  return np.random.default_rng([seed, epoch]).permutation(num_examples)


def check_batch_size(batch_size: int, num_examples: int) -> None:
  """A ``ConfigError`` unless a batch fits in the training examples."""
  if batch_size > num_examples:
    raise ConfigError(f'batch_size={batch_size} exceeds the {num_examples} '
                      'training examples: lower --config.batch_size.')


def train_indices(seed: int, num_examples: int, batch_size: int,
                  first_step: int, num_steps: int) -> np.ndarray:
  """Example indices of steps [first_step, first_step + num_steps), (steps, B).

  Each epoch is a fresh permutation; the last partial batch of an epoch is
  dropped so every batch has the same shape (the jitted step needs it).
  """
  check_batch_size(batch_size, num_examples)
  steps_per_epoch = num_examples // batch_size
  rows, perms = [], {}
  for step in range(first_step, first_step + num_steps):
    epoch, pos = divmod(step, steps_per_epoch)
    if epoch not in perms:
      perms[epoch] = epoch_permutation(seed, epoch, num_examples)
    rows.append(perms[epoch][pos * batch_size:(pos + 1) * batch_size])
  return np.asarray(rows, np.int32).reshape(num_steps, batch_size)


def train_batches(split: Split, seed: int, batch_size: int,
                  first_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
  """Host-side training batches in the trainer's order, for use outside seqclf."""
  step = first_step
  while True:
    (idx,) = train_indices(seed, len(split['label']), batch_size, step, 1)
    batch = {'image': to_float(split['image'][idx]),
             'label': split['label'][idx]}
    if 'lengths' in split:
      batch['lengths'] = split['lengths'][idx]
    yield batch
    step += 1


def eval_batches(split: Split, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
  """Covers every example once; the last batch is zero-padded and masked."""
  n = len(split['label'])
  for start in range(0, n, batch_size):
    image = split['image'][start:start + batch_size]
    label = split['label'][start:start + batch_size]
    pad = batch_size - len(label)
    batch = {
        'image': to_float(np.pad(image, ((0, pad), (0, 0), (0, 0)))),
        'label': np.pad(label, (0, pad)),
        'mask': np.arange(batch_size) < len(label),
    }
    if 'lengths' in split:  # Padding examples count as full length.
      batch['lengths'] = np.pad(split['lengths'][start:start + batch_size],
                                (0, pad), constant_values=image.shape[1])
    yield batch


def random_hflip(images: jax.Array, rng: jax.Array) -> jax.Array:
  """Mirrors each (..., 28, 28) image left-right with probability 1/2.

  For data whose classes survive a mirror (garments, not digits): the model
  sees each training image in both orientations at no extra cost.
  """
  flip = jax.random.bernoulli(rng, 0.5, images.shape[:1])
  return jnp.where(flip.reshape(-1, *([1] * (images.ndim - 1))),
                   images[..., ::-1], images)


def to_float(images):
  """uint8 pixels -> float32 in [0, 1], float sequences -> float32 as they
  are (``seqclf.datasets``); works on numpy and jax arrays."""
  if images.dtype == np.uint8:
    return images.astype('float32') / 255.0
  return images.astype('float32')
