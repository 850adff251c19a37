"""The user's data larger than memory: a directory of shards (``npz:DIR``).

``DIR/train/``, ``DIR/test/`` and optionally ``DIR/validation/`` each hold
shards: ``NAME.npz`` files with arrays ``x`` (n, T, F), ``y`` (n,) and
optionally ``lengths`` (n,), or ``NAME_x.npy``/``NAME_y.npy``
(``NAME_lengths.npy``) files, read memory-mapped. ``prepare`` converts them
once, shard by shard (host memory bounded by one shard), into an ArrayRecord
tfds dataset in ``DIR/prepared/``, which ``seqclf.data.stream`` reads a batch
at a time. Shards of different T are zero-padded to the longest, their
lengths kept; without a validation directory, ``validation_fraction`` of the
training examples are carved out, stratified by class (``splits.carve``).
NaN on a valid step is kept, a missing value (config key ``missing`` decides
at train time, from the counts ``stream.Writer`` records); inf there is one
line naming the shard; NaN or inf past a row's length, never read, becomes 0.
A failed preparation leaves no partial copy (``prepared.tmp``) behind; a
shard added, removed or rewritten since (``source.json`` records each file's
size and modification time) is one line asking for ``--force``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from seqclf.data import normalization, npz, stream
from seqclf.data.splits import SPLITS, Split, carve
from seqclf.errors import DataError

PREPARED = 'prepared'  # DIR/prepared/: the tfds dataset


def _fail(where: Any, message: str) -> None:
  raise DataError(f'{where}: {message}', arg='config.dataset')


def prepared_dir(root: str | Path) -> Path:
  return Path(root).expanduser().resolve() / PREPARED


def prepare_command(root: str | Path) -> str:
  """The command line that prepares ``root``, quoted to paste into a shell."""
  return f'seqclf prepare-data {shlex.quote(f"--dataset=npz:{root}")}'


def _shards(split_dir: Path) -> list[tuple[Path, Any]]:
  """The shard files of a split directory (``.npz``, ``_x.npy``), by name."""
  out = []
  for f in sorted(split_dir.iterdir()):
    if f.suffix == '.npz':
      out.append(f)
    elif f.name.endswith('_x.npy'):
      out.append(f)
  return out


def _open(shard: Path) -> dict[str, np.ndarray]:
  """A shard's arrays (``.npy``: memory-mapped; ``.npz``: ``x`` read on use)."""
  path = shard  # the file being read, named if it cannot be
  try:
    if shard.suffix == '.npz':
      f = np.load(shard, allow_pickle=False)
      arrays = {k: f[k] for k in ('y', 'lengths') if k in f.files}
      if 'x' not in f.files or 'y' not in f.files:
        _fail(shard, f"a shard needs arrays 'x' and 'y', found {f.files}.")
      if wrong := npz.misnamed(f.files, ('x', 'y', 'lengths')):
        _fail(shard, f'arrays {wrong} are none of the names seqclf reads: '
              'x, y, lengths: rename them.')
      arrays['x'] = _LazyMember(f, 'x')
      return arrays
    stem = str(shard)[:-len('_x.npy')]
    arrays = {'x': np.load(shard, mmap_mode='r', allow_pickle=False)}
    for key in ('y', 'lengths'):
      path = Path(f'{stem}_{key}.npy')
      if path.exists():
        arrays[key] = np.load(path, allow_pickle=False)
    if 'y' not in arrays:
      _fail(shard, f'no labels beside it: write {stem}_y.npy.')
    return arrays
  except npz.LOAD_ERRORS as e:
    _fail(path, f'{npz.load_error(e)}.')


class _LazyMember:
  """An .npz member read when first used: its header gives shape and dtype."""

  def __init__(self, f: Any, key: str):
    self.f, self.key = f, key
    with f.zip.open(f'{key}.npy') as m:
      version = np.lib.format.read_magic(m)
      shape, _, dtype = (np.lib.format.read_array_header_1_0(m)
                         if version == (1, 0)
                         else np.lib.format.read_array_header_2_0(m))
    self.shape, self.dtype, self.ndim = shape, dtype, len(shape)

  def __len__(self) -> int:
    return self.shape[0]

  def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
    x = self.f[self.key]
    return x if dtype is None else x.astype(dtype)


def _scan(root: Path) -> dict[str, Any]:
  """Every shard checked for shape, dtype and labels, without reading ``x``."""
  splits, features, dtype, steps = {}, None, None, 0
  for split in SPLITS:
    split_dir = root / split
    if not split_dir.is_dir():
      if split == 'validation':
        continue
      _fail(f'npz:{root}', f'no {split}/ directory of shards: put {split} '
            'shards (NAME.npz with x, y[, lengths]) in DIR/train/ and '
            'DIR/test/ (DIR/validation/ optional).')
    shards = []
    for shard in _shards(split_dir):
      a = _open(shard)
      x, y = a['x'], a['y']
      if x.ndim != 3 or 0 in x.shape[1:]:
        _fail(shard, f'x must be (n, T, F) with T, F >= 1, got shape {x.shape}.')
      kind = 'uint8' if x.dtype == np.uint8 else (
          'float' if np.issubdtype(x.dtype, np.floating) else None)
      if kind is None:
        _fail(shard, f'x must be uint8 or float, got {x.dtype}.')
      if features is None:
        features, dtype, first = x.shape[2], kind, shard
      if x.shape[2] != features:
        _fail(shard, f'{x.shape[2]} features per step, but {first.name} has '
              f'{features}: every shard needs the same feature count.')
      if kind != dtype:
        _fail(shard, f'x is {x.dtype}, but {first.name} is {dtype}: store '
              'every shard in one dtype.')
      if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer):
        _fail(shard, f'y must be {len(x)} integer labels, got {y.dtype} of '
              f'shape {y.shape} (shards take classes 0..K-1; string labels '
              'only a single .npz file).')
      if len(y) and y.min() < 0:  # No num_classes makes them classes.
        _fail(shard, f'labels must be classes 0..K-1, got {int(y.min())}: '
              'number the classes 0..K-1 (no negative labels).')
      lengths = a.get('lengths')
      if lengths is not None and (
          lengths.shape != (len(x),) or len(x) and (
              lengths.min() < 1 or lengths.max() > x.shape[1])):
        _fail(shard, f'lengths must be {len(x)} integers in [1, '
              f'T={x.shape[1]}].')
      steps = max(steps, x.shape[1])
      shards.append({'path': shard, 'n': len(x), 'steps': x.shape[1],
                     'lengths': lengths is not None, 'y': np.asarray(y)})
    if not shards:
      _fail(split_dir, 'holds no shards (NAME.npz or NAME_x.npy).')
    splits[split] = shards
  has_lengths = any(s['lengths'] or s['steps'] != steps
                    for shards in splits.values() for s in shards)
  return {'splits': splits, 'features': features, 'steps': steps,
          'dtype': np.uint8 if dtype == 'uint8' else np.float32,
          'lengths': has_lengths}


def _finite_padding(x: np.ndarray, lengths: np.ndarray | None,
                    where: Path) -> np.ndarray:
  """``x`` with NaN or inf past each row's length set to 0
  (``normalization.zero_padding``), NaN on valid steps kept (missing
  values); inf on one is a one-line error."""
  if not np.issubdtype(x.dtype, np.floating):
    return x
  finite = np.isfinite(x)
  if finite.all():
    return x
  valid = normalization.valid_steps({'image': x, 'lengths': lengths})[..., None]
  inf = np.isinf(x) & valid
  if inf.any():
    _fail(where, f'x holds {int(inf.sum())} inf value(s) (in '
          f'{int(inf.any(axis=(1, 2)).sum())} sequence(s)) within their '
          'lengths: fill or drop them (NaN, a missing value, may stay: '
          'config key `missing`).')
  return normalization.zero_padding({'image': x, 'lengths': lengths})


def _examples(layout: dict[str, Any], split: str
              ) -> Iterator[tuple[np.ndarray, int, int]]:
  """(x, label, length) of every example of ``split``, one shard in memory."""
  steps = layout['steps']
  for shard in layout['splits'][split]:
    a = _open(shard['path'])
    lengths = a.get('lengths')
    # Cast first: a float64 value beyond float32's range is inf as stored.
    with np.errstate(over='ignore'):
      x = np.asarray(a['x']).astype(layout['dtype'], copy=False)
    x = _finite_padding(x, lengths, shard['path'])
    pad = steps - x.shape[1]
    for i in range(len(x)):
      xi = x[i]
      if pad:
        xi = np.pad(xi, ((0, pad), (0, 0)))
      yield xi, int(a['y'][i]), int(lengths[i] if lengths is not None
                                     else shard['steps'])
    del x, a


def prepare(root: str | Path, validation_fraction: float = 0.1,
            force: bool = False) -> Path:
  """Converts ``root``'s shards into ``root/prepared`` (a no-op when done).

  Args:
    root: the directory of ``train/``, ``test/`` (and ``validation/``) shards.
    validation_fraction: carved from train when there is no validation/.
    force: convert again even if prepared.

  Returns:
    The prepared dataset's directory.
  """
  root = Path(root).expanduser().resolve()
  out = prepared_dir(root)
  if (out / 'dataset_info.json').is_file() and not force:
    _check_unchanged(root)
    return out
  if not root.is_dir():
    _fail(f'npz:{root}', 'no such directory of shards.')
  with _preparing(root):
    return _prepare(root, out, validation_fraction)


def _prepare(root: Path, out: Path, validation_fraction: float) -> Path:
  files = _listing(root)  # before reading: a change while it runs shows
  layout = _scan(root)
  # Without a validation directory: a share of each class of train.
  carved = 'validation' not in layout['splits']
  if carved:
    labels = np.concatenate([s['y'] for s in layout['splits']['train']])
    val = carve(labels, validation_fraction)[1]
    if not len(val):
      _fail(f'npz:{root}', f'carving validation_fraction={validation_fraction}'
            ' of each class leaves validation empty (every class of the '
            f'{len(labels)} training examples has one): add a validation/ '
            'directory.')
    is_val = np.zeros(len(labels), bool)
    is_val[val] = True
  with stream.Writer(out, (layout['steps'], layout['features']),
                     layout['dtype'], layout['lengths'], SPLITS,
                     f'seqclf: shards of {root}') as writer:
    for split in ('train', 'test', 'validation'):
      if split == 'validation' and carved:
        continue
      for i, (x, y, length) in enumerate(_examples(layout, split)):
        target = ('validation' if carved and split == 'train' and is_val[i]
                  else split)
        writer.add(target, x, y, length)
    writer.close()
  (out / SOURCE).write_text(json.dumps({'root': str(root),
                                        'files': files}) + '\n')
  return out


SOURCE = 'source.json'  # DIR/prepared/source.json: the shards it was made of


def _listing(root: Path) -> dict[str, list[int]]:
  """Each shard file of ``root`` (``SPLIT/NAME``) with its size and
  modification time: what ``make`` and ``rsync`` tell a changed file by,
  without reading data larger than memory."""
  out = {}
  for split in SPLITS:
    if (root / split).is_dir():
      for f in sorted((root / split).iterdir()):
        if f.suffix in ('.npz', '.npy'):
          stat = f.stat()
          out[f'{split}/{f.name}'] = [stat.st_size, stat.st_mtime_ns]
  return out


def _check_unchanged(root: Path) -> None:
  """A ``DataError`` naming the shards added, removed or rewritten since
  ``root`` was prepared: the prepared copy would train on the old ones."""
  try:
    saved = json.loads((prepared_dir(root) / SOURCE).read_text())['files']
  except (OSError, ValueError, KeyError, TypeError):
    return  # prepared by an older seqclf: not recorded
  now = _listing(root)
  changes = [f'{k} {what}' for what, keys in (
      ('added', now.keys() - saved.keys()),
      ('removed', saved.keys() - now.keys()),
      ('rewritten', {k for k in now.keys() & saved.keys()
                     if now[k] != saved[k]})) for k in sorted(keys)]
  if changes:
    more = f' and {len(changes) - 3} more' if len(changes) > 3 else ''
    _fail(f'npz:{root}', f'shards changed since they were prepared '
          f'({", ".join(changes[:3])}{more}): run '
          f'`{prepare_command(root)} --force` to prepare them again.')


LOCK = 'prepared.lock'  # DIR/prepared.lock: held while DIR/prepared is read


def _lock_fd(root: Path) -> int | None:
  try:
    return os.open(root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
  except OSError:  # A read-only DIR: nobody can prepare it again either.
    return None


@contextlib.contextmanager
def reading(root: str | Path) -> Iterator[None]:
  """Held by a run for as long as it reads ``root``'s prepared copy (a
  shared ``flock``: runs read at once), so that preparing it again refuses
  rather than replace the files under the run; waits for a preparation
  running now. The kernel drops the lock of a process however it ends."""
  fd = _lock_fd(Path(root).expanduser().resolve())
  try:
    if fd is not None:
      fcntl.flock(fd, fcntl.LOCK_SH)
    yield
  finally:
    if fd is not None:
      os.close(fd)


@contextlib.contextmanager
def _preparing(root: Path) -> Iterator[None]:
  """The exclusive side of ``reading``: a one-line ``DataError`` while a run
  reads the prepared copy."""
  fd = _lock_fd(root)
  try:
    if fd is not None:
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        _fail(f'npz:{root}', 'a run is reading its prepared copy now: run '
              f'`{prepare_command(root)} --force` again once it ends.')
    yield
  finally:
    if fd is not None:
      os.close(fd)


def builder(root: str | Path) -> Any:
  """The prepared dataset of ``root`` (a ``DataError`` if not prepared)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  root = Path(root).expanduser().resolve()
  out = prepared_dir(root)
  stream.check_prepared(out, f'npz:{root}', prepare_command(root))
  _check_unchanged(root)
  return tfds.builder_from_directory(str(out))


def open_splits(root: str | Path, splits: tuple[str, ...] = SPLITS
                ) -> dict[str, Split]:
  """The prepared splits of ``root``, their sequences on disk."""
  b = builder(root)
  return {split: stream.open_split(b, split) for split in splits}
