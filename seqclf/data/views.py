"""How a classifier reads an image: row by row, pixel by pixel, or permuted.

An image dataset is stored and loaded as (N, 28, 28) images; the task is a
view of them taken where data meets the model (``view``: the trainer, the
sweep, evaluation, prediction, the exported function), on the host, which
keeps one prepared dataset for every task while the model reads plain
sequences. The permutation is a pure function of its seed, which lives in
the config and hence in every checkpoint.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from seqclf.data.splits import Split

TASKS = ('row', 'pixel', 'permuted')
IMAGE_SHAPE = (28, 28)  # one image's (T, F) read by rows (task 'row')


def permutation(seed: int, length: int) -> np.ndarray:
  """The fixed pixel order of the ``permuted`` task (a numpy constant)."""
  return np.random.default_rng(seed).permutation(length)


def as_sequence(images, task: str, permutation_seed: int = 0):
  """(..., H, W) images as (..., time, features) sequences; numpy or jax.

  Args:
    images: (..., H, W) arrays.
    task: ``row`` (H steps of W features, unchanged), ``pixel`` (H*W steps
      of 1 feature, raster order: sequential MNIST) or ``permuted`` (the
      pixel sequence in the fixed order ``permutation(permutation_seed,
      H*W)``).
    permutation_seed: the ``permuted`` order's seed.

  Returns:
    The sequences.
  """
  if task == 'row':
    return images
  if task not in TASKS:
    raise ValueError(f'task must be one of {TASKS}, got {task!r}.')
  *batch, height, width = images.shape
  pixels = images.reshape(*batch, height * width, 1)
  if task == 'pixel':
    return pixels
  return pixels[..., permutation(permutation_seed, height * width), :]


def sequence_shape(task: str, image_shape: tuple[int, int]) -> tuple[int, int]:
  """The (time, features) of one ``image_shape`` image read as ``task``."""
  return tuple(image_shape) if task == 'row' else (math.prod(image_shape), 1)


def view(config: Any, images: np.ndarray) -> np.ndarray:
  """``images`` read as ``config.task`` says.

  Args:
    config: its ``task`` and ``permutation_seed`` are read.
    images: (N, 28, 28) images (or any data, for task ``row``).

  Returns:
    (N, 784, 1) pixel sequences for ``pixel`` and ``permuted``; for ``row``,
    every dataset's default, ``images`` as they are.
  """
  if config.task == 'row':
    return images
  if hasattr(images, 'transformed'):  # on disk: viewed as each batch is read
    return images.transformed(
        lambda x: as_sequence(x, config.task, config.permutation_seed),
        (len(images), *sequence_shape(config.task, images.shape[1:])))
  return as_sequence(images, config.task, config.permutation_seed)


def image_sequence_shape(config: Any) -> tuple[int, int]:
  """One MNIST image's (T, F) read as ``config.task`` says: the example
  shape where no data gives one (fresh parameters, ``auto``'s timing)."""
  return sequence_shape(config.task, IMAGE_SHAPE)


def view_splits(config: Any, data: dict[str, Split]) -> dict[str, Split]:
  """``view`` of every split's sequences (labels and lengths as they are)."""
  return {split: {**arrays, 'image': view(config, arrays['image'])}
          for split, arrays in data.items()}
