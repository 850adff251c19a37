"""The dataset registry: which data a config names, loaded and checked.

A dataset is three splits (``seqclf.data.splits``). ``config.dataset``
names it: a prepared tfds dataset (``TFDS``: MNIST and Fashion-MNIST, the
UEA/UCR series of ``seqclf.data.timeseries``; ``seqclf.data.prepared``) or
``npz:PATH``, the user's own arrays (``seqclf.data.npz``). Every split is
checked against the contract before training: bad data is one ``DataError``
line naming the array and the fix. How an image dataset is read (its rows,
or its pixels in raster or a permuted order) is ``seqclf.data.views``'.
"""

from __future__ import annotations

from typing import Any

import ml_collections
import numpy as np

from pathlib import Path

from seqclf.data import (fashion_mnist, normalization, npz, npz_shards,
                         prepared, stream, timeseries)
from seqclf.data.splits import SPLITS, Split, digest
from seqclf.errors import ConfigError, DataError

# 28 x 28 uint8 images, which a classifier reads as `config.task` says.
IMAGES = ('mnist', 'fashion_mnist')
# The UEA/UCR archive problems: raw float series with lengths (the model
# standardizes them: seqclf.data.normalization).
TIMESERIES = tuple(timeseries.PROBLEMS)
TFDS = tuple(prepared.BUILDERS)  # prepared by `prepare_data`
NPZ_PREFIX = 'npz:'


def check_name(name: str, task: str = 'row') -> None:
  """A ConfigError unless ``name`` is a known dataset or ``npz:PATH``, and
  ``task`` a view it has (the pixel views need images)."""
  if not (name in TFDS
          or (name.startswith(NPZ_PREFIX) and name[len(NPZ_PREFIX):])):
    raise ConfigError(f'Config key `dataset` must be one of {TFDS} or '
                      f"'npz:PATH' (your own arrays), got {name!r}.",
                      arg='config.dataset')
  if task != 'row' and name not in IMAGES:
    raise ConfigError(f"Config key `task`={task!r} reads an image's pixels "
                      f'one by one: only the image datasets {IMAGES} have '
                      f"them; {name!r} is read as it is, with task='row'.",
                      arg='config.task')


def load(config: Any, splits: tuple[str, ...] = SPLITS, *,
         lazy: bool = False) -> dict[str, Split]:
  """The data a config names, checked.

  Args:
    config: its ``dataset``, ``task``, ``data_dir``, ``validation_fraction``,
      ``num_classes`` and ``missing`` are read.
    splits: the splits to load.
    lazy: leave a prepared dataset's sequences on disk
      (``seqclf.data.stream.LazyImages``), for streaming.

  Returns:
    ``{split: arrays}``, each checked against ``num_classes``.
  """
  check_name(config.dataset, config.task)
  return read(config.dataset, config.data_dir, config.validation_fraction,
              splits, config.num_classes, config.missing, lazy=lazy)


def train_nbytes(config: Any) -> int:
  """The training split's sequences as stored, in bytes, from the prepared
  dataset's metadata (nothing read); an npz file: its size on disk."""
  name = config.dataset
  if is_shard_dir(name):
    info = npz_shards.builder(name[len(NPZ_PREFIX):]).info
  elif name.startswith(NPZ_PREFIX):
    path = Path(name[len(NPZ_PREFIX):]).expanduser()
    return path.stat().st_size if path.is_file() else 0
  else:
    info = prepared.builder_info(config.data_dir, name)
  feature = info.features['image']
  return (info.splits['train'].num_examples * int(np.prod(feature.shape))
          * np.dtype(feature.np_dtype).itemsize)


def is_shard_dir(name: str) -> bool:
  """``npz:DIR``: a directory of shards (``seqclf.data.npz_shards``)."""
  return (name.startswith(NPZ_PREFIX)
          and Path(name[len(NPZ_PREFIX):]).expanduser().is_dir())


def read(name: str, data_dir: str | None, validation_fraction: float,
         splits: tuple[str, ...] = SPLITS,
         num_classes: int | None = None,
         missing: str = 'impute', *,
         lazy: bool = False) -> dict[str, Split]:
  """The splits of dataset ``name``, checked.

  Args:
    name: a ``TFDS`` name, ``npz:PATH`` of a file, or ``npz:DIR`` of shards
      (prepared by ``seqclf prepare-data --dataset=npz:DIR``).
    data_dir: the tfds data dir (None: $TFDS_DATA_DIR or the default).
    validation_fraction: for an npz file without a validation split.
    splits: the splits to read.
    num_classes: the labels' bound; None: their own largest (a look at data
      no config describes yet: ``seqclf inspect-data``).
    lazy: leave a prepared dataset's sequences on disk (an npz file is
      read whole either way).
    missing: ``'refuse'``: NaN values are a ``DataError``; ``'impute'``:
      allowed (the model fills them).

  Returns:
    ``{split: arrays}``, labels and lengths as int32.
  """
  check_name(name)
  if is_shard_dir(name):
    data = npz_shards.open_splits(name[len(NPZ_PREFIX):], splits)
    if not lazy:
      data = {k: stream.materialize(v) for k, v in data.items()}
  elif name.startswith(NPZ_PREFIX):
    data = npz.load(name[len(NPZ_PREFIX):], validation_fraction)
    names = label_names(name)
    if num_classes is not None and len(names) > num_classes:
      # Else a name only one split holds shifts the others' labels.
      _fail(name, f'its labels name {len(names)} classes {names}, more than '
            f'num_classes={num_classes}: set config key `num_classes` to '
            f'{len(names)}.', arg='config.num_classes')
  elif lazy:
    data = prepared.open_datasets(data_dir, splits, name)
  else:
    data = prepared.load_datasets(data_dir, splits, name)
  data = {split: data[split] for split in splits}
  if num_classes is None:
    num_classes = classes_used(data)
  check(data, num_classes, name, missing)
  for arrays in data.values():
    for key in ('label', 'lengths'):
      if key in arrays:
        arrays[key] = arrays[key].astype(np.int32)
    if not stream.is_lazy(arrays['image']):  # (shards: when prepared)
      arrays['image'] = normalization.zero_padding(arrays)
  return data


def _fail(where: str, message: str, arg: str | None = None) -> None:
  raise DataError(f'{where}: {message}', arg=arg)


def classes_used(data: dict[str, Split]) -> int:
  """Classes 0..K-1 up to the largest label any split holds (K)."""
  return 1 + max((int(d['label'].max()) for d in data.values()
                  if len(d['label'])), default=0)


def check(data: dict[str, Split], num_classes: int, where: str,
          missing: str = 'refuse') -> None:
  """Checks every split against the contract (``seqclf.data.splits``).

  Args:
    data: ``{split: arrays}``.
    num_classes: labels must be in ``[0, num_classes)``.
    where: the data's name, for the message.
    missing: the config's ``missing``: NaN values are refused unless
      ``'impute'``; infinities always.

  Returns:
    None; a one-line ``DataError`` naming the array and the fix otherwise.
  """
  shape = None
  for split, arrays in data.items():
    x, y = arrays.get('image'), arrays.get('label')
    if x is None or y is None:
      _fail(where, f"split {split!r} lacks its sequences or labels.")
    if x.ndim != 3 or 0 in x.shape[1:]:
      _fail(where, f'{split} sequences must be (N, T, F) with T, F >= 1, got '
            f'shape {x.shape}: reshape univariate (N, T) data to (N, T, 1).')
    if not (x.dtype == np.uint8 or np.issubdtype(x.dtype, np.floating)):
      _fail(where, f'{split} sequences must be uint8 or float, got {x.dtype}.')
    lengths = arrays.get('lengths')
    if lengths is not None:
      if lengths.shape != (len(x),) or not np.issubdtype(lengths.dtype,
                                                         np.integer):
        _fail(where, f'{split} lengths must be {len(x)} integers (one per '
              f'sequence), got {lengths.dtype} of shape {lengths.shape}.')
      if len(lengths) and (lengths.min() < 1 or lengths.max() > x.shape[1]):
        _fail(where, f'{split} lengths must be in [1, T={x.shape[1]}], got '
              f'{lengths.min()}..{lengths.max()}.')
    # The padding past a row's length is never read: not checked.
    if np.issubdtype(x.dtype, np.floating):
      if stream.is_lazy(x):
        # Read lazily (streamed): refused inf and counted NaN when prepared;
        # no count (prepared before NaN was kept) means none.
        nan, rows = getattr(x, 'missing', None) or (0, 0)
      else:
        valid = normalization.valid_steps(arrays)[..., None]
        if (np.isinf(x) & valid).any():
          _fail(where, f'{split} sequences hold inf (or values beyond '
                "float32's range): fill, rescale or drop those values.")
        nan, rows = normalization.count_missing(x, lengths)
      if nan and missing != 'impute':
        _fail(where, f'{split} split holds {nan} NaN value(s) (in {rows} '
              "sequence(s)) and config key `missing` is 'refuse': set "
              "`missing='impute'` (filled inside the model, with a mask "
              'channel per feature), or fill or drop them.',
              arg='config.missing')
    if shape is not None and x.shape[1:] != shape:
      _fail(where, f'{split} sequences are {x.shape[1:]} per example but '
            f'{next(iter(data))} ones {shape}: every split needs the same '
            '(T, F), padded to the longest T.')
    shape = x.shape[1:]
    if y.shape != (len(x),):
      _fail(where, f'{split} labels must be {len(x)} integers (one per '
            f'sequence), got shape {y.shape}.')
    if not np.issubdtype(y.dtype, np.integer):
      _fail(where, f'{split} labels must be integer classes 0..K-1, got '
            f'{y.dtype}: store them as int (an npz file may hold strings '
            'instead, in every y array).')
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
      if y.min() < 0:
        fix = 'number the classes 0..K-1 (no negative labels)'
      else:
        fix = (f'set config key `num_classes` to {int(y.max()) + 1} (labels '
               '0..K-1)')
        if y.min() == 1 and y.max() == num_classes:  # MATLAB's, R's way
          fix = (f'they look counted from 1: subtract 1 from them, or {fix}')
      _fail(where, f'{split} labels must be in [0, num_classes={num_classes}),'
            f' got {y.min()}..{y.max()}: {fix}.', arg='config.num_classes')
  for split, arrays in data.items():  # Nothing to train on or to score.
    if not len(arrays['label']):
      _fail(where, f'the {split} split is empty: give it examples.')




def label_names(dataset: str) -> list[str]:
  """The class names the data itself gives: an npz file's string labels
  (``npz.label_names``), else [] (labels that are numbers)."""
  if dataset.startswith(NPZ_PREFIX) and not is_shard_dir(dataset):
    return npz.read_label_names(dataset[len(NPZ_PREFIX):])
  return []


def with_data_keys(config: ml_collections.ConfigDict,
                   datasets: dict[str, Split],
                   names: list[str]) -> ml_collections.ConfigDict:
  """A copy of ``config`` with the keys the data sets: ``data_digest``, so
  each checkpoint saves which data it was trained on and a resume on other
  data is refused; ``class_names`` from string labels (``names``); an
  ``npz:`` path made absolute, so ``evaluate`` and ``report`` find the data
  from any directory."""
  out = ml_collections.ConfigDict(config.to_dict())
  out.data_digest = digest(datasets)
  if out.dataset.startswith(NPZ_PREFIX):
    path = Path(out.dataset[len(NPZ_PREFIX):]).expanduser()
    if path.exists():
      out.dataset = f'{NPZ_PREFIX}{path.absolute()}'
  if names:
    if len(names) < out.num_classes:  # Outputs no name, no example has.
      raise ConfigError(
          f'The labels of {config.dataset} name {len(names)} classes {names}'
          f', fewer than num_classes={out.num_classes}: set config key '
          f'`num_classes` to {len(names)}.', arg='config.num_classes')
    if out.class_names and list(out.class_names) != names:
      raise ConfigError(
          f'Config key `class_names` is {list(out.class_names)}, but the '
          f'labels of {config.dataset} name the classes {names} (sorted): '
          'leave it empty.', arg='config.class_names')
    out.class_names = tuple(names)
  return out


def class_names(config: Any) -> list[str]:
  """The names of a config's ``num_classes`` classes by label: config key
  ``class_names`` (the training data's string labels), Fashion-MNIST's own,
  else the label numbers."""
  given = list(config.get('class_names', ()))
  if not given and config.dataset == 'fashion_mnist':
    given = list(fashion_mnist.CLASS_NAMES)
  return (given[:config.num_classes]
          + [str(c) for c in range(len(given), config.num_classes)])
