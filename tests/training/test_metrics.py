"""seqclf.training.metrics against sklearn's definitions (written in numpy
here: sklearn is not a dependency), and class weights in the loss."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import small_config
from seqclf.config import ConfigError, validate
from seqclf.errors import DataError
from seqclf.training import metrics, state as state_lib, steps


def _reference(y, p, num_classes):
  """sklearn's precision/recall/F1 (zero_division=0), balanced accuracy
  (mean recall over the classes in y) and macro F1 (over the classes in y
  or p), by counting examples directly."""
  prec, rec, f1 = [], [], []
  for c in range(num_classes):
    tp = np.sum((y == c) & (p == c))
    pred, true = np.sum(p == c), np.sum(y == c)
    pc = tp / pred if pred else 0.0
    rc = tp / true if true else 0.0
    prec.append(pc)
    rec.append(rc)
    f1.append(2 * pc * rc / (pc + rc) if pc + rc else 0.0)
  in_y = np.isin(np.arange(num_classes), y)
  present = in_y | np.isin(np.arange(num_classes), p)
  return {'accuracy': np.mean(y == p), 'precision': prec, 'recall': rec,
          'f1': f1, 'balanced_accuracy': np.mean(np.asarray(rec)[in_y]),
          'macro_f1': np.mean(np.asarray(f1)[present])}


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_summary_matches_reference_definitions(seed):
  rng = np.random.default_rng(seed)
  num_classes = 6
  y = rng.integers(0, 5, 300)          # class 5 never a label ...
  p = np.where(rng.random(300) < 0.6, y, rng.integers(0, 6, 300))
  if seed == 2:
    p[p == 4] = 3                      # ... class 4 never predicted
  logits = jax.nn.one_hot(p, num_classes) + 0.1 * rng.random((300, 6))
  mask = rng.random(300) < 0.8
  matrix = np.asarray(jax.jit(metrics.confusion, static_argnums=2)(
      jnp.asarray(logits), jnp.asarray(y), num_classes, jnp.asarray(mask)))
  assert matrix.sum() == mask.sum()
  got, want = metrics.summary(matrix), _reference(y[mask], p[mask], num_classes)
  for key, value in want.items():
    np.testing.assert_allclose(got[key], value, rtol=1e-12, err_msg=key)
  assert got['support'] == np.bincount(y[mask], minlength=6).tolist()
  # Predictions instead of logits; a stack of matrices gives arrays.
  np.testing.assert_array_equal(
      metrics.confusion(jnp.asarray(p), jnp.asarray(y), 6, jnp.asarray(mask)),
      matrix)
  stacked = metrics.summary(np.stack([matrix, matrix]))
  np.testing.assert_allclose(stacked['macro_f1'], [got['macro_f1']] * 2)


def test_absent_class_is_left_out_of_the_means():
  # Class 2: neither a label nor a prediction.
  matrix = np.array([[3, 1, 0], [0, 2, 0], [0, 0, 0]])
  got = metrics.summary(matrix)
  assert got['f1'][2] == got['precision'][2] == got['recall'][2] == 0.0
  f1 = [2 * 1 * 0.75 / 1.75, 2 * (2 / 3) / (1 + 2 / 3)]
  assert got['macro_f1'] == pytest.approx(np.mean(f1))
  assert got['balanced_accuracy'] == pytest.approx((0.75 + 1) / 2)


def test_evaluate_gives_confusion_metrics_as_on_the_host():
  config = small_config(hidden_size=8, num_classes=3, impl='scan')
  state = state_lib.create_train_state(config, jax.random.key(0),
                                       sequence_shape=(4, 2))
  rng = np.random.default_rng(0)
  split = {'image': rng.normal(size=(50, 4, 2)).astype(np.float32),
           'label': rng.integers(0, 3, 50)}
  out = steps.evaluate(state, split, 16)  # padded, masked last batch
  logits = state.apply_fn({'params': state.params}, split['image'])
  want = _reference(split['label'], np.asarray(jnp.argmax(logits, -1)), 3)
  assert out['accuracy'] == pytest.approx(want['accuracy'])
  assert out['macro_f1'] == pytest.approx(want['macro_f1'])
  assert out['balanced_accuracy'] == pytest.approx(want['balanced_accuracy'])
  assert np.sum(out['confusion']) == 50


def test_class_weights_balanced_from_counts_and_lists():
  labels = np.array([0, 0, 0, 1, 2, 2])
  w = steps.class_weights('balanced', labels, 3)
  np.testing.assert_allclose(w, [6 / (3 * 3), 6 / (3 * 1), 6 / (3 * 2)])
  assert np.mean(w[labels]) == pytest.approx(1.0)  # sklearn's property
  assert steps.class_weights('none', labels, 3) is None
  np.testing.assert_array_equal(steps.class_weights([1, 2.5, 3], labels, 3),
                                np.float32([1, 2.5, 3]))
  with pytest.raises(DataError, match='class\\(es\\) 3 have none'):
    steps.class_weights('balanced', labels, 4)


def test_weighted_loss_is_the_mean_of_weighted_cross_entropies():
  config = small_config(hidden_size=8, num_classes=3, impl='scan')
  state = state_lib.create_train_state(config, jax.random.key(0),
                                       sequence_shape=(4, 2))
  rng = np.random.default_rng(1)
  batch = {'image': jnp.asarray(rng.normal(size=(8, 4, 2)), jnp.float32),
           'label': jnp.asarray(rng.integers(0, 3, 8))}
  weights = jnp.float32([0.5, 2.0, 4.0])
  _, m = steps.train_step(state, batch, class_weight=weights)
  _, plain = steps.train_step(state, batch)
  ce = optax.softmax_cross_entropy_with_integer_labels(
      state.apply_fn({'params': state.params}, batch['image']), batch['label'])
  assert float(m['weighted_loss']) == pytest.approx(
      float(jnp.mean(ce * weights[batch['label']])), rel=1e-6)
  assert float(m['loss']) == pytest.approx(float(plain['loss']), rel=1e-6)
  assert 'weighted_loss' not in plain  # unweighted: the program as before
  ones, _ = steps.train_step(state, batch, class_weight=jnp.ones(3))
  new, _ = steps.train_step(state, batch)
  for a, b in zip(jax.tree.leaves(ones.params), jax.tree.leaves(new.params)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  assert float(m['weighted_loss']) != pytest.approx(float(m['loss']))


@pytest.mark.parametrize('overrides,message', [
    ({'monitor': 'val_f1'}, 'Config key `monitor` must be one of'),
    ({'class_weight': [1.0, 2.0]}, '`class_weight` has 2 entries: give one '
     'per class (num_classes=10)'),
    ({'class_weight': [1.0] * 9 + [0.0]}, 'entries must be finite and > 0'),
    ({'class_weight': 'balance'}, "must be 'none', 'balanced' or a list"),
    ({'patience': 3}, 'set `monitor`'),
    ({'patience': -1, 'monitor': 'val_loss'}, '`patience` must be >= 0'),
])
def test_bad_monitor_patience_class_weight_are_one_line(overrides, message):
  with pytest.raises(ConfigError) as e:
    validate(small_config(**overrides))
  assert message in str(e.value) and '\n' not in str(e.value)
