"""What the NNX tests share: the paths, a padded batch, non-trivial weights."""

import jax
import numpy as np
import pytest
from flax import nnx

from conftest import needs_cpu_kernel, normal, perturbed
from seqclf import nnx as seqnnx

IMPLS = ['scan', 'fused', pytest.param('kernel', marks=needs_cpu_kernel)]
LENGTHS = np.array([6, 3, 1, 5, 2])  # of T = 6 steps
HIDDEN = 16  # the kernel's sizes are multiples of 16
LAYERS = {'lstm': seqnnx.LSTM, 'gru': seqnnx.GRU, 'elman': seqnnx.Elman}


def layer(cell='lstm', impl='scan', features=3, seed=0, **options):
  """An NNX layer of HIDDEN units with perturbed weights."""
  model = LAYERS[cell](features, HIDDEN, impl=impl, rngs=nnx.Rngs(seed),
                       **options)
  return seqnnx.from_linen_params(
      model, perturbed(seqnnx.to_linen_params(model), seed + 2))


def inputs(shape=(5, 6, 3), seed=1):
  return normal(seed, shape)


def valid(lengths, steps):
  return np.arange(steps)[None, :] < np.asarray(lengths)[:, None]


def assert_close(a, b, rtol=2e-5, atol=2e-6):
  jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=rtol,
                                                      atol=atol), a, b)


def assert_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  jax.tree.map(np.testing.assert_array_equal, a, b)
