"""How a classifier reads an image: row by row, pixel by pixel, or permuted.

An image dataset is stored and loaded as (N, 28, 28) images; the task is a
view of them taken where data meets the model (``seqclf.datasets.view``),
which keeps one prepared dataset for every task while the model reads plain
sequences. The permutation is a pure function of its seed, which lives in
the config and hence in every checkpoint.
"""

from __future__ import annotations

import math

import numpy as np

TASKS = ('row', 'pixel', 'permuted')


def permutation(seed: int, length: int) -> np.ndarray:
  """The fixed pixel order of the ``permuted`` task (a numpy constant)."""
  return np.random.default_rng(seed).permutation(length)


def as_sequence(images, task: str, permutation_seed: int = 0):
  """(..., H, W) images -> (..., time, features) sequences for ``task``.

  ``row``: H steps of W features (unchanged). ``pixel``: H*W steps of 1
  feature in raster order (sequential MNIST). ``permuted``: the pixel
  sequence in the fixed order ``permutation(permutation_seed, H*W)``.
  Works on numpy and jax arrays alike.
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
