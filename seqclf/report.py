"""Reports people can look at: a trained run's plots and ``report.md``, and
the data-exploration figures of the reference notebook.

``write_report(workdir)`` needs only the workdir (``results.json``,
``metrics.jsonl`` and the latest checkpoint) plus the test split, so it runs
after ``train`` and again later from ``seqclf report``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from seqclf import datasets as dataset_lib
from seqclf import errors
from seqclf import input_pipeline
from seqclf import plots

PLOTS_DIR = 'plots'
REPORT_FILE = 'report.md'
SPLIT_NAMES = {'train': 'Train', 'validation': 'Validation', 'test': 'Test'}


@dataclasses.dataclass(frozen=True)
class Report:
  """What ``write_report`` produced."""
  path: Path                    # report.md
  plots: dict[str, Path]        # name -> PNG
  confusion_matrix: np.ndarray  # test counts, row = true, column = predicted


def read_metrics(path: str | Path) -> dict[str, list[dict[str, Any]]]:
  """``metrics.jsonl`` grouped by kind, sorted by step, one record per step.

  A resumed run appends again from its checkpoint's step; the later record
  of a step wins, so the curves show the run that produced the checkpoint.
  """
  by_kind: dict[str, dict[int, dict[str, Any]]] = {}
  path = Path(path)
  if path.exists():
    for line in path.read_text(encoding='utf-8').splitlines():
      if line.strip():
        record = json.loads(line)
        by_kind.setdefault(record['kind'], {})[record['step']] = record
  return {kind: [records[s] for s in sorted(records)]
          for kind, records in by_kind.items()}


def _log_images(workdir: Path, images: Mapping[str, Path], step: int) -> None:
  """Adds the PNGs to the run's TensorBoard events (IMAGES tab), as saved."""
  import tensorboardX  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  writer = tensorboardX.SummaryWriter(str(workdir / 'tensorboard'))
  try:
    for name, path in images.items():
      with Image.open(path) as image:
        pixels = np.asarray(image.convert('RGB'))
      writer.add_image(f'report/{name}', pixels, step, dataformats='HWC')
  finally:
    writer.close()


def _top_confusions(matrix: np.ndarray, count: int = 5) -> list[tuple[int, int, int]]:
  off = matrix.copy()
  np.fill_diagonal(off, 0)
  flat = np.argsort(-off, axis=None, kind='stable')[:count]
  pairs = [(*np.unravel_index(k, off.shape), ) for k in flat]
  return [(int(t), int(p), int(off[t, p])) for t, p in pairs if off[t, p]]


def _fmt(value: Any) -> str:
  if isinstance(value, float):
    return f'{value:.4g}' if abs(value) < 1e5 else f'{value:,.0f}'
  if isinstance(value, int) and not isinstance(value, bool):
    return f'{value:,}'
  return '`' + json.dumps(value) + '`' if not isinstance(value, str) else f'`{value}`'


def _markdown(workdir: Path, results: Mapping[str, Any], matrix: np.ndarray,
              images: Mapping[str, Path], recomputed_accuracy: float) -> str:
  """The report text; images are linked relative to the workdir."""
  config = results.get('config', {})
  speed = results.get('train_examples_per_second')
  lines = [
      f'# Training report: `{workdir.name}`', '',
      f'Test accuracy **{100 * results["test_accuracy"]:.2f}%** (loss '
      f'{results["test_loss"]:.4f}) after {results["step"]:,} steps '
      f'({results["examples_seen"]:,} examples seen); validation '
      f'{100 * results["val_accuracy"]:.2f}%. Wall time '
      f'{results["wall_seconds"]:.1f} s'
      + (f', training at {speed:,.0f} examples/s' if speed else '')
      + f' on {", ".join(results.get("devices", [])) or "?"}.', '']
  if abs(recomputed_accuracy - results['test_accuracy']) > 1e-6:
    lines += [f'> Note: the plots below come from the latest checkpoint, '
              f'whose test accuracy is {100 * recomputed_accuracy:.2f}%; '
              '`results.json` is from another run of this workdir.', '']
  lines += ['## How training went', '',
            'Loss and accuracy against the number of training examples seen: '
            'minibatch values (faint), their moving average, validation at '
            'each evaluation and the final test point.', '',
            f'![Training curves]({images["training_curves"].relative_to(workdir)})',
            '', '## What the model gets wrong', '']
  confusions = _top_confusions(matrix)
  if confusions:
    lines += ['Most frequent mistakes on the test set (true → predicted: '
              'count): ' + ', '.join(f'{t} → {p}: {n}' for t, p, n in confusions)
              + '.', '']
  per_class = np.diag(matrix) / np.maximum(matrix.sum(1), 1)
  lines += ['| class | ' + ' | '.join(map(str, range(len(matrix)))) + ' |',
            '|---|' + '---|' * len(matrix),
            '| test accuracy | ' + ' | '.join(f'{100 * a:.1f}%' for a in per_class)
            + ' |', '',
            f'![Confusion matrix]({images["confusion_matrix"].relative_to(workdir)})',
            '',
            'The test digits with the lowest probability on their true class '
            '(caption: index, true → predicted, confidence in the prediction):',
            '',
            f'![Worst-classified test digits]'
            f'({images["worst_classified"].relative_to(workdir)})', '',
            '## Final metrics', '', '| metric | value |', '|---|---|']
  for key in sorted(results):
    if key != 'config':
      lines.append(f'| {key} | {_fmt(results[key])} |')
  lines += ['', '## Config', '', '| key | value |', '|---|---|']
  lines += [f'| {key} | `{json.dumps(config[key])}` |' for key in sorted(config)]
  lines += ['', 'Scalars and these plots are also in TensorBoard: '
            f'`tensorboard --logdir {workdir}` (`pip install '
            'tensorboard`).', '']
  return '\n'.join(lines)


def write_report(workdir: str | Path, *,
                 datasets: Mapping[str, input_pipeline.Split] | None = None,
                 tensorboard: bool = True, num_worst: int = 24) -> Report:
  """Writes ``workdir/plots/*.png`` and ``workdir/report.md``.

  Plots: training curves (from ``metrics.jsonl``), and, from the latest
  checkpoint's predictions on the test split, the confusion matrix and the
  worst-classified digits. ``datasets`` (as from ``load_datasets``) saves
  reloading MNIST; with ``tensorboard`` the plots also go into the run's
  TensorBoard events as images.
  """
  from seqclf import inference  # pylint: disable=g-import-not-at-top
  workdir = Path(workdir).expanduser().resolve()
  results_path = workdir / 'results.json'
  if not results_path.exists():
    raise errors.WorkdirError(
        f'{results_path} not found: train first with `seqclf train --workdir '
        f'{workdir}` (a report needs a finished run).')
  errors.writable_dir(workdir)  # for plots/ and report.md
  results = json.loads(results_path.read_text(encoding='utf-8'))
  model, params, config = inference.load_model(workdir)
  if datasets is not None and 'test' in datasets:
    test = datasets['test']
  else:
    test = dataset_lib.load(config, ('test',))['test']
  probs = inference.predict_probabilities(
      model, params, dataset_lib.view(config, test['image']),
      lengths=test.get('lengths'))
  matrix = plots.confusion_matrix(test['label'], probs.argmax(-1),
                                  config.num_classes)
  accuracy = float(np.trace(matrix) / matrix.sum())

  out = workdir / PLOTS_DIR
  metrics = read_metrics(workdir / 'metrics.jsonl')
  figures = {
      'training_curves': lambda: plots.training_curves(metrics,
                                                       config.batch_size),
      'confusion_matrix': lambda: plots.plot_confusion_matrix(
          matrix, f'Test confusion matrix: {int(np.trace(matrix)):,} of '
          f'{int(matrix.sum()):,} right ({100 * accuracy:.2f}%)'),
      'worst_classified': lambda: plots.worst_classified(
          test['image'], test['label'], probs, num_worst),
  }
  images = {name: plots.save(make(), out / f'{name}.png')
            for name, make in figures.items()}
  if tensorboard:
    _log_images(workdir, images, int(results['step']))
  path = workdir / REPORT_FILE
  path.write_text(_markdown(workdir, results, matrix, images, accuracy),
                  encoding='utf-8')
  return Report(path=path, plots=images, confusion_matrix=matrix)


def _class_balance(datasets: dict[str, dict[str, np.ndarray]],
                   num_classes: int) -> list[str]:
  """The examples per class of each split, as text lines (then a blank)."""
  lines = ['', 'Class balance (examples per class):',
           f'{"":<11}' + ''.join(f'{c:>7}' for c in range(num_classes))]
  for name, data in datasets.items():
    counts = np.bincount(data['label'], minlength=num_classes)
    lines.append(f'{name:<11}' + ''.join(f'{c:>7}' for c in counts))
  return [*lines, '']


def describe_data(datasets: Mapping[str, input_pipeline.Split], split: str,
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


def check_indices(datasets: Mapping[str, input_pipeline.Split], split: str,
                  indices: Sequence[int]) -> None:
  """Raises ``UsageError`` (a ValueError) naming the bad split or index and
  the valid range."""
  if split not in datasets:
    raise errors.UsageError(f'Unknown split {split!r}: use one of '
                            f'{", ".join(datasets)}.')
  n = len(datasets[split]['label'])
  if not indices:
    raise errors.UsageError('Give at least one sample index, e.g. --indices '
                            '100 101 102.')
  bad = [i for i in indices if not 0 <= i < n]
  if bad:
    raise errors.UsageError(f'Sample indices {bad} are outside the {split} '
                            f'split (0..{n - 1}): choose indices in that '
                            'range.')


def write_data_figures(datasets: Mapping[str, input_pipeline.Split],
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


def _num_classes(datasets: Mapping[str, input_pipeline.Split]) -> int:
  """Classes 0..K-1 up to the largest label any split holds."""
  return 1 + max(int(d['label'].max()) for d in datasets.values()
                 if len(d['label']))


def _valid_steps(data: input_pipeline.Split) -> np.ndarray:
  """(N, T) True where a step is the example's own (not padding)."""
  n, steps = data['image'].shape[:2]
  lengths = data.get('lengths', np.full(n, steps))
  return np.arange(steps)[None, :] < np.asarray(lengths)[:, None]


def describe_series(datasets: Mapping[str, input_pipeline.Split], name: str,
                    split: str, indices: Sequence[int],
                    max_channels: int = 16) -> str:
  """What sequence data holds: per split its shape, dtype and lengths
  (min / median / max), each channel's mean and std over the valid steps,
  the class counts, and the chosen samples' classes and lengths."""
  first = next(iter(datasets.values()))['image']
  num_classes = _num_classes(datasets)
  shown = min(first.shape[2], max_channels)
  features = first.shape[2]
  lines = [f'{name}: {first.dtype} sequences of {features} feature'
           f'{"s" if features != 1 else ""} per step', '',
           f'{"split":<11}{"(N, T, F)":<18}lengths min / median / max']
  for split_name, data in datasets.items():
    lengths = _valid_steps(data).sum(axis=1)
    spread = (f'{lengths.min()} / {np.median(lengths):g} / {lengths.max()}'
              if len(lengths) else '-')
    given = '' if 'lengths' in data else ' (no lengths: all T)'
    lines.append(f'{split_name:<11}{str(data["image"].shape):<18}'
                 f'{spread}{given}')
  what = (f'first {shown} of {first.shape[2]} channels'
          if shown < first.shape[2] else 'per channel')
  lines += ['', f'Mean / std over valid steps ({what}):',
            f'{"":<17}' + ''.join(f'{c:>10}' for c in range(shown))]
  for split_name, data in datasets.items():
    values = data['image'][_valid_steps(data)][:, :shown].astype(np.float64)
    for stat, f in (('mean', np.mean), ('std', np.std)):
      row = f(values, axis=0) if len(values) else np.full(shown, np.nan)
      lines.append(f'{split_name + " " + stat:<17}' +
                   ''.join(f'{v:>10.3g}' for v in row))
  lines += _class_balance(datasets, num_classes)
  data = datasets[split]
  lengths = _valid_steps(data).sum(axis=1)
  lines += [f'Sample: {i} - Class: {data["label"][i]} - Length: {lengths[i]}'
            for i in indices]
  return '\n'.join(lines)


def write_series_figures(datasets: Mapping[str, input_pipeline.Split],
                         split: str, indices: Sequence[int],
                         out: str | Path) -> dict[str, Path]:
  """Line plots of the chosen sequences and the class balance, as PNGs."""
  check_indices(datasets, split, indices)
  out = Path(out).expanduser()
  data = datasets[split]
  num_classes = _num_classes(datasets)
  figures = {
      'sample_series': lambda: plots.sample_series(
          data['image'], data['label'], indices, data.get('lengths'),
          split=split),
      'class_balance': lambda: plots.class_balance(
          {name: d['label'] for name, d in datasets.items()}, num_classes),
  }
  return {name: plots.save(make(), out / f'{name}.png')
          for name, make in figures.items()}
