"""experiments/timeseries_selection.py picks on validation only; its folds partition."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # experiments/
import timeseries_selection as ts  # pylint: disable=g-import-not-at-top,wrong-import-position


class ValidationOnly(dict):
  """A result row that fails the test if a test figure is read from it."""

  def __getitem__(self, key):
    assert not key.startswith('test'), f'selection read {key!r}'
    return super().__getitem__(key)

  def get(self, key, default=None):
    assert not key.startswith('test'), f'selection read {key!r}'
    return super().get(key, default)


def _row(name, acc, loss, test_acc):
  return ValidationOnly(name=name, val_accuracy_mean=acc, val_loss_mean=loss,
                        test_accuracy_mean=test_acc)


def test_pick_takes_best_validation_accuracy_then_lowest_loss():
  rows = [_row('a', 0.90, 0.30, 0.99), _row('b', 0.95, 0.40, 0.80),
          _row('c', 0.95, 0.20, 0.70), _row('d', 0.93, 0.10, 0.99)]
  assert ts.pick(rows)['name'] == 'c'  # Tie on accuracy: the lower loss.
  assert ts.pick(rows[:2])['name'] == 'b'  # Accuracy first, loss second.
  assert ts.pick(list(reversed(rows)))['name'] == 'c'  # Not the order.


def test_pick_reads_no_test_figure():
  with pytest.raises(AssertionError, match='test_accuracy_mean'):
    _row('a', 0.9, 0.3, 0.99)['test_accuracy_mean']  # The guard works.
  rows = [_row('a', 0.9, 0.3, 0.99), _row('b', 0.91, 0.3, 0.5)]
  assert ts.pick(rows)['name'] == 'b'


def test_folds_partition_train_and_stratify_each_class():
  labels = np.array([0] * 10 + [1] * 7 + [2] * 3)
  parts = ts.folds(labels, 5)
  assert sorted(np.concatenate(parts).tolist()) == list(range(len(labels)))
  for part in parts:
    counts = np.bincount(labels[part], minlength=3)
    assert counts[0] == 2 and counts[1] in (1, 2)  # Every class spread.
  np.testing.assert_array_equal(ts.folds(labels, 5)[0], parts[0])  # Fixed.


def test_held_out_pairs_hold_each_series_out_once_and_never_train_on_it():
  rng = np.random.default_rng(0)
  data = {split: {'image': rng.normal(size=(n, 4, 2)).astype(np.float32),
                  'label': np.arange(n) % 2, 'lengths': np.full(n, 4)}
          for split, n in (('train', 8), ('validation', 4))}
  ids = lambda s: {float(v) for v in s['image'][:, 0, 0]}
  everything = ids(data['train']) | ids(data['validation'])
  pairs = ts.held_out_pairs(data, 3)
  assert len(pairs) == 3
  held = [ids(h) for _, h in pairs]
  assert set().union(*held) == everything and sum(map(len, held)) == 12
  for fit, out in pairs:
    assert not ids(fit) & ids(out) and ids(fit) | ids(out) == everything
  (fit, out), = ts.held_out_pairs(data, None)  # Without k: the carved split.
  assert fit is data['train'] and out is data['validation']
