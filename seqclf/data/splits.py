"""What every dataset is made of: three splits of numpy arrays.

A split is a dict: ``'image'`` (N, T, F) sequences, uint8 (images, read as
pixels / 255) or float (used as they are; the key keeps its first dataset's
name); ``'label'`` (N,) integer classes in ``[0, num_classes)``; optionally
``'lengths'`` (N,) the valid steps of each sequence, in ``[1, T]``
(``seqclf.data.registry.check`` enforces it).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

SPLITS = ('train', 'validation', 'test')
# Seed of the permutations that carve a validation (or test) split out of
# data without one (npz files, the archive series): fixed, so every run of a
# config sees the same split.
SPLIT_SEED = 0
Split = dict[str, np.ndarray]


def carve(labels: np.ndarray, fraction: float, seed: int = SPLIT_SEED
          ) -> tuple[np.ndarray, np.ndarray]:
  """Stratified (kept, carved) indices, each sorted: ``fraction`` of each
  class, rounded, by a permutation from ``seed``.

  Stratified so that a rare class keeps its share on both sides (a plain
  permutation can leave it out of a small validation split, which balanced
  accuracy and ``monitor`` then never see): a class of two or more gives at
  least one example to each side, a class of one stays kept.
  """
  classes, group = np.unique(labels, return_inverse=True)
  rng = np.random.default_rng(seed)
  kept, carved = [], []
  for g in range(len(classes)):
    members = rng.permutation(np.flatnonzero(group == g))
    k = int(round(len(members) * fraction))
    k = min(max(k, 1 if len(members) > 1 else 0), len(members) - 1)
    carved.append(members[:k])
    kept.append(members[k:])
  join = lambda parts: np.sort(np.concatenate([np.zeros(0, int), *parts]))
  return join(kept), join(carved)


def digest(datasets: dict[str, Split]) -> str:
  """A short hash of what makes the splits these splits: each one's labels,
  lengths and sequence shape, in order (images are not read: a streamed
  split stays on disk). A resume compares it (config key ``data_digest``),
  so a run never continues on another file or another carve of one.
  """
  h = hashlib.sha256()
  for name in sorted(datasets):
    split = datasets[name]
    h.update(f'{name}{tuple(split["image"].shape)}'.encode())
    for key in ('label', 'lengths'):
      if key in split:
        h.update(key.encode() + np.asarray(split[key], np.int64).tobytes())
  return h.hexdigest()[:16]


def training_split(splits: dict[str, Split]) -> Split:
  """The whole training split, train and validation together: what a sweep's
  ``--cv`` folds, and what its chosen setting then trains on."""
  return {k: np.concatenate([splits['train'][k], splits['validation'][k]])
          for k in splits['train']}


def refit_splits(splits: dict[str, Split]) -> dict[str, Split]:
  """What a sweep's ``--cv`` chosen setting trains and is tested on: the
  whole training split (``training_split``) and the test split."""
  return {'train': training_split(splits), 'test': splits['test']}


def refit_digest(splits: dict[str, Split]) -> str:
  """``digest(refit_splits(splits))`` with no sequence read: what a ``--cv``
  chosen model trained on, compared without joining (so loading) a streamed
  training split."""
  parts = {name: {k: v for k, v in splits[name].items() if k != 'image'}
           for name in ('train', 'validation')}
  whole = training_split(parts)
  shape = (len(whole['label']), *splits['train']['image'].shape[1:])
  whole['image'] = np.broadcast_to(np.zeros((), np.uint8), shape)  # no memory
  return digest({'train': whole, 'test': splits['test']})


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
