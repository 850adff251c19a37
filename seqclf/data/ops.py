"""Operations on batches of sequences that work on numpy and traced jax
arrays alike: on the host (evaluation, prediction) and inside the jitted
train step."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def random_hflip(images: jax.Array, rng: jax.Array) -> jax.Array:
  """Mirrors each (..., 28, 28) image left-right with probability 1/2.

  For data whose classes survive a mirror (garments, not digits): the model
  sees each training image in both orientations at no extra cost.
  """
  flip = jax.random.bernoulli(rng, 0.5, images.shape[:1])
  return jnp.where(flip.reshape(-1, *([1] * (images.ndim - 1))),
                   images[..., ::-1], images)


def to_float(images):
  """uint8 pixels -> float32 in [0, 1], float sequences -> float32 as they
  are (``seqclf.data.splits``); works on numpy and jax arrays."""
  if images.dtype == np.uint8:
    return images.astype('float32') / 255.0
  return images.astype('float32')
