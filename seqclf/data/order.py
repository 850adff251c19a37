"""The data order: batches as a pure function of (seed, step).

The trainer keeps the training set on the device and gathers each batch
there from indices computed here, so a run resumed at step k sees exactly
the batches an uninterrupted run sees. Evaluation covers each example once,
in fixed-size batches.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from seqclf.data.ops import to_float
from seqclf.data.splits import Split
from seqclf.errors import ConfigError


def epoch_permutation(seed: int, epoch: int, num_examples: int) -> np.ndarray:
  """The example order of one epoch: a pure function of (seed, epoch)."""
  return np.random.default_rng([seed, epoch]).permutation(num_examples)


def check_batch_size(batch_size: int, num_examples: int) -> None:
  """A ``ConfigError`` unless a batch fits in the training examples."""
  if batch_size > num_examples:
    raise ConfigError(f'batch_size={batch_size} exceeds the {num_examples} '
                      'training examples: lower config key `batch_size`.',
                      arg='config.batch_size')


def train_indices(seed: int, num_examples: int, batch_size: int,
                  first_step: int, num_steps: int) -> np.ndarray:
  """Example indices of steps ``[first_step, first_step + num_steps)``.

  Each epoch is a fresh permutation from (seed, epoch); the last partial
  batch of an epoch is dropped so every batch has the same shape (the jitted
  step needs it).

  Args:
    seed: the run's seed.
    num_examples: the training set's size.
    batch_size: examples per step.
    first_step: the first step (0-based).
    num_steps: how many steps.

  Returns:
    (num_steps, batch_size) int32 indices.
  """
  check_batch_size(batch_size, num_examples)
  steps_per_epoch = num_examples // batch_size
  rows, perms = [], {}
  for step in range(first_step, first_step + num_steps):
    epoch, pos = divmod(step, steps_per_epoch)
    if epoch not in perms:
      perms[epoch] = epoch_permutation(seed, epoch, num_examples)
    rows.append(perms[epoch][pos * batch_size:(pos + 1) * batch_size])
  return np.asarray(rows, np.int32).reshape(num_steps, batch_size)


def train_batches(split: Split, seed: int, batch_size: int,
                  first_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
  """Host-side training batches in the trainer's order, for use outside
  seqclf (the trainer gathers them on the device).

  Args:
    split: the training split's arrays.
    seed: the run's seed.
    batch_size: examples per step.
    first_step: the step to start at.

  Yields:
    One batch per step, forever: ``image`` (float32), ``label`` and, where
    the split has them, ``lengths``.
  """
  step = first_step
  while True:
    (idx,) = train_indices(seed, len(split['label']), batch_size, step, 1)
    batch = {'image': to_float(split['image'][idx]),
             'label': split['label'][idx]}
    if 'lengths' in split:
      batch['lengths'] = split['lengths'][idx]
    yield batch
    step += 1


def eval_batches(split: Split, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
  """Batches covering every example of ``split`` once.

  Args:
    split: the split's arrays.
    batch_size: examples per batch.

  Yields:
    ``image`` (float32), ``label``, ``mask`` (False for the zero padding of
    the last batch) and, where the split has them, ``lengths``.
  """
  n = len(split['label'])
  for start in range(0, n, batch_size):
    image = split['image'][start:start + batch_size]
    label = split['label'][start:start + batch_size]
    pad = batch_size - len(label)
    batch = {
        'image': to_float(np.pad(image, ((0, pad), (0, 0), (0, 0)))),
        'label': np.pad(label, (0, pad)),
        'mask': np.arange(batch_size) < len(label),
    }
    if 'lengths' in split:  # Padding examples count as full length.
      batch['lengths'] = np.pad(split['lengths'][start:start + batch_size],
                                (0, pad), constant_values=image.shape[1])
    yield batch


# ---- length buckets (config key `bucket_by_length`) -------------------------
BUCKETS = 4  # batch lengths: T/8, T/4, T/2, T (rounded up)
POOL = 64    # batches of similar length are cut from POOL batches' examples
BLOCK = 16   # consecutive steps of one bucket length (fewer, longer calls)


def bucket_sizes(steps: int) -> tuple[int, ...]:
  """The lengths a bucketed batch runs to: ``steps`` halved ``BUCKETS - 1`` times."""
  return tuple(sorted({-(-steps // 2**k) for k in range(BUCKETS)}))


def bucket_length(longest: int, steps: int) -> int:
  """``longest`` rounded up to the next of ``bucket_sizes(steps)``."""
  return next(s for s in bucket_sizes(steps) if s >= longest)


def bucketed_epoch(seed: int, epoch: int, lengths: np.ndarray,
                   batch_size: int, steps: int) -> np.ndarray:
  """One epoch's batches of similar length: (steps_per_epoch, batch) indices.

  The epoch's permutation (``epoch_permutation``) is cut into pools of
  ``POOL`` batches; each pool is sorted by length and cut into batches; the
  batches of each bucket length (``bucket_length``) are grouped into blocks
  of ``BLOCK``, and the blocks shuffled. A pure function of (seed, epoch),
  like the unbucketed order; each example is still seen once an epoch.

  Args:
    seed: the run's seed.
    epoch: the epoch.
    lengths: (N,) each training example's valid steps.
    batch_size: examples per step.
    steps: the data's T (the longest a batch can run).

  Returns:
    (N // batch_size, batch_size) int32 indices, one row per step.
  """
  n = len(lengths)
  check_batch_size(batch_size, n)
  per_epoch = n // batch_size
  perm = epoch_permutation(seed, epoch, n)[:per_epoch * batch_size]
  pool = POOL * batch_size
  batches = []
  for start in range(0, len(perm), pool):
    part = perm[start:start + pool]
    part = part[np.argsort(lengths[part], kind='stable')]
    batches.extend(part.reshape(-1, batch_size))
  by_bucket: dict[int, list[np.ndarray]] = {}
  for b in batches:
    by_bucket.setdefault(bucket_length(int(lengths[b].max()), steps),
                         []).append(b)
  blocks = [group[i:i + BLOCK] for _, group in sorted(by_bucket.items())
            for i in range(0, len(group), BLOCK)]
  rng = np.random.default_rng([seed, epoch, 1])
  return np.asarray([b for k in rng.permutation(len(blocks))
                     for b in blocks[k]], np.int32)
