"""Recurrent sequence classifiers as plain Flax linen modules.

``LSTMCell`` is one time step with the four gates fused into two matmuls
(the GRU and Elman cells are in ``seqclf.cells``). ``RNN`` is the one layer
that runs any cell over time, by one of ``IMPLS`` (``seqclf.kernels``): the
portable ``nn.scan`` path for every cell, and for the LSTM the fused and
kernel paths, which project all steps at once. ``LSTM``, ``GRU`` and
``Elman`` are ``RNN`` with their cell built from plain fields (the same
parameters, names and numbers). ``LSTMClassifier`` stacks layers and
classifies the last output. None of them hold global state, so they compose
with other Flax code and work under ``jax.jit``, ``jax.grad``, ``jax.vmap``
and in bfloat16.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
from collections.abc import Iterator
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from seqclf import cells
from seqclf import initializers
from seqclf.kernels import fast_lstm
from seqclf.kernels import lstm_kernel
from seqclf.kernels import reference

Array = jax.Array
Carry = tuple[Array, Array]  # (c, h)
Dtype = Any
# RNN.impl: nn.scan of the cell (seqclf.kernels.reference, every cell) |
# seqclf.kernels.fast_lstm | its CPU kernel (seqclf.kernels.lstm_kernel).
IMPLS = ('scan', 'fused', 'kernel')
FAST_IMPLS = ('fused', 'kernel')  # LSTM cells only
# config.dtype, the compute dtype (float32: the parameters' own, None).
DTYPES = ('float32', 'bfloat16')


class LSTMCell(nn.Module):
  """An LSTM step in the reference's (TF ``BasicLSTMCell``) gate order i, j, f, o.

  ``forget_bias`` is added to the forget gate's pre-activation, so a fresh
  cell starts by remembering (Gers et al., 2000; TF's default of 1.0).
  Matmuls run in ``dtype``; the cell state and gate nonlinearities stay in
  float32 so bfloat16 compute does not erode the memory over long sequences.
  """

  hidden_size: int
  forget_bias: float = 1.0
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
  recurrent_kernel_init: nn.initializers.Initializer = (
      initializers.in_float32(nn.initializers.orthogonal()))

  # reference.scan projects each step inside the loop (docs/scan_path.md).
  project_in_loop = True

  def setup(self):
    dense = lambda name, init, bias: nn.Dense(
        4 * self.hidden_size, use_bias=bias, kernel_init=init, dtype=self.dtype,
        param_dtype=self.param_dtype, name=name)
    self.input_proj = dense('input', self.kernel_init, True)
    self.hidden_proj = dense('hidden', self.recurrent_kernel_init, False)

  def __call__(self, carry: Carry, x: Array) -> tuple[Carry, Array]:
    """One step from raw input ``x`` of shape (..., features)."""
    return self.step(carry, self.input_proj(x))

  def project(self, x: Array) -> Array:
    """The input half of the gates, for any number of leading axes."""
    return self.input_proj(x)

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
    zeros = jnp.zeros((*batch_shape, self.hidden_size), jnp.float32)
    return zeros, zeros


@functools.partial(jax.checkpoint, static_argnums=(2,))
def _cell_update(gates: Array, c: Array, forget_bias: float) -> Carry:
  """``(c, h)`` from the float32 pre-activations, gate order i, j, f, o."""
  i, j, f, o = jnp.split(gates, 4, axis=-1)
  c = nn.sigmoid(f + forget_bias) * c + nn.sigmoid(i) * jnp.tanh(j)
  return c, nn.sigmoid(o) * jnp.tanh(c)


class _Layer(nn.Module):
  """What every recurrent layer does with its cell: flax ``nn.RNN``'s call
  API (lengths, direction, layout), the checks, the initial carry and the
  dispatch to the recurrence ``impl`` names. Subclasses give ``impl``,
  ``unroll`` and ``matmul_precision`` as fields; the keyword-only fields
  below are ``nn.RNN``'s defaults for the call's overrides, except
  ``return_carry``, True as seqclf's layers always returned the carry."""

  _: dataclasses.KW_ONLY
  return_carry: bool = True
  time_major: bool = False
  reverse: bool = False
  keep_order: bool = False

  def run(self, cell: nn.Module, inputs: Array, initial_carry: Any = None,
          *, init_key: jax.Array | None = None,
          seq_lengths: Array | None = None, return_carry: bool | None = None,
          time_major: bool | None = None, reverse: bool | None = None,
          keep_order: bool | None = None) -> Any:
    """``(final_carry, outputs)`` (or outputs alone without
    ``return_carry``), as ``flax.linen.RNN.__call__`` with the same keywords.

    ``seq_lengths`` (batch shape, int): row b's steps from its length on are
    padding: its carry stops at its last valid step (the final carry) and
    its outputs there are zero, on every ``impl``, forward and backward.
    ``reverse`` reads each row's valid steps last to first (padding stays at
    the end); ``keep_order`` then puts the outputs back in input order.
    ``init_key`` is accepted for ``nn.Bidirectional`` and unused: carries
    start at zero.
    """
    del init_key
    return_carry = self.return_carry if return_carry is None else return_carry
    time_major = self.time_major if time_major is None else time_major
    reverse = self.reverse if reverse is None else reverse
    keep_order = self.keep_order if keep_order is None else keep_order
    name = type(cell).__name__
    if inputs.ndim < 2:
      raise ValueError(f'{name} layer expects inputs of shape (..., time, '
                       f'features), got {inputs.shape}.')
    if self.impl not in IMPLS:
      raise ValueError(f'impl must be one of {IMPLS}, got {self.impl!r}.')
    if self.impl in FAST_IMPLS and not isinstance(cell, LSTMCell):
      raise ValueError(f"impl={self.impl!r} runs only LSTM cells, got {name}; "
                       f"use impl='scan'.")
    if self.matmul_precision != 'float32' and self.impl != 'kernel':
      raise ValueError(
          f"matmul_precision={self.matmul_precision!r} needs "
          f"impl='kernel', got impl={self.impl!r}; use dtype=jnp.bfloat16 "
          f"for bfloat16 compute on the other paths.")
    if time_major:
      inputs = jnp.moveaxis(inputs, 0, -2)
    batch_shape = inputs.shape[:-2]
    if seq_lengths is not None:
      seq_lengths = jnp.asarray(seq_lengths)
      if seq_lengths.shape != batch_shape:
        raise ValueError(f'seq_lengths must have the batch shape '
                         f'{batch_shape}, got {seq_lengths.shape}.')
      if not jnp.issubdtype(seq_lengths.dtype, jnp.integer):
        raise ValueError(f'seq_lengths must be integers, got '
                         f'{seq_lengths.dtype}.')
    if reverse:
      inputs = flip_sequences(inputs, seq_lengths)
    if initial_carry is None:
      initial_carry = cell.initialize_carry(batch_shape)
    if self.impl != 'scan':
      carry, outputs = _fused(cell, inputs, initial_carry, seq_lengths,
                              self.unroll, self.impl, self.matmul_precision)
    else:
      carry, outputs = reference.scan(cell, initial_carry, inputs,
                                      self.unroll, seq_lengths)
    if reverse and keep_order:
      outputs = flip_sequences(outputs, seq_lengths)
    if time_major:
      outputs = jnp.moveaxis(outputs, -2, 0)
    return (carry, outputs) if return_carry else outputs


def flip_sequences(x: Array, seq_lengths: Array | None) -> Array:
  """``x`` (..., time, features) with each row's first ``seq_lengths`` steps
  in reverse order and its padding left at the end (all steps without
  lengths); its own inverse."""
  if seq_lengths is None:
    return jnp.flip(x, -2)
  steps = x.shape[-2]
  # Step t < length reads length - 1 - t; padding maps onto padding.
  index = (seq_lengths[..., None] - 1 - jnp.arange(steps)) % steps
  return jnp.take_along_axis(x, index[..., None], axis=-2)


class RNN(_Layer):
  """Any cell over (..., time, features) inputs: seqclf's one recurrent layer.

  ``cell`` is an ``LSTMCell`` or a ``seqclf.cells`` cell (its parameters
  live under ``cell/``). Returns ``(final_carry, outputs)`` with outputs of
  shape (..., time, hidden_size), like ``flax.linen.RNN(...,
  return_carry=True)``, and takes ``nn.RNN``'s call keywords
  (``seq_lengths``, ``reverse``, ``keep_order``, ``return_carry``,
  ``time_major``, ``initial_carry``, ``init_key``: ``_Layer.run``), so it
  composes with ``nn.Bidirectional``. ``impl`` picks the recurrence
  (IMPLS): ``'scan'`` (``nn.scan``, every cell); for an LSTM cell
  ``'fused'`` (``seqclf.kernels.fast_lstm``, time-major, hand-written
  backward pass) and ``'kernel'`` (the same as compiled CPU kernels,
  ``seqclf.kernels.lstm_kernel``, whose matmuls run at ``matmul_precision``;
  ``'bfloat16'``: on Intel AMX), which agree with ``'scan'`` to float
  rounding.
  """

  cell: nn.Module
  impl: str = 'scan'  # | 'fused' | 'kernel' (IMPLS)
  unroll: int = 1
  matmul_precision: str = 'float32'  # | 'bfloat16' (impl='kernel' only)

  @nn.compact
  def __call__(self, inputs: Array, initial_carry: Any = None,
               **kwargs: Any) -> Any:
    return self.run(self.cell, inputs, initial_carry, **kwargs)


class _CellLayer(_Layer):
  """``RNN`` of the cell ``make_cell`` builds from the subclass's fields: the
  same parameters (``cell/…``), initial values and numbers as
  ``RNN(cell)``."""

  def make_cell(self, name: str, features: int) -> nn.Module:
    raise NotImplementedError

  def cell_inits(self, features: int) -> dict[str, Any]:
    """The cell's initializer fields from the layer's names for them
    (``seqclf.initializers``); ``features``: the input width."""
    return initializers.cell_inits(self.input_init, self.recurrent_init,
                                   features, self.hidden_size)

  @nn.compact
  def __call__(self, inputs: Array, initial_carry: Any = None,
               **kwargs: Any) -> Any:
    """``(final_carry, outputs)``, as ``RNN.__call__`` (the same keywords)."""
    return self.run(self.make_cell('cell', inputs.shape[-1]), inputs,
                    initial_carry, **kwargs)


class LSTM(_CellLayer):
  """An LSTM layer over (batch, time, features) inputs: ``RNN(LSTMCell(...))``.

  Returns ``(final_carry, outputs)``, ``final_carry = (c, h)``; ``impl`` as
  in ``RNN`` (``'scan'``, ``'fused'``, ``'kernel'``).
  """

  hidden_size: int
  forget_bias: float = 1.0
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  unroll: int = 1
  recurrent_init: str = 'orthogonal'  # names in initializers.TABLES
  input_init: str = 'lecun_normal'
  impl: str = 'scan'  # | 'fused' | 'kernel' (IMPLS)
  matmul_precision: str = 'float32'  # | 'bfloat16' (impl='kernel' only)

  def make_cell(self, name: str, features: int) -> LSTMCell:
    return LSTMCell(self.hidden_size, self.forget_bias, dtype=self.dtype,
                    param_dtype=self.param_dtype,
                    **self.cell_inits(features), name=name)


class _ScanCellLayer(_CellLayer):
  """A GRU or Elman layer: its fields, and its cell built from ``cell_type``
  (a subclass attribute). These cells run on the scan path only."""

  hidden_size: int
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  unroll: int = 1
  recurrent_init: str = 'orthogonal'
  input_init: str = 'lecun_normal'
  impl: str = 'scan'  # the only path for these cells
  matmul_precision: str = 'float32'

  def make_cell(self, name: str, features: int) -> nn.Module:
    return self.cell_type(self.hidden_size, dtype=self.dtype, name=name,
                          param_dtype=self.param_dtype,
                          **self.cell_inits(features))


class GRU(_ScanCellLayer):
  """A GRU layer: ``RNN(cells.GRUCell(...))``, ``LSTM``'s interface."""

  cell_type = cells.GRUCell


class Elman(_ScanCellLayer):
  """An Elman (fully recurrent) layer: ``RNN(cells.ElmanCell(...))``."""

  cell_type = cells.ElmanCell


# The layer for each config `cell`; each takes the fields of GRU.
LAYERS: dict[str, type[_CellLayer]] = {'lstm': LSTM, 'gru': GRU,
                                       'elman': Elman}
CELLS = tuple(LAYERS)  # LSTMClassifier.cell (config `cell`)


@contextlib.contextmanager
def _forward_mode_names_scan(impl: str) -> Iterator[None]:
  """jax's error for forward-mode autodiff of a custom VJP, with the fix.

  The fused and kernel paths are custom VJPs (their backward passes are
  hand-written), which jax differentiates in reverse mode only; the error is
  raised while tracing, so it names the path that has forward mode.
  """
  try:
    yield
  except TypeError as e:
    if 'forward-mode' not in str(e):
      raise
    raise TypeError(
        f"impl={impl!r} has a hand-written backward pass (a custom VJP), which "
        "jax differentiates in reverse mode only: use impl='scan' for "
        "forward-mode autodiff (jax.jvp, jax.jacfwd, jax.hessian).") from e


def _fused(cell: LSTMCell, inputs: Array, carry: Carry,
           seq_lengths: Array | None, unroll: int, impl: str,
           matmul_precision: str) -> tuple[Carry, Array]:
  """``LSTM`` via ``fast_lstm`` or its kernel: time-major, one batch axis."""
  batch_shape, hidden = inputs.shape[:-2], cell.hidden_size
  steps, features = inputs.shape[-2:]
  batch = math.prod(batch_shape)
  if impl == 'kernel':
    # Created exactly as the other paths create them, even with nothing to run.
    w_x, b = cell.input_params(features)
    w_h = cell.recurrent_kernel()
  else:
    w_h = cell.recurrent_kernel()
  if not steps or not batch:  # Nothing to run: the initial carry comes back.
    if impl != 'kernel':
      cell.project(jnp.zeros((1, features), inputs.dtype))
    return carry, jnp.zeros((*batch_shape, steps, hidden), jnp.float32)
  x = jnp.moveaxis(inputs, -2, 0).reshape(steps, batch, features)
  c0, h0 = (v.reshape(batch, hidden) for v in carry)
  lengths = None if seq_lengths is None else seq_lengths.reshape(batch)
  with _forward_mode_names_scan(impl):
    if impl == 'kernel':
      (c, h), hs = lstm_kernel.lstm_layer(x, w_x, b, w_h, c0, h0,
                                          cell.forget_bias, matmul_precision,
                                          lengths=lengths)
    else:
      (c, h), hs = fast_lstm.lstm_recurrence(cell.project(x), w_h, c0, h0,
                                             cell.forget_bias, unroll, lengths)
  outputs = jnp.moveaxis(hs.reshape(steps, *batch_shape, hidden), 0, -2)
  carry = (c.reshape(*batch_shape, hidden), h.reshape(*batch_shape, hidden))
  return carry, outputs


class LSTMClassifier(nn.Module):
  """Stacked recurrent layers, then a dense layer on the last time step's output.

  ``cell`` picks the recurrence (``lstm``, or ``gru``/``elman`` from
  ``seqclf.cells``); layer ``k`` is named ``{cell}_{k}``, so the default LSTM's
  parameters keep their names. ``bidirectional`` adds a ``{cell}_{k}_reverse``
  layer reading the sequence backwards; its outputs are concatenated to the
  forward ones, and the head sees the forward last step beside the backward
  first step (each direction's summary of the whole sequence).
  ``dropout_rate`` drops between stacked layers when ``train=True`` (needs a
  ``'dropout'`` rng). It reads float (batch, time, features) sequences and
  knows nothing of where they come from: how a dataset's examples become
  sequences (an image's rows, or its pixels in some order) is the data's
  (``seqclf.datasets.view``). Its one preprocessing layer standardizes the
  inputs as ``(x - input_mean) / input_std`` (identity by default), inside
  the model so that every caller of ``apply`` (training, evaluation,
  prediction, an exported function, your own code) feeds it the same data.
  """

  num_classes: int = 10
  hidden_size: int = 128
  num_layers: int = 1
  forget_bias: float = 1.0
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  unroll: int = 1
  cell: str = 'lstm'
  recurrent_init: str = 'orthogonal'  # names in initializers.TABLES
  input_init: str = 'lecun_normal'
  head_init: str = 'lecun_normal'
  head_bias_init: str = 'zeros'
  bidirectional: bool = False
  dropout_rate: float = 0.0
  impl: str = 'scan'  # 'scan' | 'fused' | 'kernel' (IMPLS; the last two: LSTM)
  matmul_precision: str = 'float32'  # LSTM layers with impl='kernel'
  input_mean: float = 0.0
  input_std: float = 1.0

  @nn.compact
  def __call__(self, inputs: Array, train: bool = False,
               seq_lengths: Array | None = None) -> Array:
    """Maps (batch, time, features) sequences to (batch, num_classes) logits.

    ``seq_lengths`` (batch,) int counts each row's valid steps; the head then
    sees each row's last valid step (and, bidirectional, the reverse
    direction's first).
    """
    if self.cell not in CELLS:
      raise ValueError(f'cell must be one of {CELLS}, got {self.cell!r}.')

    def layer(name: str):
      extra = {'forget_bias': self.forget_bias} if self.cell == 'lstm' else {}
      return LAYERS[self.cell](
          self.hidden_size, dtype=self.dtype, param_dtype=self.param_dtype,
          unroll=self.unroll, recurrent_init=self.recurrent_init,
          input_init=self.input_init, impl=self.impl,
          matmul_precision=self.matmul_precision, name=name, **extra)

    x = (inputs - self.input_mean) / self.input_std
    for k in range(self.num_layers):
      if k:
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
      _, forward = layer(f'{self.cell}_{k}')(x, seq_lengths=seq_lengths)
      last = last_valid(forward, seq_lengths)
      if not self.bidirectional:
        x = forward
        continue
      _, backward = layer(f'{self.cell}_{k}_reverse')(
          x, seq_lengths=seq_lengths, reverse=True, keep_order=True)
      x = jnp.concatenate([forward, backward], -1)
      last = jnp.concatenate([last, backward[..., 0, :]], -1)
    logits = nn.Dense(
        self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype,
        kernel_init=initializers.resolve('head_init', self.head_init),
        bias_init=initializers.resolve('head_bias_init', self.head_bias_init),
        name='head')(last)
    return logits.astype(jnp.float32)


def last_valid(outputs: Array, seq_lengths: Array | None) -> Array:
  """Each row's output at its last valid step (the last step without
  lengths; zeros for an empty row) from (..., time, features) outputs."""
  if seq_lengths is None:
    return outputs[..., -1, :]
  index = jnp.maximum(jnp.asarray(seq_lengths) - 1, 0)[..., None, None]
  return jnp.take_along_axis(outputs, index, axis=-2)[..., 0, :]


# LSTMClassifier fields no config key sets: `impl` is resolved by the caller,
# the rest are flax's own.
_NOT_FROM_CONFIG = frozenset({'impl', 'param_dtype', 'parent', 'name'})


def from_config(config: Any, impl: str) -> LSTMClassifier:
  """The classifier ``config`` (``seqclf.config``) describes, its LSTM layers
  run by ``impl`` (one of IMPLS: ``auto`` is resolved by the caller, who knows
  the devices and batch it runs on).

  Every other field of ``LSTMClassifier`` is read from the config key of the
  same name, so a new model field needs only its default in
  ``config.base_config``; ``dtype`` is named there (``DTYPES``).
  """
  kwargs = {f.name: config[f.name]
            for f in dataclasses.fields(LSTMClassifier)
            if f.name not in _NOT_FROM_CONFIG}
  kwargs['dtype'] = (None if config.dtype == 'float32'
                     else jnp.dtype(config.dtype))
  return LSTMClassifier(impl=impl, **kwargs)
