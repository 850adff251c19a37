"""The dataset interface: which data a config names, loaded and checked.

A dataset is three splits (``SPLITS``), each a dict of numpy arrays:
``'image'`` (N, T, F) sequences, uint8 (images, read as pixels / 255) or
float (used as they are); ``'label'`` (N,) integer classes in
``[0, num_classes)``; optionally ``'lengths'`` (N,) the valid steps of each
sequence, in ``[1, T]``. The trainer puts the training split on the device
and gathers batches there from indices that are a pure function of (seed,
step), whatever the data.

``config.dataset`` names it: a prepared tfds dataset (``TFDS``: MNIST and
Fashion-MNIST; the UEA/UCR series of ``seqclf.timeseries``) or ``npz:PATH``,
the user's own arrays (``load_npz``). Bad data is one ``DataError`` line
naming the array and the fix. An image dataset is read as ``config.task``
says (``view``: its rows, or its pixels in raster or a permuted order): the
model reads sequences and knows nothing of images, and sequential and
permuted MNIST are MNIST's data read another way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from seqclf.errors import ConfigError, DataError

SPLITS = ('train', 'validation', 'test')
# Prepared with `seqclf prepare-data --dataset NAME` (seqclf.input_pipeline).
# The UEA/UCR archive problems of the aeon wheel (seqclf.timeseries): float
# series, per-channel standardized, with lengths.
TIMESERIES = ('uea_japanese_vowels', 'uea_basic_motions',
              'ucr_pickup_gesture_wiimote_z')
# 28 x 28 uint8 images, which the classifier reads as `config.task` says.
IMAGES = ('mnist', 'fashion_mnist')
IMAGE_SHAPE = (28, 28)  # one image's (T, F) read by rows (task 'row')
TFDS = (*IMAGES, *TIMESERIES)
NPZ_PREFIX = 'npz:'
# Seed of the permutation that carves validation (and test) splits out of an
# npz file without them: fixed, so every run of a config sees the same split.
SPLIT_SEED = 0
Split = dict[str, np.ndarray]


def check_name(name: str, task: str = 'row') -> None:
  """A ConfigError unless ``name`` is a known dataset or ``npz:PATH``, and
  ``task`` a view it has (the pixel views need images)."""
  if not (name in TFDS
          or (name.startswith(NPZ_PREFIX) and name[len(NPZ_PREFIX):])):
    raise ConfigError(f'Config key `dataset` must be one of {TFDS} or '
                      f"'npz:PATH' (your own arrays), got {name!r}.")
  if task != 'row' and name not in IMAGES:
    raise ConfigError(f"Config key `task`={task!r} reads an image's pixels "
                      f'one by one: only the image datasets {IMAGES} have '
                      f"them; {name!r} is read as it is, with task='row'.")


def view(config: Any, images: np.ndarray) -> np.ndarray:
  """``images`` read as ``config.task`` says (``seqclf.tasks``): (N, 28, 28)
  images become (N, 784, 1) pixel sequences for ``pixel`` and ``permuted``;
  ``row``, every dataset's default, returns them as they are. Applied where
  data meets the model (the trainer, evaluation, prediction), on the host,
  so ``load`` and the stored data stay the images."""
  if config.task == 'row':
    return images
  from seqclf import tasks  # pylint: disable=g-import-not-at-top
  return tasks.as_sequence(images, config.task, config.permutation_seed)


def view_splits(config: Any, data: dict[str, Split]) -> dict[str, Split]:
  """``view`` of every split's sequences (labels and lengths as they are)."""
  return {split: {**arrays, 'image': view(config, arrays['image'])}
          for split, arrays in data.items()}


def load(config: Any, splits: tuple[str, ...] = SPLITS) -> dict[str, Split]:
  """The ``splits`` of ``config.dataset``, checked against ``num_classes``."""
  check_name(config.dataset, config.task)
  return read(config.dataset, config.data_dir, config.validation_fraction,
              splits, config.num_classes)


def read(name: str, data_dir: str | None, validation_fraction: float,
         splits: tuple[str, ...] = SPLITS,
         num_classes: int | None = None) -> dict[str, Split]:
  """The ``splits`` of dataset ``name``, checked (labels against
  ``num_classes``; without it, against their own largest, for a look at
  data no config describes yet: ``seqclf inspect-data``)."""
  check_name(name)
  if name.startswith(NPZ_PREFIX):
    data = load_npz(name[len(NPZ_PREFIX):], validation_fraction)
  else:
    from seqclf import input_pipeline  # pylint: disable=g-import-not-at-top
    data = input_pipeline.load_datasets(data_dir, splits, name)
  data = {split: data[split] for split in splits}
  if num_classes is None:
    num_classes = 1 + max((int(d['label'].max()) for d in data.values()
                           if len(d['label'])), default=0)
  check(data, num_classes, name)
  for arrays in data.values():
    for key in ('label', 'lengths'):
      if key in arrays:
        arrays[key] = arrays[key].astype(np.int32)
  return data


def _fail(where: str, message: str) -> None:
  raise DataError(f'{where}: {message}')


def check(data: dict[str, Split], num_classes: int, where: str) -> None:
  """DataError (one line) unless every split follows the module's contract."""
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
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
      _fail(where, f'{split} sequences hold NaN or inf: fill or drop them.')
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
            f'{y.dtype}: store them as int.')
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
      _fail(where, f'{split} labels must be in [0, num_classes={num_classes}),'
            f' got {y.min()}..{y.max()}: set --config.num_classes='
            f'{max(int(y.max()) + 1, num_classes)} (labels 0..K-1).')
    lengths = arrays.get('lengths')
    if lengths is not None:
      if lengths.shape != (len(x),) or not np.issubdtype(lengths.dtype,
                                                         np.integer):
        _fail(where, f'{split} lengths must be {len(x)} integers (one per '
              f'sequence), got {lengths.dtype} of shape {lengths.shape}.')
      if len(lengths) and (lengths.min() < 1 or lengths.max() > x.shape[1]):
        _fail(where, f'{split} lengths must be in [1, T={x.shape[1]}], got '
              f'{lengths.min()}..{lengths.max()}.')
  if not len(data.get('train', {'label': [0]})['label']):
    _fail(where, 'the train split is empty.')


def _split_arrays(arrays: dict[str, np.ndarray], suffix: str,
                  where: str) -> Split:
  """One set of arrays, checked for one label (and length) per sequence
  before any split is carved from it."""
  out = {'image': arrays[f'x{suffix}'], 'label': arrays[f'y{suffix}']}
  if f'lengths{suffix}' in arrays:
    out['lengths'] = arrays[f'lengths{suffix}']
  if out['image'].ndim < 1:
    _fail(where, f'x{suffix} must be (N, T, F), got a scalar.')
  n = len(out['image'])
  for key, name in (('label', 'y'), ('lengths', 'lengths')):
    if key in out and out[key].shape != (n,):
      _fail(where, f'{name}{suffix} must be {n} integers (one per sequence '
            f'of x{suffix}), got shape {out[key].shape}.')
  return out


def _take(split: Split, index: np.ndarray) -> Split:
  return {k: v[index] for k, v in split.items()}


def load_npz(path: str | Path, validation_fraction: float) -> dict[str, Split]:
  """The splits of an ``.npz`` file of the user's own data.

  Either explicit splits, ``x_train``/``y_train``, ``x_test``/``y_test``
  and optionally ``x_validation``/``y_validation`` (with ``lengths_SPLIT``
  beside any of them); or one set ``x``/``y``/``lengths``. Missing splits are
  carved by a fixed permutation (``SPLIT_SEED``): validation from train, and
  for a single set first test, then validation, each ``validation_fraction``
  of the examples. Arrays are loaded without pickles.
  """
  path = Path(path).expanduser()
  where = f'npz:{path}'
  try:
    with np.load(path, allow_pickle=False) as f:
      arrays = {k: f[k] for k in f.files}
  except FileNotFoundError:
    raise DataError(f'{where}: no such file; give --config.dataset=npz:PATH '
                    'of an existing .npz file.') from None
  except (OSError, ValueError) as e:
    raise DataError(f'{where}: not a readable .npz file without pickles '
                    f'({e}); write it with numpy.savez.') from None
  for key, value in arrays.items():
    if value.dtype == object:
      _fail(where, f'array {key!r} holds Python objects: save numeric arrays.')
  rng = np.random.default_rng(SPLIT_SEED)

  def carve(split: Split, what: str) -> tuple[Split, Split]:
    n = len(split['label'])
    k = int(round(n * validation_fraction))
    if not 0 < k < n:
      _fail(where, f'carving a {what} split of validation_fraction='
            f'{validation_fraction} from {n} examples leaves one side empty: '
            f'give x_{what}/y_{what} or change the fraction.')
    order = rng.permutation(n)
    return _take(split, np.sort(order[k:])), _take(split, np.sort(order[:k]))

  if 'x_train' in arrays or 'y_train' in arrays:
    required = ('x_train', 'y_train', 'x_test', 'y_test')
    missing = [k for k in required if k not in arrays]
    if missing:
      _fail(where, f'explicit splits need {required}; missing {missing}.')
    data = {'train': _split_arrays(arrays, '_train', where),
            'test': _split_arrays(arrays, '_test', where)}
    if 'x_validation' in arrays:
      data['validation'] = _split_arrays(arrays, '_validation', where)
    else:
      data['train'], data['validation'] = carve(data['train'], 'validation')
  elif 'x' in arrays and 'y' in arrays:
    rest, test = carve(_split_arrays(arrays, '', where), 'test')
    train, validation = carve(rest, 'validation')
    data = {'train': train, 'validation': validation, 'test': test}
  else:
    _fail(where, f"needs arrays 'x' and 'y' (or x_train/y_train and "
          f'x_test/y_test), found {sorted(arrays)}.')
  for split in data.values():
    if np.issubdtype(split['image'].dtype, np.floating):
      split['image'] = split['image'].astype(np.float32)
  return data
