"""``seqclf inspect-data``: describe a dataset and plot samples of it.

Images get the reference notebook's printout and figures (sample grid,
stacked contours, an image as the row sequences the LSTM reads, class
balance); series their shapes, lengths, channel statistics and line plots.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from absl import flags

from seqclf import errors
from seqclf.cli import common, plots
from seqclf.config import base_config
from seqclf.data import normalization, registry
from seqclf.data.splits import SPLITS, Split

SUMMARY = ('Describe a dataset (shapes, lengths, channel statistics, classes) '
           'and plot samples as PNGs.')
USAGE = ('[--dataset NAME|npz:PATH] [--split test] [--indices 100 101 102] '
         '[--out DIR]')
TAKES_ARGS = True  # more sample indices: `--indices 100 101 102`
FLAGS = flags.FlagValues()
_DATASET = flags.DEFINE_string(
    'dataset', 'mnist', f'The dataset to describe: one of {", ".join(registry.TFDS)}'
    " (prepared), or 'npz:PATH' (your own arrays).", flag_values=FLAGS)
_DATA_DIR = common.define_data_dir(FLAGS)
_SPLIT = flags.DEFINE_enum('split', 'test', list(SPLITS), 'The split to sample.',
                           flag_values=FLAGS)
_INDICES = flags.DEFINE_list(
    'indices', None, 'Sample indices in the split (`--indices 100 101 102` '
    'or `--indices=100,101,102`; default: those, or the first three of a '
    'smaller split).', flag_values=FLAGS)
DEFAULT_INDICES = (100, 101, 102)
_OUT = flags.DEFINE_string('out', 'runs/inspect-data',
                           'Directory for the PNGs (created).',
                           flag_values=FLAGS)
SPLIT_NAMES = {'train': 'Train', 'validation': 'Validation', 'test': 'Test'}


def _class_balance(datasets: dict[str, dict[str, np.ndarray]],
                   num_classes: int) -> list[str]:
  """The examples per class of each split, as text lines (then a blank)."""
  lines = ['', 'Class balance (examples per class):',
           f'{"":<11}' + ''.join(f'{c:>7}' for c in range(num_classes))]
  for name, data in datasets.items():
    counts = np.bincount(data['label'], minlength=num_classes)
    lines.append(f'{name:<11}' + ''.join(f'{c:>7}' for c in counts))
  return [*lines, '']


def describe_data(datasets: Mapping[str, Split], split: str,
                  indices: Sequence[int], num_classes: int = 10) -> str:
  """The reference notebook's printout: split shapes, class balance, samples.

  Images are shown flattened, as TF1's ``read_data_sets`` held them, and as
  the (steps, features) sequences the LSTM reads; labels as one-hot shapes.
  """
  lines = []
  for name, data in datasets.items():
    n, steps, features = data['image'].shape
    title = SPLIT_NAMES.get(name, name.title())
    lines.append(f'{title + " Images:":<19} {str((n, steps * features)):<14} '
                 f'(read as {n} sequences of {steps} steps x {features} '
                 'features)')
    lines.append(f'{title + " Labels:":<19} {str((n, num_classes)):<14} '
                 '(one-hot)')
  lines += _class_balance(datasets, num_classes)
  labels = datasets[split]['label']
  for i in indices:
    vector = np.eye(num_classes, dtype=int)[labels[i]]
    lines.append(f'Sample: {i} - Class: {labels[i]} - Label Vector: '
                 f'{vector}')
  return '\n'.join(lines)


def check_indices(datasets: Mapping[str, Split], split: str,
                  indices: Sequence[int]) -> None:
  """Raises ``UsageError`` (a ValueError) naming the bad split or index and
  the valid range."""
  if split not in datasets:
    raise errors.UsageError(f'Unknown split {split!r}: use one of '
                            f'{", ".join(datasets)}.', arg='split')
  n = len(datasets[split]['label'])
  if not indices:
    raise errors.UsageError('Give at least one sample index, e.g. 100, 101, '
                            '102.', arg='indices')
  bad = [i for i in indices if not 0 <= i < n]
  if bad:
    raise errors.UsageError(f'Sample indices {bad} are outside the {split} '
                            f'split (0..{n - 1}): choose indices in that '
                            'range.', arg='indices')


def write_data_figures(datasets: Mapping[str, Split],
                       split: str, indices: Sequence[int],
                       out: str | Path, num_samples: int = 32) -> dict[str, Path]:
  """The exploration figures: sample grid, 3D stacked contours of
  ``indices``, the first of them as 28 row-sequences, and class balance."""
  check_indices(datasets, split, indices)
  out = Path(out).expanduser()
  data = datasets[split]
  images, labels = data['image'], data['label']
  grid = list(indices) + [i for i in range(num_samples) if i not in indices]
  figures = {
      'sample_digits': lambda: plots.sample_grid(
          images, labels, grid[:max(num_samples, len(indices))], split=split),
      'stacked_contours': lambda: plots.stacked_contours(images, labels,
                                                         indices),
      'row_sequences': lambda: plots.row_sequences(images[indices[0]],
                                                   int(labels[indices[0]])),
      'class_balance': lambda: plots.class_balance(
          {name: d['label'] for name, d in datasets.items()}),
  }
  return {name: plots.save(make(), out / f'{name}.png')
          for name, make in figures.items()}


def describe_series(datasets: Mapping[str, Split], name: str,
                    split: str, indices: Sequence[int],
                    max_channels: int = 16,
                    class_names: Sequence[str] = ()) -> str:
  """What sequence data holds: per split its shape, dtype and lengths
  (min / median / max), each channel's mean and std over the valid steps,
  the class counts (and ``class_names``, string labels' names), and the
  chosen samples' classes and lengths."""
  first = next(iter(datasets.values()))['image']
  num_classes = registry.classes_used(datasets)
  shown = min(first.shape[2], max_channels)
  features = first.shape[2]
  lines = [f'{name}: {first.dtype} sequences of {features} feature'
           f'{"s" if features != 1 else ""} per step', '',
           f'{"split":<11}{"(N, T, F)":<18}lengths min / median / max']
  for split_name, data in datasets.items():
    lengths = normalization.valid_steps(data).sum(axis=1)
    spread = (f'{lengths.min()} / {np.median(lengths):g} / {lengths.max()}'
              if len(lengths) else '-')
    given = '' if 'lengths' in data else ' (no lengths: all T)'
    lines.append(f'{split_name:<11}{str(data["image"].shape):<18}'
                 f'{spread}{given}')
  what = (f'first {shown} of {first.shape[2]} channels'
          if shown < first.shape[2] else 'per channel')
  lines += ['', f'Mean / std over valid steps ({what}):',
            f'{"":<17}' + ''.join(f'{c:>10}' for c in range(shown))]
  gaps = {}
  for split_name, data in datasets.items():
    # Over the observed values: a channel with gaps (NaN) has statistics.
    count, mean, std = normalization.observed_stats(data)
    steps = int(normalization.valid_steps(data).sum())
    rows = {'mean': mean, 'std': std}
    if (count < steps).any():
      gaps[split_name] = int((steps - count).sum())
      rows['NaN %'] = 100 * (1 - count / steps)
    for stat, row in rows.items():
      lines.append(f'{split_name + " " + stat:<17}' +
                   ''.join(f'{v:>10.3g}' for v in row[:shown]))
  if gaps:
    lines += ['', 'Missing values (NaN) on valid steps: ' + ', '.join(
        f'{k} {v}' for k, v in gaps.items()) + ". Config key `missing`: "
        "'refuse' (the default) stops on them, 'impute' fills them inside "
        'the model.']
  lines += _class_balance(datasets, num_classes)
  if class_names:
    lines += ['Classes (string labels, sorted): ' + ', '.join(
        f'{c} {n}' for c, n in enumerate(class_names)), '']
  data = datasets[split]
  lengths = normalization.valid_steps(data).sum(axis=1)
  named = lambda c: f'{c} ({class_names[c]})' if class_names else f'{c}'
  lines += [f'Sample: {i} - Class: {named(data["label"][i])} - Length: '
            f'{lengths[i]}' for i in indices]
  return '\n'.join(lines)


def write_series_figures(datasets: Mapping[str, Split],
                         split: str, indices: Sequence[int],
                         out: str | Path,
                         class_names: Sequence[str] = ()) -> dict[str, Path]:
  """Line plots of the chosen sequences (raw, and standardized per channel
  where the train split allows it) and the class balance, as PNGs, classes
  by ``class_names`` where given (string labels).

  The raw plot shows scales; where channels differ in scale it hides the
  small ones' shapes, which the standardized plot shows as the model reads
  them with ``normalize='per_channel'``.
  """
  check_indices(datasets, split, indices)
  out = Path(out).expanduser()
  data = datasets[split]
  num_classes = registry.classes_used(datasets)
  figures = {
      'sample_series': lambda: plots.sample_series(
          data['image'], data['label'], indices, data.get('lengths'),
          split=split, names=class_names),
      'class_balance': lambda: plots.class_balance(
          {name: d['label'] for name, d in datasets.items()}, num_classes,
          names=class_names),
  }
  try:
    stats = normalization.fit_channels(datasets['train'])
  except errors.DataError:  # a constant or never-observed channel
    pass
  else:
    figures['sample_series_standardized'] = lambda: plots.sample_series(
        data['image'], data['label'], indices, data.get('lengths'),
        split=split, standardize=stats, names=class_names)
  return {name: plots.save(make(), out / f'{name}.png')
          for name, make in figures.items()}


def main(extra: list[str]) -> None:
  try:
    indices = [int(i) for i in [*(_INDICES.value or []), *extra]]
  except ValueError as e:
    raise errors.UsageError(f'--indices takes whole numbers, e.g. --indices '
                            f'100 101 102 ({e}).') from e
  name = _DATASET.value
  try:
    registry.check_name(name)
  except errors.ConfigError:
    raise errors.UsageError(f'--dataset must be one of '
                            f"{', '.join(registry.TFDS)} or 'npz:PATH', got "
                            f'{name!r}.') from None
  data = registry.read(name, _DATA_DIR.value,
                       base_config().validation_fraction)
  if not indices:  # None given: samples the split has.
    n = len(data[_SPLIT.value]['label'])
    indices = (list(DEFAULT_INDICES) if n > max(DEFAULT_INDICES)
               else list(range(min(3, n))))
  check_indices(data, _SPLIT.value, indices)
  errors.writable_dir(_OUT.value, 'out')
  if name in registry.IMAGES:
    print(describe_data(data, _SPLIT.value, indices))
    paths = write_data_figures(data, _SPLIT.value, indices, _OUT.value)
  else:
    names = registry.label_names(name)
    print(describe_series(data, name, _SPLIT.value, indices,
                          class_names=names))
    paths = write_series_figures(data, _SPLIT.value, indices, _OUT.value,
                                 class_names=names)
  print('Wrote ' + ', '.join(str(p) for p in paths.values()))
