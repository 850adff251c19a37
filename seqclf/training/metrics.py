"""Classification metrics from a confusion matrix: pure functions.

Evaluation accumulates one (C, C) confusion matrix per split on the device
(``confusion``, inside the jitted evaluation step, summed over batches); the
host then derives every metric from those C x C counts (``summary``), so no
per-example prediction ever leaves the device. Rows are true classes,
columns predicted ones.

Definitions (sklearn's, with ``zero_division=0``):

* ``accuracy``: trace / total.
* per class c: ``precision`` = TP / predicted-as-c, ``recall`` = TP /
  truly-c, ``f1`` = 2 P R / (P + R); a zero denominator gives 0.
* ``balanced_accuracy``: the mean recall over the classes present in the
  labels (sklearn's ``balanced_accuracy_score``).
* ``macro_f1``: the unweighted mean F1 over the classes present in the
  labels or the predictions (sklearn's ``f1_score(average='macro')`` with
  the labels inferred from the data).

A class absent from both labels and predictions has no defined precision,
recall or F1: its entries in the per-class lists are 0 and it is left out of
both means (so a split that lacks a class is not penalized for it);
``support`` (true examples per class) shows which classes those are.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def confusion(logits_or_preds: jax.Array, labels: jax.Array, num_classes: int,
              mask: jax.Array | None = None) -> jax.Array:
  """Counts of (true, predicted) class pairs, traceable under ``jax.jit``.

  Args:
    logits_or_preds: (..., C) logits (the argmax is the prediction) or (...,)
      integer predicted classes.
    labels: (...,) integer true classes in [0, num_classes).
    num_classes: C.
    mask: (...,) bool, False for examples not to count (batch padding).

  Returns:
    (C, C) int32: entry [t, p] counts examples of class t predicted as p.
  """
  preds = logits_or_preds
  if preds.ndim == labels.ndim + 1:
    preds = jnp.argmax(preds, -1)
  weight = (jnp.ones(labels.shape, jnp.int32) if mask is None
            else mask.astype(jnp.int32))
  # Integer scatter-add: exact and order-independent, so every device
  # layout gives the same counts.
  return jnp.zeros((num_classes, num_classes), jnp.int32).at[
      labels.ravel(), preds.ravel()].add(weight.ravel())


def per_class(matrix: Any) -> dict[str, np.ndarray]:
  """Per-class ``precision``, ``recall``, ``f1`` and ``support`` (float64).

  Args:
    matrix: (..., C, C) confusion counts (a stack of models too).

  Returns:
    Arrays of shape (..., C); zero denominators give 0.
  """
  m = np.asarray(matrix, np.float64)
  tp = np.diagonal(m, axis1=-2, axis2=-1)
  support, predicted = m.sum(-1), m.sum(-2)
  div = lambda a, b: np.divide(a, b, out=np.zeros_like(a), where=b > 0)
  precision, recall = div(tp, predicted), div(tp, support)
  f1 = div(2 * precision * recall, precision + recall)
  return {'precision': precision, 'recall': recall, 'f1': f1,
          'support': support, 'predicted': predicted}


def summary(matrix: Any) -> dict[str, Any]:
  """Every metric of a confusion matrix (see the module's definitions).

  Args:
    matrix: (C, C) confusion counts, or (..., C, C) for a stack of models.

  Returns:
    ``accuracy``, ``balanced_accuracy``, ``macro_f1`` and the per-class
    ``precision``, ``recall``, ``f1``, ``support`` lists (C entries). For a
    single (C, C) matrix, Python floats and lists (JSON-ready); for a stack,
    numpy arrays with the leading axes.
  """
  m = np.asarray(matrix, np.float64)
  c = per_class(m)
  total = m.sum((-2, -1))
  accuracy = np.divide(np.trace(m, axis1=-2, axis2=-1), total,
                       out=np.zeros_like(total), where=total > 0)
  in_labels = c['support'] > 0
  present = in_labels | (c['predicted'] > 0)
  mean_over = lambda v, where: np.divide(
      (v * where).sum(-1), where.sum(-1), out=np.zeros(v.shape[:-1]),
      where=where.sum(-1) > 0)
  out = {'accuracy': accuracy,
         'balanced_accuracy': mean_over(c['recall'], in_labels),
         'macro_f1': mean_over(c['f1'], present),
         'precision': c['precision'], 'recall': c['recall'], 'f1': c['f1'],
         'support': c['support']}
  if m.ndim == 2:
    out = {k: v.tolist() if np.ndim(v) else float(v) for k, v in out.items()}
    out['support'] = [int(s) for s in out['support']]
  return out


# The scalar metrics a run may monitor (``val_`` + each), and whether more
# is better.
MONITORED = {'loss': False, 'accuracy': True, 'macro_f1': True,
             'balanced_accuracy': True}


def improved(score: float, best: float | None, higher_is_better: bool) -> bool:
  """Whether ``score`` beats ``best`` strictly.

  Args:
    score: this evaluation's value of the monitored metric.
    best: the best so far (None: nothing yet).
    higher_is_better: ``MONITORED[metric]``.

  Returns:
    True for a better score; a tie keeps the earlier checkpoint, a NaN
    never wins.
  """
  if not np.isfinite(score):
    return False
  if best is None:
    return True
  return score > best if higher_is_better else score < best
