"""The optimizer a config describes: Adam, its learning-rate schedule, clipping.

Its own module (optax only) so config validation can import the schedule
names from where the schedules are built without loading the trainer.
"""

from __future__ import annotations

import jax
import ml_collections
import optax

# config.lr_schedule: the peak rate held | cosine decay to 0 by num_train_steps.
SCHEDULES = ('constant', 'cosine')


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
    return optax.warmup_cosine_decay_schedule(
        0.0, peak, config.warmup_steps, config.num_train_steps, end_value=0.0)
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
              learning_rate: float | jax.Array | None = None
              ) -> optax.GradientTransformation:
  """Adam at ``learning_rate_schedule``, after clipping if set; with
  ``skip_nonfinite_updates`` a non-finite gradient leaves params and Adam
  moments untouched."""
  tx = optax.adam(learning_rate_schedule(config, learning_rate))
  if config.grad_clip_norm:
    tx = optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), tx)
  if config.skip_nonfinite_updates:
    tx = optax.apply_if_finite(tx, max_consecutive_errors=10**9)
  return tx
