"""The optimizer a config describes: Adam, its learning-rate schedule, clipping,
weight decay.

``optimizer='adam'`` is ``optax.adam``. ``'tf1_adam'`` is TF1's
``tf.train.AdamOptimizer``, which applies the bias corrections to the step
size, not to the moments: ``lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) +
eps)``. That is optax's ``m_hat / (sqrt(v_hat) + eps_hat)`` with ``eps_hat =
eps / sqrt(1 - b2^t)`` (Kingma & Ba's "epsilon hat"), larger than ``eps`` in
the first steps; with the same ``eps`` the two differ only where
``sqrt(v_hat)`` is near ``eps``.

Its own module (optax only) so config validation can import the schedule
names from where the schedules are built without loading the trainer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

# config.lr_schedule: the peak rate held | cosine decay to 0 by num_train_steps.
SCHEDULES = ('constant', 'cosine')


def scale_by_tf1_adam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8
                      ) -> optax.GradientTransformation:
  """TF1's AdamOptimizer's direction (its defaults): ``optax.scale_by_adam``
  with epsilon hat.

  ``inject_hyperparams`` evaluates the epsilon schedule at the update's
  0-based count, so update ``t = count + 1`` uses ``eps / sqrt(1 - b2^t)``.
  """
  eps_hat = lambda count: eps / jnp.sqrt(1.0 - b2 ** (count + 1.0))
  return optax.inject_hyperparams(optax.scale_by_adam,
                                  static_args=('b1', 'b2'))(
                                      b1=b1, b2=b2, eps=eps_hat)


def tf1_adam(learning_rate: optax.ScalarOrSchedule
             ) -> optax.GradientTransformation:
  """TF1's AdamOptimizer at ``learning_rate``."""
  return optax.chain(scale_by_tf1_adam(),
                     optax.scale_by_learning_rate(learning_rate))


# config.optimizer: the update's direction, before weight decay and the
# learning rate (so 'adam' with neither extra is exactly optax.adam).
OPTIMIZERS: dict[str, Callable[[], optax.GradientTransformation]] = {
    'adam': optax.scale_by_adam,
    'tf1_adam': scale_by_tf1_adam,
}


def _matrices(params: Any) -> Any:
  """True for the leaves weight decay shrinks: kernels, not biases."""
  return jax.tree.map(lambda p: p.ndim > 1, params)


def update_rule(config: ml_collections.ConfigDict,
                learning_rate: optax.ScalarOrSchedule,
                weight_decay: float | jax.Array | None = None
                ) -> optax.GradientTransformation:
  """``config.optimizer`` at ``learning_rate`` (a rate or schedule).

  With ``weight_decay`` it is decoupled (AdamW, Loshchilov & Hutter): each
  update also subtracts ``learning_rate * weight_decay * w`` from the weight
  matrices, outside Adam's scaling, so the decay does not shrink with the
  gradients' variance; biases are not decayed. ``weight_decay`` given (a
  sweep model's traced value) replaces the config's, which still decides
  whether there is a decay term at all.
  """
  if config.optimizer not in OPTIMIZERS:
    raise ValueError(f'optimizer must be one of {tuple(OPTIMIZERS)}, got '
                     f'{config.optimizer!r}.')
  if weight_decay is None:
    weight_decay = config.weight_decay
  decay = ([optax.add_decayed_weights(weight_decay, mask=_matrices)]
           if config.weight_decay else [])
  return optax.chain(OPTIMIZERS[config.optimizer](), *decay,
                     optax.scale_by_learning_rate(learning_rate))


def learning_rate_schedule(config: ml_collections.ConfigDict,
                           peak: float | jax.Array | None = None
                           ) -> optax.ScalarOrSchedule:
  """The learning rate as optax takes it: a schedule only when one is set.

  A constant rate stays a plain number so the default optimizer (and its
  checkpointed state) is exactly ``optax.adam(learning_rate)``.
  """
  peak = config.learning_rate if peak is None else peak
  if config.lr_schedule not in SCHEDULES:
    raise ValueError(f'lr_schedule must be one of {SCHEDULES}, got '
                     f'{config.lr_schedule!r}.')
  if config.lr_schedule == 'cosine':
    # optax.warmup_cosine_decay_schedule(0, peak, ..., end_value=0) spelled
    # out: it tests `peak == 0` in Python, which fails for the traced peak of
    # a sweep's learning-rate grid; the same schedules, so the same numbers.
    return optax.join_schedules(
        [optax.linear_schedule(0.0, peak, config.warmup_steps),
         optax.cosine_decay_schedule(
             peak, config.num_train_steps - config.warmup_steps)],
        [config.warmup_steps])
  if config.warmup_steps:
    return optax.join_schedules(
        [optax.linear_schedule(0.0, peak, config.warmup_steps),
         optax.constant_schedule(peak)], [config.warmup_steps])
  return peak


def learning_rate_at(config: ml_collections.ConfigDict, step: int) -> float:
  """The rate that the update of (1-based) ``step`` used, for logging."""
  schedule = learning_rate_schedule(config)
  return float(schedule(step - 1)) if callable(schedule) else schedule


def optimizer(config: ml_collections.ConfigDict,
              learning_rate: optax.ScalarOrSchedule | None = None,
              grad_clip_norm: float | jax.Array | None = None,
              weight_decay: float | jax.Array | None = None
              ) -> optax.GradientTransformation:
  """``update_rule`` after clipping if set; with ``skip_nonfinite_updates``
  a non-finite gradient leaves params and Adam moments untouched.

  Args:
    config: the run's config.
    learning_rate: a rate or schedule in place of the config's
      (``learning_rate_schedule``), e.g. a sweep model's traced one.
    grad_clip_norm: a (traced) clipping bound in place of
      ``config.grad_clip_norm``; given, the update always clips.
    weight_decay: a (traced) decay in place of ``config.weight_decay``
      (``update_rule``).

  Returns:
    The optimizer.
  """
  if learning_rate is None:
    learning_rate = learning_rate_schedule(config)
  tx = update_rule(config, learning_rate, weight_decay)
  if grad_clip_norm is not None or config.grad_clip_norm:
    bound = config.grad_clip_norm if grad_clip_norm is None else grad_clip_norm
    tx = optax.chain(optax.clip_by_global_norm(bound), tx)
  if config.skip_nonfinite_updates:
    tx = optax.apply_if_finite(tx, max_consecutive_errors=10**9)
  return tx
