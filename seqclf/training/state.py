"""A model's training state: its parameters and optimizer, fresh.

``create_train_state`` builds the classifier a config describes
(``seqclf.nn.classifier.from_config``), initializes its parameters and the
optimizer (``seqclf.training.optim``) into a flax ``TrainState``.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
from flax.training import train_state

from seqclf.data import views
from seqclf.nn import classifier
from seqclf.training import autotune, optim

TrainState = train_state.TrainState


def create_train_state(config: ml_collections.ConfigDict, rng: jax.Array, *,
                       impl: str | None = None,
                       sequence_shape: Sequence[int] | None = None
                       ) -> TrainState:
  """Fresh parameters for ``config`` and an Adam optimizer state.

  Args:
    config: a ``seqclf.config`` config.
    rng: the parameters' key (``jax.random.key(config.seed)`` in a run).
    impl: the path the recurrent layers run (entry points resolve
      ``config.impl`` once and pass it; default: resolved here by
      ``autotune.resolve_impl``). Every impl has the same parameters.
    sequence_shape: one example's (T, F) as the model reads it (the
      parameters depend on F only); default: an MNIST image read as
      ``config.task`` says (``views.image_sequence_shape``).

  Returns:
    The state at step 0, ``apply_fn`` the model's ``apply``.
  """
  if sequence_shape is None:
    sequence_shape = views.image_sequence_shape(config)
  model = classifier.from_config(config, impl or autotune.resolve_impl(
      config, sequence_shape=sequence_shape))
  # Jitted: run eagerly, nn.scan's init dispatches op by op (seconds on CPU).
  params = jax.jit(model.init)(rng, jnp.zeros((1, *sequence_shape)))['params']
  return TrainState.create(apply_fn=model.apply, params=params,
                           tx=optim.optimizer(config))
