"""The model's input statistics, fitted on the training split (``normalize``).

``normalize='per_channel'`` standardizes each feature with the mean and
standard deviation of the training split's valid steps (the steps within
each row's length; NaN, a missing value, skipped). The statistics are fitted
here, once, when a run starts (``fit``), and become the model's
``channel_mean``/``channel_std`` fields: the model applies them to raw
inputs, and the config saved with every checkpoint carries them, so
evaluation, prediction, export and ``load_model`` take raw data and refit
nothing. ``'auto'`` (the default) is ``'per_channel'`` for float series (the
UEA/UCR datasets, float ``npz:`` arrays) and ``'none'`` for images (uint8
pixels). The statistics standardize what the model's scalar step
``(x - input_mean) / input_std`` gives, so that step set for other data
(``configs/default.py``'s MNIST pixels) cannot leave a series unscaled.
"""

from __future__ import annotations

from typing import Any

import ml_collections
import numpy as np

from seqclf.data import ops
from seqclf.data.splits import Split
from seqclf.errors import DataError

NORMALIZE = ('auto', 'none', 'per_channel')  # config key `normalize`
CHUNK_ROWS = 4096  # rows per block when fitting a split read from disk


def valid_steps(split: Split) -> np.ndarray:
  """(N, T) bools: the steps within each row's length (all without lengths)."""
  n, steps = split['image'].shape[:2]
  lengths = split.get('lengths')
  if lengths is None:
    return np.ones((n, steps), bool)
  return np.arange(steps)[None, :] < np.asarray(lengths)[:, None]


def observed_stats(split: Split
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Each feature's count of observed (not NaN) values over a split's valid
  steps, and their mean and (population) standard deviation in float64
  (NaN where a feature has none): what ``fit_channels`` fits, and what
  ``seqclf inspect-data`` shows of any split.

  Args:
    split: arrays with ``image`` (N, T, F) and optionally ``lengths`` (N,).

  Returns:
    ``(count, mean, std)``, each (F,).
  """
  images = split['image']
  # A split in memory is summed whole; one read from disk (streamed, lazy)
  # in blocks of rows, so fitting holds one block at a time.
  n = len(images)
  rows = CHUNK_ROWS if getattr(images, 'lazy', False) else max(n, 1)

  def blocks():
    for start in range(0, n, rows):
      part = {k: v[start:start + rows] for k, v in split.items()
              if k in ('image', 'lengths')}
      # As the model reads them: uint8 pixels / 255 (``ops.to_float``).
      x = np.asarray(ops.to_float(np.asarray(part['image'])),
                     np.float64)[valid_steps(part)]
      yield x, ~np.isnan(x)  # (valid steps, F)

  zero = np.zeros(images.shape[2])  # an empty split sums to it
  count = sum((observed.sum(axis=0) for _, observed in blocks()), zero)
  with np.errstate(invalid='ignore', divide='ignore'):  # NaN where count 0
    mean = sum((np.where(observed, x, 0.0).sum(axis=0)
                for x, observed in blocks()), zero) / count
    std = np.sqrt(sum(((np.where(observed, x - mean, 0.0) ** 2).sum(axis=0)
                       for x, observed in blocks()), zero) / count)
  return count, mean, std


def fit_channels(split: Split, where: str = 'the data'
                 ) -> tuple[np.ndarray, np.ndarray]:
  """Each feature's mean and (population) standard deviation over a split's
  valid, observed (not NaN) steps, in float64 (``observed_stats``).

  Args:
    split: arrays with ``image`` (N, T, F) and optionally ``lengths`` (N,).
    where: the data's name, for the messages.

  Returns:
    ``(mean, std)``, each (F,); a one-line ``DataError`` naming the channel
    if one has no observed value or is constant (a zero std).
  """
  count, mean, std = observed_stats(split)
  for channel in np.flatnonzero(count == 0):
    raise DataError(f'{where}: channel {channel} has no observed value in the '
                    'train split: drop it, or set config key '
                    "`normalize='none'`.", arg='config.normalize')
  for channel in np.flatnonzero(~(std > 1e-12 * np.maximum(1.0, abs(mean)))):
    raise DataError(f'{where}: channel {channel} is constant ({mean[channel]:g}'
                    ' on every valid step of the train split), so '
                    "normalize='per_channel' (what 'auto' is for float data) "
                    'cannot scale it: drop that channel, or set config key '
                    "`normalize='none'`.", arg='config.normalize')
  return mean, std


def resolve(config: Any, train: Split) -> str:
  """``config.normalize`` with ``'auto'`` resolved for this training data:
  ``'per_channel'`` for float series, ``'none'`` for images."""
  if config.normalize != 'auto':
    return config.normalize
  series = np.issubdtype(train['image'].dtype, np.floating)
  return 'per_channel' if series and config.task == 'row' else 'none'


def fit(config: ml_collections.ConfigDict, train: Split,
        where: str = '') -> ml_collections.ConfigDict:
  """``config`` with the model's ``channel_mean``/``channel_std`` fitted on
  the training split as ``normalize`` says (empty for ``'none'``).

  Pure: the same config and data give the same statistics, so a resumed run
  fits what the checkpoint saved (``seqclf.config.check_resume`` compares
  them like any model key).

  Args:
    config: a validated ``seqclf.config`` config (not changed).
    train: the training split as the model reads it.
    where: the data's name, for the messages (default ``config.dataset``).

  Returns:
    A copy of ``config`` with the two keys set.
  """
  out = ml_collections.ConfigDict(config.to_dict())
  if resolve(config, train) == 'per_channel':
    mean, std = fit_channels(train, where or config.dataset)
    # Of the inputs after the model's scalar step (an affine map of each
    # channel, so exact in float64; the identity by default).
    mean = (mean - config.input_mean) / config.input_std
    std = std / config.input_std
    # float32 values, as the model applies them, exact through JSON.
    out.channel_mean = tuple(float(v) for v in mean.astype(np.float32))
    out.channel_std = tuple(float(v) for v in std.astype(np.float32))
  else:
    out.channel_mean, out.channel_std = (), ()
  return out


def zero_padding(split: Split) -> np.ndarray:
  """``split['image']`` with NaN or inf past each row's length set to 0: the
  padding is never read, but a computation masked after the fact (a
  gradient through a select, a convolution's window) would carry them into
  valid steps."""
  x = split['image']
  if split.get('lengths') is None or not np.issubdtype(x.dtype, np.floating):
    return x
  bad = ~valid_steps(split)[..., None] & ~np.isfinite(x)
  return np.where(bad, x.dtype.type(0), x) if bad.any() else x


def count_missing(x: np.ndarray, lengths: np.ndarray | None = None
                  ) -> tuple[int, int]:
  """(NaN values, sequences holding one) within the valid steps of (N, T, F)
  ``x``."""
  if not np.issubdtype(x.dtype, np.floating):
    return 0, 0
  nan = np.isnan(x)
  if lengths is not None:
    nan &= valid_steps({'image': x, 'lengths': lengths})[..., None]
  return int(nan.sum()), int(nan.any(axis=(1, 2)).sum())


def count_nan(image: np.ndarray, length: int | None = None) -> int:
  """NaN values of one (T, F) example within its first ``length`` steps
  (all without one): the padding past a length is never read."""
  if not np.issubdtype(image.dtype, np.floating):
    return 0
  return int(np.isnan(image if length is None else image[:length]).sum())
