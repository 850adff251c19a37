"""Figures of the data and of a training run, rendered headless.

Every function takes numpy arrays or metric records and returns a
``matplotlib.figure.Figure`` built without pyplot, so nothing depends on a
display or on the global backend (figures render with Agg wherever they are
saved), and callers choose where a figure goes: a PNG, TensorBoard, a test.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps, colors, ticker
from matplotlib.figure import Figure

Record = Mapping[str, Any]
_GOOD, _BAD = '#1a7f37', '#cf222e'  # title colours: right / wrong prediction


def save(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
  """Writes ``fig`` as a PNG (Agg, tight bounding box) and returns the path."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=dpi, bbox_inches='tight', facecolor='white')
  return path


def _image(ax, image: np.ndarray) -> None:
  ax.imshow(image, cmap='gray', vmin=0, vmax=255 if image.dtype == np.uint8
            else 1.0, interpolation='nearest')
  ax.set_xticks([])
  ax.set_yticks([])


def digit_grid(images: np.ndarray, titles: Sequence[str], *, ncols: int = 8,
               title: str | None = None,
               title_colors: Sequence[str] | None = None) -> Figure:
  """Images (N, 28, 28) in a grid, each with its own caption."""
  n = len(images)
  ncols = max(1, min(ncols, n))
  nrows = max(1, -(-n // ncols))
  fig = Figure(figsize=(1.3 * ncols, 1.7 * nrows + (0.4 if title else 0)))
  axes = fig.subplots(nrows, ncols, squeeze=False)
  for k, ax in enumerate(axes.flat):
    if k >= n:
      ax.set_axis_off()
      continue
    _image(ax, images[k])
    ax.set_title(titles[k], fontsize=8,
                 color=title_colors[k] if title_colors else 'black')
  if title:
    fig.suptitle(title, fontsize=11)
  fig.tight_layout()
  return fig


def sample_grid(images: np.ndarray, labels: np.ndarray,
                indices: Sequence[int], *, split: str = 'test') -> Figure:
  """The digits at ``indices`` of a split, captioned with index and label."""
  indices = list(indices)
  return digit_grid(images[indices],
                    [f'#{i}: label {int(labels[i])}' for i in indices],
                    title=f'{split} samples')


def stacked_contours(images: np.ndarray, labels: np.ndarray,
                     indices: Sequence[int]) -> Figure:
  """The reference notebook's view: one digit flat, the chosen ones stacked in 3D.

  Each digit is a filled contour plane at its own height, the first on top,
  as in the notebook's ``contourf(..., zdir='z', offset=...)`` cell.
  """
  indices = list(indices)
  fig = Figure(figsize=(10, 4.6))
  ax = fig.add_subplot(1, 2, 1)
  _image(ax, images[indices[0]])
  ax.set_title(f'#{indices[0]}: label {int(labels[indices[0]])}')
  ax3 = fig.add_subplot(1, 2, 2, projection='3d')
  size = images.shape[1]
  # x runs along the columns, y up the rows, so each plane reads upright.
  x, y = np.meshgrid(np.arange(size), np.arange(size)[::-1])
  gap = 100
  top = gap * (len(indices) - 1)
  for k, i in enumerate(indices):
    z = top - gap * k
    ax3.contourf(x, y, images[i].astype(np.float32), 20, zdir='z', offset=z,
                 cmap='gray')
    ax3.text(-2, 0, z, f'#{i}: label {int(labels[i])}', fontsize=9,
             ha='right', va='center')
  ax3.set_xlim(0, size)
  ax3.set_ylim(0, size)
  ax3.set_zlim(0, max(top, 1))
  ax3.set_xticks([])
  ax3.set_yticks([])
  ax3.set_zticks([])
  ax3.view_init(elev=22, azim=-65)
  ax3.set_title('stacked as contour planes')
  fig.tight_layout()
  return fig


def row_sequences(image: np.ndarray, label: int | None = None) -> Figure:
  """One image as the LSTM reads it: 28 time steps, each a row of 28 pixels.

  Left: the image with its rows numbered; right: each row's intensities as
  a trace, time step 0 at the top, so the sequence reads top to bottom.
  """
  steps, features = image.shape
  values = image.astype(np.float32) / (255.0 if image.dtype == np.uint8 else 1.0)
  fig = Figure(figsize=(10, 5.6))
  left, right = fig.subplots(1, 2, gridspec_kw={'width_ratios': [1, 1.2]})
  _image(left, image)
  left.set_yticks(range(0, steps, 3))
  left.set_yticklabels([f't={t}' for t in range(0, steps, 3)], fontsize=8)
  left.set_title('image' + (f' (label {label})' if label is not None else ''))
  cmap = colors.LinearSegmentedColormap.from_list('rows', ['#4c72b0', '#dd8452'])
  cols = np.arange(features)
  for t in range(steps):
    base = steps - 1 - t
    color = cmap(t / max(steps - 1, 1))
    right.fill_between(cols, base, base + 0.9 * values[t], color=color,
                       alpha=0.55, linewidth=0)
    right.plot(cols, base + 0.9 * values[t], color=color, linewidth=0.8)
  right.set_yticks([steps - 1 - t for t in range(0, steps, 3)])
  right.set_yticklabels([f't={t}' for t in range(0, steps, 3)], fontsize=8)
  right.set_xlim(0, features - 1)
  right.set_ylim(-0.2, steps + 0.2)
  right.set_xlabel('feature (pixel column)')
  right.set_title(f'{steps} time steps x {features} features')
  for side in ('top', 'right'):
    right.spines[side].set_visible(False)
  fig.suptitle('How the LSTM reads an image: one row per time step')
  fig.tight_layout()
  return fig


def series_grid(series: np.ndarray, indices: Sequence[int],
                titles: Sequence[str], *,
                lengths: np.ndarray | None = None, ncols: int = 3,
                title: str = '', title_colors: Sequence[str] | None = None,
                standardize: tuple[np.ndarray, np.ndarray] | None = None,
                max_legend: int = 20) -> Figure:
  """The sequences at ``indices``, one captioned panel each: every feature
  (channel) a line over the example's valid steps (its ``lengths``; the
  padding is not drawn); with ``standardize=(mean, std)``, each feature as
  ``(x - mean) / std``."""
  indices = list(indices)
  features = series.shape[2]
  ncols = max(1, min(len(indices), ncols))
  nrows = max(1, -(-len(indices) // ncols))
  fig = Figure(figsize=(4.2 * ncols, 2.8 * nrows + 0.6))
  axes = np.asarray(fig.subplots(nrows, ncols, squeeze=False,
                                 sharex=True)).ravel()
  # Distinct colours while there are few features, a gradient past 20.
  cmap = colormaps['tab10' if features <= 10 else 'tab20' if features <= 20
                   else 'viridis']
  shade = [cmap(k if features <= 20 else k / (features - 1))
           for k in range(features)]
  for n, (ax, i) in enumerate(zip(axes, indices)):
    steps = series.shape[1] if lengths is None else int(lengths[i])
    values = np.asarray(series[i, :steps], np.float64)
    if series.dtype == np.uint8:  # pixels, read as the model reads them
      values = values / 255.0
    if standardize is not None:
      values = (values - standardize[0]) / standardize[1]
    for k in range(features):
      ax.plot(np.arange(steps), values[:, k], color=shade[k],
              linewidth=1.0, label=f'feature {k}')
    ax.set_title(titles[n], fontsize=9,
                 color=title_colors[n] if title_colors else 'black')
    ax.grid(alpha=0.3)
  for ax in axes[len(indices):]:
    ax.set_visible(False)
  for k, ax in enumerate(axes[:len(indices)]):
    if k + ncols >= len(indices):  # the lowest panel of its column
      ax.set_xlabel('time step')
      ax.xaxis.set_tick_params(labelbottom=True)
      ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  if 1 < features <= max_legend:  # below the panels, hiding no data
    fig.legend(*axes[0].get_legend_handles_labels(), loc='upper center',
               bbox_to_anchor=(0.5, 0.0), ncols=min(features, 6), fontsize=8)
  return fig


def sample_series(series: np.ndarray, labels: np.ndarray,
                  indices: Sequence[int], lengths: np.ndarray | None = None,
                  *, split: str = 'test',
                  standardize: tuple[np.ndarray, np.ndarray] | None = None,
                  names: Sequence[str] = ()) -> Figure:
  """The sequences at ``indices`` of a split, captioned with index, label
  (its name in ``names``, if given) and length, so shapes, scales and
  lengths compare at a glance (``standardize``: as in ``series_grid``, with
  the train split's statistics)."""
  indices = list(indices)
  label = lambda i: names[labels[i]] if names else int(labels[i])
  features = series.shape[2]
  steps = lambda i: series.shape[1] if lengths is None else int(lengths[i])
  return series_grid(
      series, indices,
      [f'#{i}: label {label(i)} ({steps(i)} steps)' for i in indices],
      lengths=lengths, standardize=standardize,
      title=f'{split} samples: {features} feature'
      f'{"s" if features != 1 else ""} per time step'
      + (', standardized per channel (train split statistics)'
         if standardize is not None else ''))


def class_balance(labels_by_split: Mapping[str, np.ndarray],
                  num_classes: int = 10, names: Sequence[str] = ()) -> Figure:
  """Share of each class per split, to spot imbalance at a glance (classes
  by ``names`` where given)."""
  fig = Figure(figsize=(8, 3.4))
  ax = fig.subplots()
  width = 0.8 / max(len(labels_by_split), 1)
  for k, (split, labels) in enumerate(labels_by_split.items()):
    counts = np.bincount(labels, minlength=num_classes)
    ax.bar(np.arange(num_classes) + (k - (len(labels_by_split) - 1) / 2) * width,
           100 * counts / counts.sum(), width, label=f'{split} ({len(labels):,})')
  ax.axhline(100 / num_classes, color='gray', linewidth=0.8, linestyle='--')
  ax.set_xticks(range(num_classes), names or None)
  ax.set_xlabel('class')
  ax.set_ylabel('% of split')
  ax.set_title('Class balance')
  ax.set_ylim(0, ax.get_ylim()[1] * 1.2)  # headroom for the legend
  ax.legend(fontsize=8, ncols=len(labels_by_split), loc='upper center')
  fig.tight_layout()
  return fig


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
  """Trailing moving average (shorter at the start), so curves stay aligned."""
  if len(values) == 0 or window <= 1:
    return values
  cumsum = np.cumsum(np.insert(values, 0, 0.0))
  counts = np.minimum(np.arange(1, len(values) + 1), window)
  starts = np.arange(1, len(values) + 1) - counts
  return (cumsum[1:] - cumsum[starts]) / counts


def training_curves(metrics: Mapping[str, Sequence[Record]],
                    batch_size: int, best_step: int | None = None) -> Figure:
  """Loss and accuracy against examples seen: train (raw and smoothed),
  validation, and the final test point.

  ``metrics`` maps a kind (``train``, ``validation``, ``test``) to records
  with ``step`` and the metric values, as in ``metrics.jsonl``. With
  ``best_step`` (a run whose result is its best checkpoint) the test point,
  which is that checkpoint's, stands at that step, marked by a line.
  """
  fig = Figure(figsize=(11, 4))
  axes = fig.subplots(1, 2)
  train = list(metrics.get('train', ()))
  for ax, name in zip(axes, ('loss', 'accuracy')):
    if train:
      x = np.array([r['step'] for r in train]) * batch_size
      y = np.array([r[name] for r in train], np.float64)
      ax.plot(x, y, color='#4c72b0', alpha=0.3, linewidth=0.8)
      ax.plot(x, _smooth(y, max(1, len(y) // 20)), color='#4c72b0',
              linewidth=1.8, label='train (minibatch, smoothed)')
    for kind, style in (('validation', dict(color='#dd8452', marker='o')),
                        ('test', dict(color='#c44e52', marker='*',
                                      markersize=12, linestyle='none'))):
      records = list(metrics.get(kind, ()))
      if records:
        x = np.array([r['step'] if kind != 'test' or best_step is None
                      else best_step for r in records]) * batch_size
        y = [r[name] for r in records]
        label = kind if kind != 'test' else f'test ({y[-1]:.4g})'
        ax.plot(x, y, label=label, **style)
    if best_step is not None:
      ax.axvline(best_step * batch_size, color='#55a868', linestyle=':',
                 label=f'best checkpoint (step {best_step:,})')
    ax.set_xlabel('examples seen')
    ax.set_title(name)
    ax.grid(alpha=0.3)
    ax.xaxis.set_major_formatter(
        lambda v, _: f'{v / 1000:g}k' if v else '0')
  losses = [y for line in axes[0].get_lines() for y in line.get_ydata()]
  low, high = (min(losses), max(losses)) if losses else (0, 0)
  if low > 0 and high / low > 10:  # log scale only when it spans a decade
    axes[0].set_yscale('log')
    axes[0].yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    axes[0].yaxis.set_major_formatter(ticker.FormatStrFormatter('%g'))
    axes[0].yaxis.set_minor_formatter(ticker.NullFormatter())
  axes[0].set_ylabel('cross-entropy' + (' (log scale)'
                                        if axes[0].get_yscale() == 'log' else ''))
  axes[1].set_ylabel('fraction correct')
  axes[1].set_ylim(top=1.0)
  if axes[1].get_legend_handles_labels()[0]:  # an empty metrics.jsonl has none
    axes[1].legend(loc='best', fontsize=9)
  fig.tight_layout()
  return fig


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray,
                     num_classes: int) -> np.ndarray:
  """Counts (num_classes, num_classes); row = true class, column = predicted."""
  labels, predictions = np.asarray(labels), np.asarray(predictions)
  flat = labels.astype(np.int64) * num_classes + predictions
  return np.bincount(flat, minlength=num_classes ** 2).reshape(
      num_classes, num_classes)


def plot_confusion_matrix(matrix: np.ndarray, title: str = '',
                          names: Sequence[str] | None = None) -> Figure:
  """Counts in every cell; colour on a log scale so rare mistakes still show.
  The classes are labelled by ``names`` (default: their numbers)."""
  n = len(matrix)
  fig = Figure(figsize=(6.2, 5.4))
  ax = fig.subplots()
  shown = np.ma.masked_equal(matrix, 0)
  image = ax.imshow(shown, cmap='Blues',
                    norm=colors.LogNorm(vmin=1, vmax=max(matrix.max(), 2)))
  threshold = np.sqrt(max(matrix.max(), 1))  # the colour scale's midpoint
  for i in range(n):
    for j in range(n):
      if matrix[i, j]:
        ax.text(j, i, str(matrix[i, j]), ha='center', va='center', fontsize=8,
                color='white' if matrix[i, j] > threshold else 'black')
  names = names or [str(c) for c in range(n)]
  slanted = max(map(len, names)) > 2  # words, not digits: room to read
  ax.set_xticks(range(n), names, rotation=45 if slanted else 0,
                ha='right' if slanted else 'center')
  ax.set_yticks(range(n), names)
  ax.set_xlabel('predicted class')
  ax.set_ylabel('true class')
  ax.set_title(title)
  fig.colorbar(image, ax=ax, label='examples (log scale)', shrink=0.85)
  fig.tight_layout()
  return fig


def worst_classified(examples: np.ndarray, labels: np.ndarray,
                     probabilities: np.ndarray, count: int = 24, *,
                     lengths: np.ndarray | None = None,
                     standardize: tuple[np.ndarray, np.ndarray] | None = None,
                     names: Sequence[str] | None = None) -> Figure:
  """The ``count`` examples with the lowest probability on their true class:
  images (uint8 pixels) in a grid, sequences as lines (``series_grid``, with
  its ``lengths`` and ``standardize``).

  Captions give the true and predicted class (by ``names``, default their
  numbers) and the model's confidence in its prediction, so confident
  mistakes stand out from near-ties.
  """
  true_prob = probabilities[np.arange(len(labels)), labels]
  order = np.argsort(true_prob, kind='stable')[:count]
  predicted = probabilities[order].argmax(-1)
  names = names or [str(c) for c in range(probabilities.shape[1])]
  titles = [f'#{i}: {names[labels[i]]} → {names[p]}\n'
            f'p={probabilities[i, p]:.2f}' for i, p in zip(order, predicted)]
  colors_ = [_BAD if p != labels[i] else _GOOD
             for i, p in zip(order, predicted)]
  wrong = int(np.sum(probabilities.argmax(-1) != labels))
  title = (f'Worst-classified test examples (true → predicted, confidence); '
           f'{wrong:,} of {len(labels):,} wrong')
  if examples.dtype == np.uint8:
    return digit_grid(examples[order], titles, ncols=8, title=title,
                      title_colors=colors_)
  return series_grid(examples, order, titles, lengths=lengths, ncols=6,
                     title=title + (', standardized as the model reads them'
                                    if standardize is not None else ''),
                     title_colors=colors_, standardize=standardize)


def sweep_settings(rows: Sequence[Record], monitor: str) -> Figure:
  """A sweep's settings side by side on the metric that chose: each seed's
  validation figure (dots), their mean ± std (bar), the test mean where a
  setting has one (ring), the chosen setting in green.

  Args:
    rows: ``results.json``'s ``rows`` (``seqclf.sweep``): ``name``,
      ``chosen``, ``validation`` and ``test`` as ``{metric: {mean, std,
      values}}``.
    monitor: the validation metric that chose (``val_accuracy``, ...).
  """
  metric = monitor.removeprefix('val_')
  percent = metric != 'loss'
  scale = 100.0 if percent else 1.0
  fig = Figure(figsize=(8, 1.2 + 0.38 * len(rows)))
  ax = fig.subplots()
  for y, row in enumerate(rows):
    color = _GOOD if row['chosen'] else '#57606a'
    val = row['validation'][metric]
    ax.scatter(scale * np.asarray(val['values']), np.full(len(val['values']), y),
               s=14, color=color, alpha=0.6, zorder=3)
    ax.errorbar(scale * val['mean'], y, xerr=scale * val['std'], fmt='|',
                markersize=14, color=color, capsize=3, zorder=4)
    if metric in row.get('test', {}):
      ax.scatter(scale * row['test'][metric]['mean'], y, s=60,
                 facecolors='none', edgecolors=color, zorder=4)
  ax.set_yticks(range(len(rows)),
                [f'{r["name"]} (chosen)' if r['chosen'] else r['name']
                 for r in rows], fontsize=8)
  for label, row in zip(ax.get_yticklabels(), rows):
    if row['chosen']:
      label.set_color(_GOOD)
      label.set_fontweight('bold')
  ax.invert_yaxis()  # the grid's order, top down
  ax.set_xlabel(f'{metric}{" %" if percent else ""}: validation per seed '
                '(dots), mean ± std (bar); test mean (ring)')
  ax.set_title(f'Sweep: settings by {monitor} '
               f'({"lower" if metric == "loss" else "higher"} is better)')
  ax.grid(axis='x', alpha=0.3)
  fig.tight_layout()
  return fig
