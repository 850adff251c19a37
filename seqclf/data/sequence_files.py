"""Sequences to classify, read from files: ``.npy``, ``.npz`` and ``.csv``.

``seqclf predict`` gives a model the examples of the data it was trained on
(``seqclf.data.splits``' contract): (T, F) sequences, uint8 (pixels, read as
/ 255) or float (raw values: the model applies its own standardization,
``normalize``; NaN only for a model trained with ``missing='impute'``). A
file holds

* ``.npy``: one (T, F) sequence or an (N, T, F) batch;
* ``.npz``: array ``x``, (T, F) or (N, T, F), and optionally ``lengths``
  (one int for a (T, F) ``x``, N for an (N, T, F) one), the valid steps
  of each (the rest is padding);
* ``.csv``: one sequence, T rows of F comma-separated numbers, optionally
  after one header line (a line with no number).

Arrays are loaded without pickles. ``fit`` checks the sequences against the
example shape a checkpoint's model reads (``seqclf.inference.input_shape``) and stacks
them, padding shorter ones with their lengths, the way the trainer reads
data with lengths. Bad input is one ``SequenceError`` line naming the file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from seqclf.data import images, normalization, npz
from seqclf.data.ops import to_float
from seqclf.data.splits import Split
from seqclf.errors import SequenceError

SUFFIXES = ('.npy', '.npz', '.csv')


@dataclasses.dataclass(frozen=True)
class Example:
  """One sequence of a file: where it came from, its values, valid steps."""
  name: str          # the file, or FILE[i] for the i-th of a batch
  values: np.ndarray  # (T, F) uint8 or float
  length: int         # valid steps, in [1, T]


def is_sequence_file(path: str | Path) -> bool:
  return Path(path).suffix.lower() in SUFFIXES


def _check_values(path: Path, x: np.ndarray, what: str) -> np.ndarray:
  if x.dtype != np.uint8 and not np.issubdtype(x.dtype, np.floating):
    raise SequenceError(f'{path}: {what} must be float (values as the model '
                        f'was trained on) or uint8 (pixels), got {x.dtype}: '
                        'save it as float32.')
  if x.ndim == 3 and not len(x):
    raise SequenceError(f'{path}: {what} holds no sequences (shape '
                        f'{x.shape}): give it at least one.')
  if x.ndim not in (2, 3) or 0 in x.shape:
    raise SequenceError(
        f'{path}: {what} must be one (T, F) sequence or an (N, T, F) batch '
        f'with T, F >= 1, got shape {x.shape}'
        + (': reshape univariate (T,) data to (T, 1).' if x.ndim == 1 else '.'))
  return x


def _check_missing(path: Path, examples: Sequence[Example], what: str,
                   allow_missing: bool) -> None:
  """Refuses inf, and NaN unless ``allow_missing``, within each example's
  valid steps: the padding past a length is never read."""
  if not np.issubdtype(examples[0].values.dtype, np.floating):
    return
  valid = [e.values[:e.length] for e in examples]
  # The model reads float32: a float64 past its range would be inf there.
  largest = np.finfo(np.float32).max
  if any((np.abs(v) > largest).any() for v in valid):
    raise SequenceError(f'{path}: {what} holds inf or values beyond '
                        "float32's range: drop or rescale those steps.")
  nan = sum(normalization.count_nan(e.values, e.length) for e in examples)
  if nan and not allow_missing:
    field = (' (an empty CSV field is one)' if path.suffix.lower() == '.csv'
             else '')
    raise SequenceError(
        f'{path}: {what} holds {nan} NaN value(s){field}: this model was not '
        "trained with missing='impute'; drop those steps, or pad with zeros "
        'and give lengths (.npz).')


def _examples(path: Path, x: np.ndarray, lengths: np.ndarray | None,
              what: str, allow_missing: bool) -> list[Example]:
  x = _check_values(path, x, what)
  single = x.ndim == 2
  batch = x[None] if single else x
  steps = batch.shape[1]
  if lengths is None:
    lengths = np.full(len(batch), steps)
  lengths = np.asarray(lengths).reshape(-1)
  if not np.issubdtype(lengths.dtype, np.integer) or len(lengths) != len(
      batch):
    raise SequenceError(f'{path}: lengths must be {len(batch)} integer(s), '
                        f'one per sequence of x, got {lengths.dtype} of shape '
                        f'{lengths.shape}.')
  if lengths.min() < 1 or lengths.max() > steps:
    raise SequenceError(f'{path}: lengths must be in [1, T={steps}], got '
                        f'{lengths.min()}..{lengths.max()}.')
  examples = [Example(str(path) if single else f'{path}[{i}]', seq, int(n))
              for i, (seq, n) in enumerate(zip(batch, lengths))]
  _check_missing(path, examples, what, allow_missing)
  return examples


def _read_csv(path: Path) -> np.ndarray:
  """T rows of F numbers, after at most one header line: a line in which no
  field is a number (so a first row with a typo is an error, not dropped).

  A byte-order mark is skipped; bytes that are not UTF-8 are read as
  U+FFFD, so a header in another encoding (Excel's Latin-1 "°C") is still a
  header, and such bytes among the numbers an error that says so.
  """
  text = path.read_bytes().decode('utf-8-sig', errors='replace')
  lines = [line for line in text.splitlines() if line.strip()]
  if lines and not any(_is_number(v) for v in lines[0].split(',')):
    lines = lines[1:]  # a header line
  if not lines:
    raise SequenceError(f'{path}: no rows of numbers: write one sequence as '
                        'T rows of F comma-separated numbers.')
  # An empty field is a missing value, as pandas and numpy's genfromtxt read it.
  lines = [','.join(v if v.strip() else 'nan' for v in line.split(','))
           for line in lines]
  try:
    return np.loadtxt(lines, delimiter=',', dtype=np.float32, ndmin=2)
  except ValueError as e:
    hint = ('; it is not UTF-8 text: save it as UTF-8 CSV'
            if '\ufffd' in text or '\x00' in text else '')
    why = str(e).split('; use ')[0]  # numpy's advice (usecols), not ours
    raise SequenceError(f'{path}: not T rows of F comma-separated numbers '
                        f'({why}){hint}.') from None


def _is_number(field: str) -> bool:
  try:
    float(field)
  except ValueError:
    return False
  return True


def read(path: str | Path, allow_missing: bool = False) -> list[Example]:
  """The sequences of one ``.npy``, ``.npz`` or ``.csv`` file (NaN values
  only if ``allow_missing``: a model with ``missing='impute'``)."""
  path = Path(path)
  if path.is_dir():
    raise SequenceError(f'{path} is a directory: give sequence files, e.g. '
                        f'{path}/*.npy.')
  if not path.is_file():
    raise SequenceError(f'{path}: no such file.')
  suffix = path.suffix.lower()
  if suffix not in SUFFIXES:
    raise SequenceError(f'{path}: not a sequence file: give {", ".join(SUFFIXES)}'
                        ' files (image files are for models of images).')
  if suffix == '.csv':
    return _examples(path, _read_csv(path), None, 'it', allow_missing)
  try:
    if suffix == '.npy':
      arrays = {'x': np.load(path, allow_pickle=False)}
    else:
      with np.load(path, allow_pickle=False) as f:
        names = f.files
        arrays = {k: f[k] for k in ('x', 'lengths') if k in names}
  except npz.LOAD_ERRORS as e:
    raise _unreadable(path, e) from None
  if suffix == '.npz' and (wrong := npz.misnamed(names, ('x', 'y', 'lengths'))):
    raise SequenceError(f'{path}: arrays {wrong} are none of the names '
                        'seqclf reads: x, lengths (and y): rename them.')
  if 'x' not in arrays:
    raise SequenceError(f"{path}: needs an array 'x' (and optionally "
                        f"'lengths'), found {sorted(names)}.")
  return _examples(path, arrays['x'], arrays.get('lengths'),
                   'its array' if suffix == '.npy' else "'x'", allow_missing)


def fit(examples: Sequence[Example], shape: tuple[int, int],
        fixed: bool, trained_on: str
        ) -> tuple[np.ndarray, np.ndarray | None]:
  """(N, T, F) float32 inputs and their (N,) lengths (None if every example
  is full-length) for a model reading examples of ``shape``.

  ``fixed`` (``inference.takes_images``): every example must be
  ``shape``; else only F must match and shorter examples are zero-padded to
  the longest, their lengths saying how many steps are theirs. uint8 values
  become pixels / 255, as the trainer reads them.
  """
  steps, features = shape
  for e in examples:
    t, f = e.values.shape
    if fixed and (t, f) != (steps, features):
      raise SequenceError(
          f'{e.name}: a ({t}, {f}) sequence, but this model (trained on '
          f'{trained_on}) reads ({steps}, {features}): give sequences of '
          f'{steps} steps x {features} features.')
    if f != features:
      hint = (': the file looks transposed, write T rows of F columns'
              if t == features else '')
      raise SequenceError(
          f'{e.name}: {f} features per step, but this model (trained on '
          f'{trained_on}) reads {features}{hint}.')
  longest = max(e.values.shape[0] for e in examples)
  x = np.zeros((len(examples), longest, features), np.float32)
  for i, e in enumerate(examples):
    x[i, :e.length] = to_float(e.values[:e.length])
  lengths = np.array([e.length for e in examples], np.int32)
  return x, None if (lengths == longest).all() else lengths


def predict_inputs(paths: Sequence[str], shape: tuple[int, int],
                   fixed: bool, trained_on: str, allow_missing: bool = False
                   ) -> tuple[list[str], np.ndarray, np.ndarray | None,
                              list[str]]:
  """(names, inputs, lengths, notes) for ``inference.predict_probabilities``
  from the files ``paths``, checked against a model's example ``shape``.

  Args:
    paths: files to read: sequence files (``SUFFIXES``) and, for a model of
      images (``fixed``), image files, read as MNIST-like digits
      (``seqclf.data.images.load_image``).
    shape: one example's (T, F) as the model reads it.
    fixed: every example must be ``shape`` (a model of images); else only F
      must match.
    trained_on: the model's dataset, for the messages.
    allow_missing: NaN values are allowed (a model trained with
      ``missing='impute'`` fills them); else refused.

  Returns:
    The examples' names, their (N, T, F) float32 values, their lengths (None
    when all are full) and a note for each image that was adjusted and
    each uint8 file given to a model of sequences.
  """
  examples, notes = [], []
  for path in paths:
    if fixed and not is_sequence_file(path):
      image, note = images.load_image(path)
      if note:
        notes.append(f'{path}: {note}')
      examples.append(Example(str(path), image, len(image)))
    else:
      read_here = read(path, allow_missing)
      if not fixed and read_here and read_here[0].values.dtype == np.uint8:
        notes.append(f'{path}: uint8 values, read as pixels / 255 (as seqclf '
                     'reads uint8 training data); if they are not pixels, '
                     'save them as float.')
      examples += read_here
  x, lengths = fit(examples, shape, fixed, trained_on)
  return [e.name for e in examples], x, lengths, notes


def _unreadable(path: Path, e: Exception) -> SequenceError:
  """Why numpy could not read ``path`` (``npz.LOAD_ERRORS``), as one line."""
  return SequenceError(
      f'{path}: {npz.load_error(e, f"{path.suffix.lower()} file")}.')


def labelled(path: str | Path, shape: tuple[int, int], fixed: bool,
             trained_on: str, class_names: Sequence[str], num_classes: int,
             allow_missing: bool = False) -> Split:
  """A labelled ``.npz`` file (``x``, ``y``, optionally ``lengths``) as a
  split to evaluate a model on: new data with known classes, read as
  ``predict_inputs`` reads ``x``.

  Args:
    path: the file.
    shape, fixed, trained_on, allow_missing: as ``predict_inputs``'.
    class_names: the model's classes by label (``registry.class_names``):
      string labels are looked up there.
    num_classes: integer labels must be in ``[0, num_classes)``.

  Returns:
    ``{'image', 'label'[, 'lengths']}``; a one-line ``SequenceError`` naming
    the file and the problem.
  """
  path = Path(path)
  if path.suffix.lower() != '.npz':
    raise SequenceError(f'{path}: evaluate reads a labelled .npz file (x, y, '
                        'optionally lengths); predict takes unlabelled files.')
  x, lengths = fit(read(path, allow_missing), shape, fixed, trained_on)
  try:
    with np.load(path, allow_pickle=False) as f:
      y = f['y'] if 'y' in f.files else None
  except npz.LOAD_ERRORS as e:
    raise _unreadable(path, e) from None
  if y is None or y.shape != (len(x),):
    raise SequenceError(f"{path}: needs labels 'y', one per sequence of x "
                        f'({len(x)}), found '
                        f'{"none" if y is None else f"shape {y.shape}"}.')
  if y.dtype.kind in 'US':
    names, given = list(class_names), y.astype(str).tolist()
    unknown = sorted(set(given) - set(names))
    if unknown:
      raise SequenceError(f'{path}: labels {unknown[:5]} are not classes of '
                          f'this model, whose classes are {names}.')
    y = np.array([names.index(v) for v in given])
  elif not np.issubdtype(y.dtype, np.integer):
    raise SequenceError(f'{path}: labels must be integer classes (or class '
                        f'names) of this model, got {y.dtype}.')
  elif y.min() < 0 or y.max() >= num_classes:
    raise SequenceError(f'{path}: labels must be in [0, {num_classes}), this '
                        f'model\'s classes, got {y.min()}..{y.max()}.')
  split = {'image': x, 'label': y.astype(np.int32)}
  if lengths is not None:
    split['lengths'] = lengths
  return split
