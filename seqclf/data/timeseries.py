"""UEA/UCR archive time series from the ``aeon`` wheel, as tfds datasets.

The ``aeon`` package ships a few archive problems inside its wheel as ``.ts``
text files. seqclf reads those files, never imports aeon: aeon's own
dependencies (numba, scikit-learn, pandas) are heavy, and the wheel alone
(``pip download aeon==1.6.0 --no-deps``, about 6 MB) holds every byte needed.
The files are found in the manual dir (copied there from an installed aeon,
``pip install 'seqclf[timeseries]'``, or from an aeon wheel in the manual
dir) and pinned by SHA-256.

Splits: the archive's official test split; validation carved from the
official train split, stratified by class (``splits.carve``).
Variable-length series are zero-padded to the longest and carry
``lengths``. The values are the archive's, raw: the model standardizes
them itself (``normalize='per_channel'``, ``seqclf.data.normalization``), so
a trained model takes raw series. (Version 1.0.0 held them standardized in
the prepared data; its prepared files are not read by 2.0.0.)
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import shutil
import zipfile
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from seqclf.data import dataset_info, mnist_files, npz
from seqclf.data.splits import Split, carve
from seqclf.errors import DataError

AEON_VERSION = '1.6.0'
WHEEL = f'aeon-{AEON_VERSION}-py3-none-any.whl'
WHEEL_DATA = 'aeon/datasets/data'  # the .ts files' folder, in wheel and package
VALIDATION_FRACTION = 0.2  # of the official train split, per class


@dataclasses.dataclass(frozen=True)
class Problem:
  """One archive problem: its files' name and their pinned SHA-256s."""
  archive_name: str
  train_sha256: str
  test_sha256: str
  description: str

  def files(self) -> dict[str, str]:
    return {f'{self.archive_name}_TRAIN.ts': self.train_sha256,
            f'{self.archive_name}_TEST.ts': self.test_sha256}


# Pins: the SHA-256 of each file as the aeon 1.6.0 wheel holds it.
PROBLEMS = {
    'uea_japanese_vowels': Problem(
        'JapaneseVowels',
        '68a430eabd919cc77f40b1f5f3bc0dcafacc1486bca9260785aeb7d262cc78cd',
        'b3d41d6a0ca3bcad3afb9ca7d4365382aa51341e2e58bae2a574babdda5b9462',
        'UEA JapaneseVowels: 9 speakers, 12 LPC coefficients, lengths 7-29.'),
    'uea_basic_motions': Problem(
        'BasicMotions',
        '8dc43cc6306cb679c888c01e26f91772ac4441a916da43bac8b79734a538b9d6',
        '79213102bc6fca1a398ad98ce1185dff0208fa3d1465e687f48288946b0ff8dc',
        'UEA BasicMotions: 4 activities, 6 watch channels, length 100.'),
    'ucr_pickup_gesture_wiimote_z': Problem(
        'PickupGestureWiimoteZ',
        '4d303d9990df621c066fc454d62626e3721aed008462103500b86b1ac1ca92c8',
        'a9109bce918e48ee0e924e9cf2fdfdc4de364a3d88ec5e8aa44399ff08b11361',
        'UCR PickupGestureWiimoteZ: 10 gestures, univariate, variable '
        'length.'),
}


def _hint(directory: Path) -> str:
  return (f'run `pip download aeon=={AEON_VERSION} --no-deps -d {directory}` '
          "(or `pip install 'seqclf[timeseries]'`), then prepare-data again")


# ---- the .ts format -----------------------------------------------------------
def parse_ts(text: str, where: str) -> tuple[list[np.ndarray], list[str],
                                              list[str]]:
  """The series (each (T_i, C) float32), labels and declared class names.

  The archive's text format: ``#`` comments, ``@key value`` headers ending
  with ``@data``, then one case a line, channels separated by ``:``, values
  by ``,``, the class label last. Trailing NaNs (the padding some files
  carry) are cut; a NaN inside a series or channels of unequal length are
  a ``DataError``.
  """
  classes: list[str] | None = None
  series, labels, in_data = [], [], False
  for number, line in enumerate(text.splitlines(), 1):
    line = line.strip()
    if not line or line.startswith('#'):
      continue
    if not in_data:
      key, _, value = line.partition(' ')
      if key.lower() == '@classlabel':
        flag, *names = value.split()
        if flag.lower() == 'true':
          classes = names
      elif key.lower() == '@data':
        in_data = True
      continue
    *channels, label = line.split(':')
    try:
      values = [np.array([float(v) for v in c.split(',')], np.float32)
                for c in channels]
    except ValueError as e:
      raise DataError(f'{where}:{number}: unreadable value ({e}).') from None
    rows = []
    for v in values:
      valid = np.flatnonzero(~np.isnan(v))
      n = valid[-1] + 1 if len(valid) else 0
      if n == 0 or np.isnan(v[:n]).any():
        raise DataError(f'{where}:{number}: a channel is empty or has a '
                        'missing value inside it.')
      rows.append(v[:n])
    if len({len(r) for r in rows}) != 1:
      raise DataError(f'{where}:{number}: channels of unequal length.')
    series.append(np.stack(rows, axis=1))
    labels.append(label.strip())
  if classes is None or not series:
    raise DataError(f'{where}: no @classLabel header or no cases.')
  unknown = sorted(set(labels) - set(classes))
  if unknown:
    raise DataError(f'{where}: labels {unknown} not in @classLabel.')
  return series, labels, classes


# ---- the source files -----------------------------------------------------------
def _installed_aeon_data() -> Path | None:
  """The data folder of an installed aeon, found without importing it."""
  spec = importlib.util.find_spec('aeon')
  if spec is None or not spec.submodule_search_locations:
    return None
  return Path(list(spec.submodule_search_locations)[0]) / 'datasets' / 'data'


def _read_verified(path: Path, sha256: str, directory: Path) -> str:
  data = path.read_bytes()
  digest = hashlib.sha256(data).hexdigest()
  if digest != sha256:
    raise DataError(f'{path}: SHA-256 mismatch (got {digest[:16]}…, expected '
                    f'{sha256[:16]}…): not the aeon {AEON_VERSION} file; '
                    f'delete it, then {_hint(directory)}.')
  return data.decode('utf-8')


def ensure_files(directory: Path, name: str) -> Path:
  """Fills ``directory`` with ``name``'s two verified ``.ts`` files.

  Sources, in order: files already there, an aeon wheel in ``directory``
  (or its parent, the manual dir shared by every dataset), an installed
  aeon's package data.
  """
  problem = PROBLEMS[name]
  mnist_files.make_dir(directory)
  missing = [f for f in problem.files() if not (directory / f).exists()]
  wheels = [w for d in (directory, directory.parent)
            for w in sorted(d.glob('aeon-*.whl'))]
  for wheel in wheels:
    if not missing:
      break
    try:
      with zipfile.ZipFile(wheel) as z:
        for f in list(missing):
          member = f'{WHEEL_DATA}/{problem.archive_name}/{f}'
          if member in z.namelist():
            (directory / f).write_bytes(z.read(member))
            missing.remove(f)
    except (OSError, zipfile.BadZipFile) as e:
      raise DataError(f'{wheel}: not a readable wheel ({e}); delete it, '
                      f'then {_hint(directory.parent)}.') from None
  installed = _installed_aeon_data()
  for f in list(missing):
    source = installed and installed / problem.archive_name / f
    if source and source.exists():
      shutil.copyfile(source, directory / f)
      missing.remove(f)
  if missing:
    raise DataError(f'{name} needs {", ".join(missing)} from the aeon '
                    f'{AEON_VERSION} wheel, found in neither {directory} nor '
                    f'an installed aeon: {_hint(directory.parent)}.')
  for f, sha in problem.files().items():
    _read_verified(directory / f, sha, directory.parent)
  return directory


# ---- splits -----------------------------------------------------------------------
def build_splits(train_text: str, test_text: str, where: str
                 ) -> tuple[dict[str, Split], list[str]]:
  """The three raw, zero-padded splits of one problem and its classes."""
  train_series, train_labels, classes = parse_ts(train_text, f'{where} train')
  test_series, test_labels, _ = parse_ts(test_text, f'{where} test')
  channels = {s.shape[1] for s in train_series + test_series}
  if len(channels) != 1:
    raise DataError(f'{where}: series with {sorted(channels)} channels.')
  steps = max(len(s) for s in train_series + test_series)
  index = {c: i for i, c in enumerate(classes)}
  y = np.array([index[l] for l in train_labels], np.int32)
  train_idx, val_idx = carve(y, VALIDATION_FRACTION)

  def split(series, labels):
    x, lengths = npz.pad(series, steps)
    return {'image': x, 'label': np.asarray(labels, np.int32),
            'lengths': lengths}

  test_y = np.array([index[l] for l in test_labels], np.int32)
  return {'train': split([train_series[i] for i in train_idx], y[train_idx]),
          'validation': split([train_series[i] for i in val_idx], y[val_idx]),
          'test': split(test_series, test_y)}, classes


class SeqclfTimeSeries(tfds.core.GeneratorBasedBuilder):
  """One archive problem (``PROBLEM``) from its two pinned ``.ts`` files."""

  VERSION = tfds.core.Version('2.0.0')
  RELEASE_NOTES = {'1.0.0': 'Official test split; validation carved from '
                            'train; per-channel train standardization.',
                   '2.0.0': 'Raw values (the model standardizes them: '
                            "normalize='per_channel')."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f'Put {WHEEL} (`pip download aeon=={AEON_VERSION} --no-deps`) in the '
      'manual dir, or run `seqclf prepare-data --dataset=NAME`.')
  PROBLEM = ''  # a PROBLEMS key, set by each subclass

  def _texts(self, manual_dir: Path) -> tuple[str, str]:
    problem = PROBLEMS[self.PROBLEM]
    train, test = problem.files()
    return (_read_verified(manual_dir / train, problem.train_sha256,
                           manual_dir),
            _read_verified(manual_dir / test, problem.test_sha256, manual_dir))

  def _info(self) -> tfds.core.DatasetInfo:
    shape = SHAPES[self.PROBLEM]
    return dataset_info.DatasetInfo(
        builder=self,
        description=PROBLEMS[self.PROBLEM].description,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Tensor(shape=shape[1:], dtype=np.float32),
            'label': tfds.features.ClassLabel(num_classes=shape[0]),
            'lengths': tfds.features.Scalar(dtype=np.int32),
            'id': tfds.features.Scalar(dtype=np.int64),
        }),
        supervised_keys=('image', 'label'),
        homepage='https://www.timeseriesclassification.com/',
    )

  def _split_generators(self, dl_manager):
    splits, _ = build_splits(*self._texts(Path(dl_manager.manual_dir)),
                             self.PROBLEM)
    return {name: self._generate_examples(split)
            for name, split in splits.items()}

  def _generate_examples(self, split):
    for i in range(len(split['label'])):
      yield i, {'image': split['image'][i], 'label': int(split['label'][i]),
                'lengths': int(split['lengths'][i]), 'id': i}


# (num_classes, T, C) of each problem: tfds declares feature shapes up front.
SHAPES = {'uea_japanese_vowels': (9, 29, 12),
          'uea_basic_motions': (4, 100, 6),
          'ucr_pickup_gesture_wiimote_z': (10, 361, 1)}


def _builder_class(name: str) -> type[SeqclfTimeSeries]:
  camel = ''.join(part.title() for part in name.split('_'))
  return type(f'Seqclf{camel}', (SeqclfTimeSeries,),
              {'PROBLEM': name, '__module__': __name__})


BUILDERS = {name: _builder_class(name) for name in PROBLEMS}
