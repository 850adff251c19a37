"""GRU and Elman cells, with LSTM's interface (initializers: seqclf.initializers).

Every cell has the interface of ``seqclf.models.LSTMCell``: ``project(x)``
(the input half of the pre-activations, for any number of leading axes, so a
layer projects all time steps in one matmul), ``step(carry, projected)`` (what
must stay inside the recurrence) and ``initialize_carry(batch_shape)``.
``seqclf.models.RNN`` runs any of them over time (``models.GRU`` and
``models.Elman`` build it from plain fields), so the classifier stacks any
of them the same way. Matmuls run in
``dtype``; the nonlinearities and the carry stay in float32.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from seqclf import initializers

Array = jax.Array
Dtype = Any
Initializer = nn.initializers.Initializer


class _Cell(nn.Module):
  """Shared fields and the two projections of a ``gates``-gate cell."""

  hidden_size: int
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  kernel_init: Initializer = nn.initializers.lecun_normal()
  recurrent_kernel_init: Initializer = initializers.in_float32(
      nn.initializers.orthogonal())

  gates = 1
  hidden_bias = False

  def setup(self):
    dense = lambda name, init, bias: nn.Dense(
        self.gates * self.hidden_size, use_bias=bias, kernel_init=init,
        dtype=self.dtype, param_dtype=self.param_dtype, name=name)
    self.input_proj = dense('input', self.kernel_init, True)
    self.hidden_proj = dense('hidden', self.recurrent_kernel_init,
                             self.hidden_bias)

  def __call__(self, carry: Array, x: Array) -> tuple[Array, Array]:
    """One step from raw input ``x`` of shape (..., features)."""
    return self.step(carry, self.project(x))

  def project(self, x: Array) -> Array:
    return self.input_proj(x)

  def initialize_carry(self, batch_shape: tuple[int, ...]) -> Array:
    return jnp.zeros((*batch_shape, self.hidden_size), jnp.float32)


class GRUCell(_Cell):
  """A GRU step (Cho et al., 2014), gates in order r, z, n.

  The candidate uses ``r * (W_hn h + b_hn)`` (cuDNN/PyTorch form), which keeps
  every hidden-side product in one matmul per step: hence the hidden bias.
  ``h' = (1 - z) * n + z * h``.
  """

  gates = 3
  hidden_bias = True

  def step(self, carry: Array, projected: Array) -> tuple[Array, Array]:
    h = carry
    x_r, x_z, x_n = jnp.split(projected.astype(jnp.float32), 3, axis=-1)
    h_r, h_z, h_n = jnp.split(self.hidden_proj(h).astype(jnp.float32), 3,
                              axis=-1)
    r = nn.sigmoid(x_r + h_r)
    z = nn.sigmoid(x_z + h_z)
    n = jnp.tanh(x_n + r * h_n)
    h = (1.0 - z) * n + z * h
    return h, h


class ElmanCell(_Cell):
  """A fully recurrent (Elman, 1990) step: ``h' = tanh(W x + b + U h)``."""

  def step(self, carry: Array, projected: Array) -> tuple[Array, Array]:
    h = jnp.tanh((projected + self.hidden_proj(carry)).astype(jnp.float32))
    return h, h


CELLS: dict[str, type[_Cell]] = {'gru': GRUCell, 'elman': ElmanCell}
