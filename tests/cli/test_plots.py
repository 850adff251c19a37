"""Plots, report.md, TensorBoard images and `seqclf inspect-data`."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from matplotlib.collections import PathCollection
from PIL import Image

from conftest import built_once, run_cli, tensorboard_tags
from seqclf.cli import inspect_data, plots, report

REPORT_PLOTS = ('training_curves', 'confusion_matrix', 'worst_classified')
DATA_PLOTS = ('sample_digits', 'stacked_contours', 'row_sequences',
              'class_balance')


@pytest.fixture(scope='module')
def reported(trained_workdir, mnist, tmp_path_factory):
  """A copy of the shared trained run, with its report written (once per
  test run; its Report kept beside it)."""

  def build(directory):
    shutil.copytree(trained_workdir, directory / 'run')
    written = report.write_report(directory / 'run', datasets=mnist)
    (directory / 'report.pickle').write_bytes(pickle.dumps(written))

  directory = built_once(tmp_path_factory, 'reported', build)
  return (directory / 'run',
          pickle.loads((directory / 'report.pickle').read_bytes()))


def assert_sensible_png(path: Path) -> None:
  assert path.is_file(), path
  with Image.open(path) as image:
    assert image.format == 'PNG'
    width, height = image.size
    assert 300 <= width <= 3000 and 200 <= height <= 3000, (path, image.size)
    low, high = image.convert('L').getextrema()
    assert high - low > 100, f'{path} is (nearly) blank'


@pytest.mark.slow
def test_report_writes_valid_pngs(reported):
  workdir, written = reported
  assert set(written.plots) == set(REPORT_PLOTS)
  for name in REPORT_PLOTS:
    assert written.plots[name] == workdir / 'plots' / f'{name}.png'
    assert_sensible_png(written.plots[name])


@pytest.mark.slow
def test_confusion_matrix_covers_the_test_set(reported, mnist):
  workdir, written = reported
  labels = mnist['test']['label']
  matrix = written.confusion_matrix
  assert matrix.shape == (10, 10)
  assert matrix.sum() == len(labels)
  np.testing.assert_array_equal(matrix.sum(axis=1),
                                np.bincount(labels, minlength=10))
  # The plotted predictions are the run's: same accuracy as train measured
  # (up to an example or two flipped by a different eval batch size).
  results = json.loads((workdir / 'results.json').read_text())
  assert abs(np.trace(matrix) / len(labels) - results['test_accuracy']) <= 2e-4


@pytest.mark.slow
def test_report_md_embeds_plots_config_and_metrics(reported):
  workdir, written = reported
  text = written.path.read_text()
  assert written.path == workdir / 'report.md'
  for name in REPORT_PLOTS:
    assert f'](plots/{name}.png)' in text
  results = json.loads((workdir / 'results.json').read_text())
  assert f'**{100 * results["test_accuracy"]:.2f}%**' in text
  assert f'| hidden_size | `{results["config"]["hidden_size"]}` |' in text


@pytest.mark.slow
def test_tensorboard_has_plots_and_scalars(reported):
  workdir, _ = reported
  tags = tensorboard_tags(workdir / 'tensorboard')
  for name in REPORT_PLOTS:
    assert tags.get(f'report/{name}') == {'image'}, sorted(tags)
  for name in ('loss', 'accuracy', 'learning_rate', 'examples_per_second'):
    assert tags.get(f'train/{name}') == {'scalar'}, sorted(tags)


def test_read_metrics_keeps_the_last_record_of_a_step(tmp_path):
  lines = [{'step': 20, 'kind': 'train', 'loss': 2.0},
           {'step': 10, 'kind': 'train', 'loss': 1.0},
           {'step': 20, 'kind': 'validation', 'loss': 5.0},
           {'step': 20, 'kind': 'train', 'loss': 0.5}]  # a resumed run
  path = tmp_path / 'metrics.jsonl'
  path.write_text(''.join(json.dumps(r) + '\n' for r in lines))
  metrics = report.read_metrics(path)
  assert [(r['step'], r['loss']) for r in metrics['train']] == [(10, 1.0),
                                                                (20, 0.5)]
  assert [r['loss'] for r in metrics['validation']] == [5.0]


def test_a_best_checkpoints_test_point_stands_at_its_step():
  """A monitored run's test figures are its best checkpoint's: the point
  stands at that step, marked, not at the last step."""
  metrics = {'train': [{'step': s, 'loss': 1.0 / s, 'accuracy': 0.5}
                       for s in (10, 20, 30)],
             'validation': [{'step': s, 'loss': 0.5, 'accuracy': 0.6}
                            for s in (10, 20, 30)],
             'test': [{'step': 30, 'loss': 0.4, 'accuracy': 0.7}]}
  test_x = lambda fig: [line.get_xdata().tolist() for line in
                        fig.axes[0].get_lines()
                        if line.get_label().startswith('test')]
  assert test_x(plots.training_curves(metrics, 4)) == [[120]]
  best = plots.training_curves(metrics, 4, best_step=20)
  assert test_x(best) == [[80]]
  assert 'best checkpoint (step 20)' in [
      line.get_label() for line in best.axes[0].get_lines()]


def test_confusion_matrix_counts_true_rows_predicted_columns():
  matrix = plots.confusion_matrix(np.array([0, 1, 1, 2, 2]),
                                  np.array([0, 2, 1, 2, 2]), 3)
  expected = np.zeros((3, 3), int)
  for true, pred in [(0, 0), (1, 2), (1, 1), (2, 2), (2, 2)]:
    expected[true, pred] += 1
  np.testing.assert_array_equal(matrix, expected)


def test_classes_are_shown_by_name_where_the_data_names_them():
  matrix = np.array([[3, 1], [0, 2]])
  assert report.per_class_table(matrix, ['rest', 'walk'])[0] == (
      '| class | rest | walk |')
  assert report.per_class_table(matrix)[0] == '| class | 0 | 1 |'
  ax = plots.plot_confusion_matrix(matrix, names=['rest', 'walk']).axes[0]
  assert [t.get_text() for t in ax.get_xticklabels()] == ['rest', 'walk']
  assert [t.get_text() for t in ax.get_yticklabels()] == ['rest', 'walk']


def test_per_class_rates_without_a_denominator_are_not_zero_percent():
  # Class 1 is in the test split but never predicted; class 2 neither.
  lines = report.per_class_table(np.array([[3, 0, 0], [2, 0, 0], [0, 0, 0]]))
  cells = {line.split(' | ')[0][2:]: line.strip('| ').split(' | ')[1:]
           for line in lines[2:]}
  assert cells['test accuracy (recall)'] == ['100.0%', '0.0%', '–']
  assert cells['precision'] == ['60.0%', '–', '–']
  assert cells['F1'] == ['75.0%', '0.0%', '–']


def test_worst_classified_draws_pixels_as_images_and_series_as_lines():
  rng = np.random.default_rng(0)
  labels = np.array([0, 1, 1, 0])
  probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
  order = [1, 3, 2, 0]  # lowest probability on the true class first
  pixels = rng.integers(0, 256, (4, 28, 28)).astype(np.uint8)
  fig = plots.worst_classified(pixels, labels, probs, 3)
  shown = [ax for ax in fig.axes if ax.images]
  assert len(shown) == 3 and not any(ax.get_lines() for ax in fig.axes)
  np.testing.assert_array_equal(shown[0].images[0].get_array(), pixels[1])
  series = rng.normal(5.0, 100.0, (4, 6, 2)).astype(np.float32)
  lengths = np.array([6, 4, 5, 3])
  scale = (np.array([5.0, 0.0]), np.array([100.0, 2.0]))
  fig = plots.worst_classified(series, labels, probs, 4, lengths=lengths,
                               standardize=scale)
  panels = [ax for ax in fig.axes if ax.get_visible() and ax.get_lines()]
  assert [ax.get_title().split(':')[0] for ax in panels] == [
      f'#{i}' for i in order]
  for ax, i in zip(panels, order):
    drawn = np.stack([line.get_ydata() for line in ax.get_lines()], -1)
    np.testing.assert_allclose(
        drawn, (series[i, :lengths[i]] - scale[0]) / scale[1], rtol=1e-6)
  assert panels[0].get_title().startswith('#1: 1 → 0\n')
  fig = plots.worst_classified(series, labels, probs, 4, lengths=lengths,
                               names=['rest', 'walk'])
  panels = [ax for ax in fig.axes if ax.get_visible() and ax.get_lines()]
  assert panels[0].get_title().startswith('#1: walk → rest\n')


def test_report_standardizes_series_as_the_model_does():
  """Its scalar step, then the fitted per-channel statistics, in one."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  config = ml_collections.ConfigDict(dict(
      input_mean=2.0, input_std=3.0, channel_mean=(1.0, -1.0),
      channel_std=(2.0, 0.5)))
  mean, std = report._model_scaling(config)  # pylint: disable=protected-access
  x = np.array([[7.0, -4.0], [0.0, 11.0]])
  model = ((x - 2.0) / 3.0 - np.array([1.0, -1.0])) / np.array([2.0, 0.5])
  np.testing.assert_allclose((x - mean) / std, model, rtol=1e-12)
  config.channel_mean = config.channel_std = ()
  assert report._model_scaling(config) is None  # pylint: disable=protected-access


def test_check_indices_names_the_problem(mnist):
  with pytest.raises(ValueError, match=r'outside the test split \(0\.\.9999\)'):
    inspect_data.check_indices(mnist, 'test', [5, len(mnist['test']['label'])])
  with pytest.raises(ValueError, match="Unknown split 'tset'"):
    inspect_data.check_indices(mnist, 'tset', [1])


@pytest.mark.slow
def test_inspect_data_cli(tmp_path, mnist):
  out = tmp_path / 'inspect'
  proc = run_cli('inspect-data', '--split', 'test', '--indices', '100', '101',
                 '102', '--out', str(out))
  assert proc.returncode == 0, proc.stderr
  n_train = len(mnist['train']['label'])
  assert f'Train Images:       ({n_train}, 784)' in proc.stdout
  assert f'Train Labels:       ({n_train}, 10)' in proc.stdout
  labels = mnist['test']['label']
  for i in (100, 101, 102):
    assert f'Sample: {i} - Class: {labels[i]} -' in proc.stdout
  counts = ''.join(f'{c:>7}' for c in np.bincount(labels, minlength=10))
  assert f'test       {counts}' in proc.stdout
  for name in DATA_PLOTS:
    assert_sensible_png(out / f'{name}.png')


def test_sweep_plot_shows_each_setting_on_the_metric_that_chose(tmp_path):
  summary = lambda *v: {'mean': float(np.mean(v)), 'std': float(np.std(v)),
                        'values': list(v)}
  rows = [{'name': 'lr=0.001', 'chosen': False,
           'validation': {'loss': summary(0.3, 0.4)}, 'test': {}},
          {'name': 'lr=0.01', 'chosen': True,
           'validation': {'loss': summary(0.2, 0.25)},
           'test': {'loss': summary(0.22, 0.28)}}]
  fig = plots.sweep_settings(rows, 'val_loss')
  ax = fig.axes[0]
  labels = ax.get_yticklabels()
  assert [t.get_text() for t in labels] == ['lr=0.001', 'lr=0.01 (chosen)']
  assert labels[1].get_fontweight() == 'bold'
  assert labels[0].get_fontweight() != 'bold'
  # Each seed's validation figure is a dot on its setting's row; the chosen
  # setting's test mean a ring beside them.
  points = [c.get_offsets().tolist() for c in ax.collections
            if isinstance(c, PathCollection)]  # scatter marks, not bars
  assert sorted(map(tuple, sum((p for p in points if len(p) == 2), []))) == [
      (0.2, 1.0), (0.25, 1.0), (0.3, 0.0), (0.4, 0.0)]
  assert [p for p in points if len(p) == 1] == [[[0.25, 1.0]]]
  assert 'lower is better' in ax.get_title()
  path = plots.save(fig, tmp_path / 'sweep.png')
  assert path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
