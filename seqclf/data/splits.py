"""What every dataset is made of: three splits of numpy arrays.

A split is a dict: ``'image'`` (N, T, F) sequences, uint8 (images, read as
pixels / 255) or float (used as they are; the key keeps its first dataset's
name); ``'label'`` (N,) integer classes in ``[0, num_classes)``; optionally
``'lengths'`` (N,) the valid steps of each sequence, in ``[1, T]``
(``seqclf.data.registry.check`` enforces it).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

SPLITS = ('train', 'validation', 'test')
# Seed of the permutations that carve a validation (or test) split out of
# data without one (npz files, the archive series): fixed, so every run of a
# config sees the same split.
SPLIT_SEED = 0
Split = dict[str, np.ndarray]


def write_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
  """Saves ``arrays`` as the npz file ``path``, atomically (a reader never
  sees half a file); where the directory is read-only, saves nothing: a
  cache is only a shortcut."""
  tmp = path.with_name(f'{path.name}.{os.getpid()}.tmp.npz')
  try:
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
  except OSError:
    tmp.unlink(missing_ok=True)
