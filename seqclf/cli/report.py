"""``seqclf report``: a trained run's plots and ``report.md``.

``write_report(workdir)`` needs only the workdir (``results.json``,
``metrics.jsonl`` and the latest checkpoint) plus the test split, so it runs
after ``train`` and again later from ``seqclf report``.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorboardX
from absl import flags
from PIL import Image

from seqclf import errors, inference
from seqclf.cli import common, plots
from seqclf.data import registry, views
from seqclf.data.splits import Split
from seqclf.training import checkpoint, metrics

SUMMARY = '(Re)write WORKDIR/report.md and WORKDIR/plots/.'
USAGE = '--workdir DIR [--dataset npz:PATH]'
FLAGS = flags.FlagValues()
_WORKDIR = common.define_workdir(FLAGS)
_DATASET = common.define_moved_dataset(FLAGS)
PLOTS_DIR = 'plots'
REPORT_FILE = 'report.md'


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


def per_class_table(matrix: np.ndarray,
                    names: Sequence[str] | None = None) -> list[str]:
  """Markdown rows of each class's recall, precision and F1 in %, the
  classes headed by ``names`` (default: their numbers).

  A rate whose denominator is zero (a class absent from the test split, or
  never predicted) is undefined and shows '–', not a 0% that reads as a
  failure.
  """
  per_class = metrics.per_class(matrix)
  support, predicted = per_class['support'], per_class['predicted']
  row = lambda name, values, *counts: (f'| {name} | ' + ' | '.join(
      f'{100 * a:.1f}%' if any(c[k] for c in counts) else '–'
      for k, a in enumerate(values)) + ' |')
  names = names or [str(c) for c in range(len(matrix))]
  return ['| class | ' + ' | '.join(names) + ' |',
          '|---|' + '---|' * len(matrix),
          row('test accuracy (recall)', per_class['recall'], support),
          row('precision', per_class['precision'], predicted),
          row('F1', per_class['f1'], support, predicted)]


def _fmt(value: Any) -> str:
  if isinstance(value, float):
    return f'{value:.4g}' if abs(value) < 1e5 else f'{value:,.0f}'
  if isinstance(value, int) and not isinstance(value, bool):
    return f'{value:,}'
  return '`' + json.dumps(value) + '`' if not isinstance(value, str) else f'`{value}`'


def _markdown(workdir: Path, results: Mapping[str, Any], matrix: np.ndarray,
              images: Mapping[str, Path], recomputed_accuracy: float,
              names: Sequence[str]) -> str:
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
  if 'test_macro_f1' in results:
    lines += [f'Test macro-F1 {100 * results["test_macro_f1"]:.2f}%, '
              f'balanced accuracy '
              f'{100 * results["test_balanced_accuracy"]:.2f}%.', '']
  if results.get('best_step') is not None:
    # A sweep's chosen model has no last step's figures (its state is the best).
    last = ('; the last step\'s: test accuracy '
            f'{100 * results["last_test_accuracy"]:.2f}%, macro-F1 '
            f'{100 * results["last_test_macro_f1"]:.2f}%, balanced accuracy '
            f'{100 * results["last_test_balanced_accuracy"]:.2f}%'
            if 'last_test_accuracy' in results else '')
    lines += [f'These are the best checkpoint\'s (step '
              f'{results["best_step"]:,}, by {results["monitor"]}'
              + (', stopped early' if results.get('stopped_early') else '')
              + f'){last}.', '']
  chosen = results.get('chosen_by_sweep')
  if chosen:
    setting = ' '.join(f'{k}={v}' for k, v in chosen['setting'].items())
    folds = chosen['unit'].startswith('final-')  # trained after --cv
    lines += [f'Chosen by the sweep in `{chosen["workdir"]}` (setting '
              f'`{setting or "config"}`, seed {chosen["seed"]})'
              + ('; it trained on the whole training split, so its '
                 "validation figures are its cross-validation folds'"
                 if folds else '') + '.', '']
  if abs(recomputed_accuracy - results['test_accuracy']) > 1e-6:
    lines += [f'> Note: the plots below come from the checkpoint read, '
              f'whose test accuracy is {100 * recomputed_accuracy:.2f}%; '
              '`results.json` is from another run of this workdir.', '']
  lines += ['## How training went', '']
  if 'training_curves' in images:
    lines += ['Loss and accuracy against the number of training examples '
              'seen: minibatch values (faint), their moving average, '
              'validation at each evaluation and the final test point.', '',
              f'![Training curves]'
              f'({images["training_curves"].relative_to(workdir)})', '']
  else:  # A sweep's chosen model: its sweep logged the curves.
    lines += ['No training records in this workdir (`metrics.jsonl`): its '
              'curves are in the TensorBoard logs of the run that trained '
              'it' + (f' (`{chosen["workdir"]}/tensorboard/`)' if chosen
                      else '') + '.', '']
  lines += ['## What the model gets wrong', '']
  confusions = _top_confusions(matrix)
  if confusions:
    lines += ['Most frequent mistakes on the test set (true → predicted: '
              'count): ' + ', '.join(f'{names[t]} → {names[p]}: {n}'
                                     for t, p, n in confusions) + '.', '']
  lines += [*per_class_table(matrix, names), '',
            f'![Confusion matrix]({images["confusion_matrix"].relative_to(workdir)})',
            '',
            'The test examples with the lowest probability on their true '
            'class (caption: index, true → predicted, confidence in the '
            'prediction):', '',
            f'![Worst-classified test examples]'
            f'({images["worst_classified"].relative_to(workdir)})', '',
            '## Final metrics', '', '| metric | value |', '|---|---|']
  for key in sorted(results):  # per-split dicts: results.json
    if key != 'config' and not isinstance(results[key], dict):
      lines.append(f'| {key} | {_fmt(results[key])} |')
  lines += ['', '## Config', '', '| key | value |', '|---|---|']
  lines += [f'| {key} | `{json.dumps(config[key])}` |' for key in sorted(config)]
  lines += ['', 'Scalars and these plots are also in TensorBoard: '
            f'`tensorboard --logdir {workdir}` (`pip install '
            'tensorboard`).', '']
  return '\n'.join(lines)


def _model_scaling(config: Any) -> tuple[np.ndarray, np.ndarray] | None:
  """The (mean, std) the model standardizes each raw feature with, where it
  fitted per-channel statistics (its scalar step, then those); else None."""
  if not config.channel_mean:
    return None
  return (config.input_mean
          + config.input_std * np.asarray(config.channel_mean, np.float64),
          config.input_std * np.asarray(config.channel_std, np.float64))


def write_report(workdir: str | Path, *,
                 datasets: Mapping[str, Split] | None = None,
                 dataset: str | None = None,
                 tensorboard: bool = True, num_worst: int = 24) -> Report:
  """Writes ``workdir/plots/*.png`` and ``workdir/report.md``.

  Plots: training curves (from ``metrics.jsonl``), and, from the best (else latest)
  checkpoint's predictions on the test split, the confusion matrix and the
  worst-classified examples. ``datasets`` (as from ``load_datasets``) saves
  reloading MNIST; ``dataset`` names the run's ``npz:`` data where it is
  now, if it moved (``inference.evaluate``'s); with ``tensorboard`` the
  plots also go into the run's TensorBoard events as images.
  """
  workdir = Path(workdir).expanduser().resolve()
  results_path = workdir / 'results.json'
  if not results_path.exists() and checkpoint.checkpoint_dir(workdir).is_dir():
    raise errors.WorkdirError(
        f'{workdir} holds a model but no training record ({results_path.name}'
        '; a model saved by save_nnx_model has none): `seqclf evaluate '
        f'--workdir {shlex.quote(str(workdir))}` gives its test metrics, and '
        'a report needs a run that `seqclf train` wrote.')
  if not results_path.exists():
    raise errors.WorkdirError(
        f'{results_path} not found: train first with `seqclf train --workdir '
        f'{shlex.quote(str(workdir))}` (a report needs a finished run).')
  errors.writable_dir(workdir)  # for plots/ and report.md
  results = json.loads(results_path.read_text(encoding='utf-8'))
  model, params, config = inference.load_model(workdir, quiet=True)
  config.dataset = dataset or config.dataset
  if datasets is not None and 'test' in datasets:
    test = datasets['test']
  else:
    test = inference.run_data(config, ('test',))['test']
  probs = inference.predict_probabilities(
      model, params, views.view(config, test['image']),
      lengths=test.get('lengths'))
  matrix = plots.confusion_matrix(test['label'], probs.argmax(-1),
                                  config.num_classes)
  accuracy = float(np.trace(matrix) / matrix.sum())
  names = registry.class_names(config)

  out = workdir / PLOTS_DIR
  metrics = read_metrics(workdir / 'metrics.jsonl')
  figures = {
      **({'training_curves': lambda: plots.training_curves(
          metrics, config.batch_size, results.get('best_step'))}
         if metrics else {}),
      'confusion_matrix': lambda: plots.plot_confusion_matrix(
          matrix, f'Test confusion matrix: {int(np.trace(matrix)):,} of '
          f'{int(matrix.sum()):,} right ({100 * accuracy:.2f}%)', names),
      'worst_classified': lambda: plots.worst_classified(
          test['image'], test['label'], probs, num_worst,
          lengths=test.get('lengths'), standardize=_model_scaling(config),
          names=names),
  }
  images = {name: plots.save(make(), out / f'{name}.png')
            for name, make in figures.items()}
  if tensorboard:
    _log_images(workdir, images, int(results['step']))
  path = workdir / REPORT_FILE
  path.write_text(_markdown(workdir, results, matrix, images, accuracy, names),
                  encoding='utf-8')
  return Report(path=path, plots=images, confusion_matrix=matrix)


def write_and_say(workdir: str | Path, quiet: bool = False,
                  dataset: str | None = None) -> Report:
  """``write_report``, then one line saying where it is (unless quiet)."""
  written = write_report(workdir, dataset=dataset)
  if not quiet:
    print(f'Report: {written.path} (plots in {written.path.parent / PLOTS_DIR})')
  return written


def main(args: list[str]) -> None:
  del args
  write_and_say(common.require(_WORKDIR, 'report'), dataset=_DATASET.value)
