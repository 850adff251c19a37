"""Recurrent cells: one time step of an LSTM, a GRU or an Elman network.

Every cell has the same interface: ``project(x)`` (the input half of the
pre-activations, for any number of leading axes, so a layer can project all
time steps in one matmul), ``step(carry, projected)`` (what must stay inside
the recurrence), ``__call__(carry, x)`` (both, flax's cell call) and
``initialize_carry(batch_shape)``. ``seqclf.nn.recurrent.RNN`` runs any of
them over time. Matmuls run in ``dtype`` at ``matmul_precision``
(``seqclf.kernels.precision``); the nonlinearities and the carry stay in
float32, so bfloat16 compute does not erode the memory over long sequences.
Initializers: ``seqclf.nn.initializers``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from seqclf.kernels import precision
from seqclf.nn import initializers

Array = jax.Array
Carry = tuple[Array, Array]  # an LSTM's (c, h)
Dtype = Any
Initializer = nn.initializers.Initializer


class _Cell(nn.Module):
  """What every cell shares: its fields, declared once (after
  ``hidden_size`` keyword-only, but for ``LSTMCell``'s ``forget_bias``), the
  input and recurrent projections of its ``gates`` gates, and flax's call."""

  hidden_size: int
  _: dataclasses.KW_ONLY
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  kernel_init: Initializer = nn.initializers.lecun_normal()
  recurrent_kernel_init: Initializer = initializers.in_float32(
      nn.initializers.orthogonal())
  matmul_precision: str = 'float32'  # precision.PRECISIONS

  gates = 1
  hidden_bias = False

  def setup(self):
    dense = lambda name, init, bias: nn.Dense(
        self.gates * self.hidden_size, use_bias=bias, kernel_init=init,
        dtype=self.dtype, param_dtype=self.param_dtype, name=name,
        dot_general=precision.dot_general(self.matmul_precision))
    self.input_proj = dense('input', self.kernel_init, True)
    self.hidden_proj = dense('hidden', self.recurrent_kernel_init,
                             self.hidden_bias)

  def __call__(self, carry: Any, x: Array) -> tuple[Any, Array]:
    """One step from raw input ``x`` of shape (..., features)."""
    return self.step(carry, self.project(x))

  def project(self, x: Array) -> Array:
    """The input half of the pre-activations, for any leading axes."""
    return self.input_proj(x)

  def initialize_carry(self, batch_shape: tuple[int, ...]) -> Any:
    return jnp.zeros((*batch_shape, self.hidden_size), jnp.float32)


class LSTMCell(_Cell):
  """An LSTM step in the reference's (TF ``BasicLSTMCell``) gate order i, j, f, o.

  ``forget_bias`` is added to the forget gate's pre-activation, so a fresh
  cell starts by remembering (Gers et al., 2000; TF's default of 1.0).
  Matmuls run in ``dtype``; the cell state and gate nonlinearities stay in
  float32 so bfloat16 compute does not erode the memory over long sequences.
  """

  forget_bias: float = 1.0

  gates = 4
  # reference.scan projects each step inside the loop (docs/scan_path.md).
  project_in_loop = True

  def step(self, carry: Carry, projected: Array) -> tuple[Carry, Array]:
    """One step from an already projected input (``project(x)``).

    The gate nonlinearities are rematerialized under autodiff: the backward
    pass keeps the float32 pre-activations (B, 4H) per step, not the five
    gate values autodiff would store (each twice, 10 x (B, H)), which halves
    a scanned layer's scratch memory for the backward pass
    (docs/scan_path.md).
    """
    c, h = carry
    gates = (projected + self.hidden_proj(h)).astype(jnp.float32)
    c, h = _cell_update(gates, c, self.forget_bias)
    return (c, h), h

  def input_params(self, features: int) -> tuple[Array, Array]:
    """The input projection's kernel and bias, for kernels that fuse it."""
    if self.is_initializing():  # Creates the parameters exactly as `project`.
      self.input_proj(jnp.zeros((1, features), self.param_dtype))
    params = self.input_proj.variables['params']
    dtype = self.dtype or params['kernel'].dtype
    return params['kernel'].astype(dtype), params['bias'].astype(dtype)

  def recurrent_kernel(self) -> Array:
    """``W_h`` in the compute dtype, for recurrences that bypass ``step``."""
    if self.is_initializing():  # Creates the parameter exactly as `step` does.
      self.hidden_proj(jnp.zeros((1, self.hidden_size), self.param_dtype))
    kernel = self.hidden_proj.variables['params']['kernel']
    return kernel.astype(self.dtype or kernel.dtype)

  def initialize_carry(self, batch_shape: tuple[int, ...]) -> Carry:
    zeros = super().initialize_carry(batch_shape)
    return zeros, zeros


@functools.partial(jax.checkpoint, static_argnums=(2,))
def _cell_update(gates: Array, c: Array, forget_bias: float) -> Carry:
  """``(c, h)`` from the float32 pre-activations, gate order i, j, f, o."""
  i, j, f, o = jnp.split(gates, 4, axis=-1)
  c = nn.sigmoid(f + forget_bias) * c + nn.sigmoid(i) * jnp.tanh(j)
  return c, nn.sigmoid(o) * jnp.tanh(c)


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

