"""The update rules by the config's ``optimizer`` name.

``adam`` is ``optax.adam``. ``tf1_adam`` is TF1's ``tf.train.AdamOptimizer``,
which applies the bias corrections to the step size, not to the moments:
``lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)``. That is optax's
``m_hat / (sqrt(v_hat) + eps_hat)`` with ``eps_hat = eps / sqrt(1 - b2^t)``
(Kingma & Ba's "epsilon hat"), larger than ``eps`` in the first steps. With
the same ``eps`` the two differ only where ``sqrt(v_hat)`` is near ``eps``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp
import optax

B1, B2, EPS = 0.9, 0.999, 1e-8  # the defaults of optax.adam and TF1 alike


def tf1_adam(learning_rate: optax.ScalarOrSchedule, b1: float = B1,
             b2: float = B2, eps: float = EPS) -> optax.GradientTransformation:
  """TF1's AdamOptimizer: ``optax.scale_by_adam`` with epsilon hat.

  ``inject_hyperparams`` evaluates the epsilon schedule at the update's
  0-based count, so update ``t = count + 1`` uses ``eps / sqrt(1 - b2^t)``.
  """
  eps_hat = lambda count: eps / jnp.sqrt(1.0 - b2 ** (count + 1.0))
  return optax.chain(
      optax.inject_hyperparams(optax.scale_by_adam, static_args=('b1', 'b2'))(
          b1=b1, b2=b2, eps=eps_hat),
      optax.scale_by_learning_rate(learning_rate))


OPTIMIZERS: dict[str, Callable[[optax.ScalarOrSchedule],
                               optax.GradientTransformation]] = {
    'adam': optax.adam,
    'tf1_adam': tf1_adam,
}


def optimizer(name: str, learning_rate: optax.ScalarOrSchedule
              ) -> optax.GradientTransformation:
  """The update rule ``name`` (a key of ``OPTIMIZERS``) at ``learning_rate``."""
  if name not in OPTIMIZERS:
    raise ValueError(f'optimizer must be one of {tuple(OPTIMIZERS)}, '
                     f'got {name!r}.')
  return OPTIMIZERS[name](learning_rate)
