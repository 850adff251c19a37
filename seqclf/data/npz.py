"""The user's own arrays: an ``.npz`` file as a dataset (``npz:PATH``).

Either explicit splits, ``x_train``/``y_train``, ``x_test``/``y_test`` and
optionally ``x_validation``/``y_validation`` (with ``lengths_SPLIT`` beside
any of them); or one set ``x``/``y``/``lengths``. Missing splits are carved
stratified by class (``splits.carve``). Labels are integers 0..K-1, or
strings (``label_names``). Arrays are loaded without pickles;
``seqclf.data.registry.check`` then checks them like any dataset.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from seqclf.data.splits import Split, carve
from seqclf.errors import DataError


def pad(sequences: Sequence[np.ndarray], steps: int | None = None
        ) -> tuple[np.ndarray, np.ndarray]:
  """Sequences of different lengths as the arrays an ``npz:`` file holds.

  Zero-padded at the end, with each one's length, which the model reads
  each row up to: the padding is never read.

  Args:
    sequences: N arrays, each (T_i, F), or (T_i,) for one feature; T_i >= 1.
    steps: the padded length (default: the longest T_i).

  Returns:
    ``(x, lengths)``: (N, steps, F) float32 and (N,) int32, to save as
    ``np.savez(path, x=x, y=labels, lengths=lengths)``; a ``DataError``
    naming the first sequence that does not fit.
  """
  seqs = [np.asarray(s, np.float32) for s in sequences]
  seqs = [s[:, None] if s.ndim == 1 else s for s in seqs]
  if not seqs:
    raise DataError('pad: no sequences given.')
  for i, s in enumerate(seqs):
    if s.ndim != 2 or s.shape[1] != seqs[0].shape[1]:
      raise DataError(f'pad: sequence {i} has shape {s.shape}, but sequence 0 '
                      f'has {seqs[0].shape[1:]} features per step: give each '
                      'as (steps, features), with the same features.')
  lengths = np.array([len(s) for s in seqs], np.int32)
  steps = int(lengths.max()) if steps is None else steps
  for i, s in enumerate(seqs):
    if not 1 <= len(s) <= steps:
      raise DataError(f'pad: sequence {i} has {len(s)} steps, outside '
                      f'[1, steps={steps}].')
  x = np.zeros((len(seqs), steps, seqs[0].shape[1]), np.float32)
  for i, s in enumerate(seqs):
    x[i, :len(s)] = s
  return x, lengths


def _label_keys(keys: Iterable[str]) -> list[str]:
  """The label arrays among a file's arrays: ``y`` and ``y_SPLIT``."""
  return [k for k in keys if k == 'y' or k.startswith('y_')]


def label_names(arrays: dict[str, np.ndarray]) -> list[str]:
  """The class names of a file whose labels (``y``, ``y_SPLIT``) are all
  strings: their distinct values, sorted, label k the k-th ([] for any
  other labels). So a user's ``'walk'``/``'run'`` labels need no encoding,
  and the model's classes keep their names (config key ``class_names``)."""
  ys = [arrays[k] for k in _label_keys(arrays)]
  if not ys or any(y.dtype.kind not in 'US' for y in ys):
    return []
  return np.unique(np.concatenate([y.astype(str).ravel() for y in ys])
                   ).tolist()


def read_label_names(path: str | Path) -> list[str]:
  """``label_names`` of the ``.npz`` file ``path`` (reads its labels only)."""
  with np.load(Path(path).expanduser(), allow_pickle=False) as f:
    return label_names({k: f[k] for k in _label_keys(f.files)})


# What numpy raises for a file it cannot read: a damaged or truncated .npz
# is a zipfile.BadZipFile, a truncated .npy an EOFError or a ValueError.
LOAD_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile)


def load_error(e: Exception, kind: str = 'numpy file') -> str:
  """Why numpy could not load a file without pickles, and the fix: most
  often sequences of different lengths saved as an object array."""
  if 'Object arrays' in str(e):
    return ('it holds an object array (sequences of different lengths?): '
            'pad them into one (N, T, F) array and give each row\'s length '
            "in an array 'lengths' (seqclf.data.npz.pad does both)")
  if 'contains pickled' in str(e):  # numpy's guess for any other bytes
    return (f'not a readable {kind}: not what numpy.save/savez write (and '
            'seqclf loads no pickles); write it with numpy.save/savez')
  return (f'not a readable {kind} without pickles ({e}); write it with '
          'numpy.save/savez')


def _fail(where: str, message: str) -> None:
  raise DataError(f'{where}: {message}', arg='config.dataset')


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
  if not n and suffix in ('', '_train'):  # (Empty test splits: registry.check.)
    _fail(where, f'x{suffix} holds no sequences: give it examples.')
  for key, name in (('label', 'y'), ('lengths', 'lengths')):
    if key in out and out[key].shape != (n,):
      _fail(where, f'{name}{suffix} must be {n} integers (one per sequence '
            f'of x{suffix}), got shape {out[key].shape}.')
  # Before splits are carved by class: carving floats would say every
  # example is a class of its own.
  if out['label'].dtype.kind not in 'iuUS':
    _fail(where, f'y{suffix} must be integer classes 0..K-1 (or class '
          f'names), got {out["label"].dtype}: store them as int.')
  return out


SPLIT_NAMES = tuple(f'{a}{s}' for s in ('', '_train', '_validation', '_test')
                    for a in ('x', 'y', 'lengths'))
# Words of an array name that say it is meant as data, labels or lengths.
_MEANT = {'x', 'y', 'length', 'lengths', 'len', 'lens', 'seqlen', 'seqlens'}


def misnamed(names: Iterable[str], read: Sequence[str]) -> list[str]:
  """The arrays among ``names`` that look meant as data, labels or lengths
  (``x_val``, ``X_train``, ``seq_lengths``) but are none of the ``read``
  names, which would be ignored without a word. Others (``ids``) are not."""
  return [k for k in names if k not in read
          and _MEANT & set(re.split(r'[\W_]+', k.lower()))]


def _check_pairs(arrays: dict[str, np.ndarray], where: str) -> None:
  """Each split's ``x`` with its ``y`` (and ``lengths`` only beside an
  ``x``, for every split or none), and labels all names or all numbers, so
  that nothing given is silently ignored or misread."""
  if wrong := misnamed(arrays, SPLIT_NAMES):
    _fail(where, f'arrays {wrong} are none of the names seqclf reads: x, y, '
          'lengths (one set; splits carved), or x_SPLIT, y_SPLIT, '
          'lengths_SPLIT for SPLIT train, validation, test: rename them.')
  for suffix in ('', '_train', '_validation', '_test'):
    given = [f'{a}{suffix}' for a in ('x', 'y') if f'{a}{suffix}' in arrays]
    if len(given) == 1:
      other = ({'x', 'y'} - {given[0][0]}).pop() + suffix
      _fail(where, f'{given[0]} is given without {other}: give both, or '
            'neither.')
    if f'lengths{suffix}' in arrays and f'x{suffix}' not in arrays:
      _fail(where, f'lengths{suffix} is given without x{suffix}.')
  splits = [s for s in ('_train', '_validation', '_test') if f'x{s}' in arrays]
  with_lengths = [f'lengths{s}' for s in splits if f'lengths{s}' in arrays]
  if 0 < len(with_lengths) < len(splits):
    without = [f'lengths{s}' for s in splits if f'lengths{s}' not in arrays]
    # A split without them would read its padding as data.
    _fail(where, f'{", ".join(with_lengths)} given but not '
          f'{", ".join(without)}: give lengths for every split (T for a '
          'sequence that fills all T steps), or for none.')
  keys = _label_keys(arrays)
  names = [k for k in keys if arrays[k].dtype.kind in 'US']
  if names and len(names) < len(keys):
    numbers = sorted(set(keys) - set(names))
    _fail(where, f'the labels in {", ".join(names)} are class names but '
          f'those in {", ".join(numbers)} numbers: give every y array as '
          'names, or every one as numbers 0..K-1.')


def _take(split: Split, index: np.ndarray) -> Split:
  return {k: v[index] for k, v in split.items()}


def load(path: str | Path, validation_fraction: float) -> dict[str, Split]:
  """The splits of an ``.npz`` file of the user's own data.

  Either explicit splits, ``x_train``/``y_train``, ``x_test``/``y_test``
  and optionally ``x_validation``/``y_validation`` (with ``lengths_SPLIT``
  beside any of them); or one set ``x``/``y``/``lengths``. Missing splits are
  carved stratified by class (``splits.carve``): validation from train, and
  for a single set first test, then validation, each ``validation_fraction``
  of each class. String labels become their index in ``label_names``.
  Arrays are loaded without pickles.
  """
  path = Path(path).expanduser()
  where = f'npz:{path}'
  key = None
  try:
    with np.load(path, allow_pickle=False) as f:
      arrays = {}
      for key in f.files:
        arrays[key] = f[key]
  except FileNotFoundError:
    raise DataError(f'{where}: no such file; set config key `dataset` to '
                    "'npz:PATH' of an existing .npz file.",
                    arg='config.dataset') from None
  except LOAD_ERRORS as e:
    if key and _label_keys([key]) and 'Object arrays' in str(e):
      _fail(where, f'{key} is an object array: save labels as integers or '
            f'strings (np.array(labels, dtype=str)).')
    raise DataError(f'{where}: {load_error(e, ".npz file")}.',
                    arg='config.dataset') from None
  _check_pairs(arrays, where)
  names = label_names(arrays)
  if names:  # String labels as their index in the sorted names.
    for k in _label_keys(arrays):
      arrays[k] = np.searchsorted(names, arrays[k].astype(str)).astype(np.int32)

  def split_off(split: Split, what: str) -> tuple[Split, Split]:
    kept, carved = carve(split['label'], validation_fraction)
    if not len(carved):
      _fail(where, f'carving a {what} split of validation_fraction='
            f'{validation_fraction} of each class leaves it empty (a class '
            'of one example stays in training, and every class of '
            f'{len(split["label"])} examples has one): give x_{what}/y_{what}.')
    return _take(split, kept), _take(split, carved)

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
      data['train'], data['validation'] = split_off(data['train'],
                                                 'validation')
  elif 'x' in arrays and 'y' in arrays:
    rest, test = split_off(_split_arrays(arrays, '', where), 'test')
    train, validation = split_off(rest, 'validation')
    data = {'train': train, 'validation': validation, 'test': test}
  else:
    _fail(where, f"needs arrays 'x' and 'y' (or x_train/y_train and "
          f'x_test/y_test), found {sorted(arrays)}.')
  for split in data.values():
    if np.issubdtype(split['image'].dtype, np.floating):
      with np.errstate(over='ignore'):  # Past float32: inf, refused in one line.
        split['image'] = split['image'].astype(np.float32)
  return data
