"""Recurrent layers: any cell over time, by one of the recurrence paths.

``RNN`` is seqclf's one recurrent layer: flax ``nn.RNN``'s call API
(lengths, direction, layout), the checks, the initial carry and the dispatch
to the recurrence ``impl`` names (``seqclf.kernels``): the portable
``nn.scan`` path for every cell, and for the LSTM the fused and kernel
paths, which project all steps at once. ``LSTM``, ``GRU`` and ``Elman`` are
``RNN`` with their cell built from plain fields (the same parameters, names
and numbers). None hold global state, so they compose with other Flax code
and work under ``jax.jit``, ``jax.grad``, ``jax.vmap`` and in bfloat16.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from seqclf.kernels import fast_lstm, gpu_lstm, lstm_kernel, paths, reference
from seqclf.nn import cells, initializers
from seqclf.nn.cells import Carry, LSTMCell

Array = jax.Array
Dtype = Any


class _Layer(nn.Module):
  """What every recurrent layer does with its cell: flax ``nn.RNN``'s call
  API (lengths, direction, layout), the checks, the initial carry and the
  dispatch to the recurrence ``impl`` names. Subclasses give ``impl`` and
  ``unroll`` as fields (the cell its ``matmul_precision``); the keyword-only fields
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
    ``init_key``: seqclf's cells start from zeros and ignore it; flax's
    cells draw their initial carry from it as ``nn.RNN`` does.
    """
    return_carry = self.return_carry if return_carry is None else return_carry
    time_major = self.time_major if time_major is None else time_major
    reverse = self.reverse if reverse is None else reverse
    keep_order = self.keep_order if keep_order is None else keep_order
    if inputs.ndim < 2:
      raise ValueError(f'{type(cell).__name__} layer expects inputs of shape '
                       f'(..., time, features), got {inputs.shape}.')
    if getattr(cell, 'num_feature_axes', 1) != 1:
      raise ValueError(f'{type(cell).__name__} has {cell.num_feature_axes} '
                       "feature axes; seqclf's RNN runs cells of one, over "
                       "(..., time, features): use flax's nn.RNN for it.")
    paths.check(self.impl, describe(cell), jax.default_backend())
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
      initial_carry = _initial_carry(cell, batch_shape, inputs.shape[-1],
                                     init_key)
    if self.impl != 'scan':
      carry, outputs = _fused(cell, inputs, initial_carry, seq_lengths,
                              self.unroll, self.impl)
    else:
      carry, outputs = reference.scan(cell, initial_carry, inputs,
                                      self.unroll, seq_lengths)
    if reverse and keep_order:
      outputs = flip_sequences(outputs, seq_lengths)
    if time_major:
      outputs = jnp.moveaxis(outputs, -2, 0)
    return (carry, outputs) if return_carry else outputs


def _initial_carry(cell: nn.Module, batch_shape: tuple[int, ...],
                   features: int, init_key: jax.Array | None) -> Any:
  """Zeros for seqclf's cells (``initialize_carry(batch_shape)``); flax's
  cells (``nn.RNNCellBase``) as ``nn.RNN`` asks them, from ``init_key``
  (default ``jax.random.key(0)``) and one step's input shape."""
  if isinstance(cell, nn.RNNCellBase):
    key = jax.random.key(0) if init_key is None else init_key
    return cell.initialize_carry(key, (*batch_shape, features))
  return cell.initialize_carry(batch_shape)


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

  ``cell`` is a ``seqclf.nn.cells`` cell or, on the ``'scan'`` path, any
  of flax's (``nn.RNNCellBase``: ``nn.LSTMCell``, ``nn.GRUCell``,
  ``nn.OptimizedLSTMCell``, ...), its parameters under ``cell/`` as in
  ``nn.RNN(cell)``. Returns ``(final_carry, outputs)`` with outputs of
  shape (..., time, hidden_size), like ``flax.linen.RNN(...,
  return_carry=True)`` (``nn.RNN``'s default returns the outputs alone;
  ``return_carry=False`` here), and takes ``nn.RNN``'s call keywords
  (``seq_lengths``, ``reverse``, ``keep_order``, ``return_carry``,
  ``time_major``, ``initial_carry``, ``init_key``: ``_Layer.run``), so it
  composes with ``nn.Bidirectional``. ``impl`` picks the recurrence
  (``seqclf.kernels.paths.IMPLS``): ``'scan'`` (``nn.scan``, every cell); for an LSTM cell
  ``'fused'`` (``seqclf.kernels.fast_lstm``, time-major, hand-written
  backward pass), ``'kernel'`` (the same as compiled CPU kernels,
  ``seqclf.kernels.lstm_kernel``) and ``'gpu'`` (GPU kernels with the time
  loop inside, ``seqclf.kernels.gpu_lstm``), which agree with ``'scan'`` to
  float rounding. Every path runs the matmuls at the cell's
  ``matmul_precision``.
  """

  cell: nn.Module
  impl: str = 'scan'  # | 'fused' | 'kernel' | 'gpu' (paths.IMPLS)
  unroll: int = 1

  @nn.compact
  def __call__(self, inputs: Array, initial_carry: Any = None,
               **kwargs: Any) -> Any:
    """``(final_carry, outputs)``; the keywords as ``_Layer.run``."""
    return self.run(self.cell, inputs, initial_carry, **kwargs)


class _CellLayer(_Layer):
  """``RNN`` of the cell ``make_cell`` builds from the layer's fields: the
  same parameters (``cell/…``), initial values and numbers as ``RNN(cell)``.
  The fields every cell layer shares are declared here, once; everything
  after ``hidden_size`` (and ``LSTM``'s ``forget_bias``) is keyword-only."""

  hidden_size: int
  _: dataclasses.KW_ONLY
  dtype: Dtype | None = None  # the compute dtype; None: param_dtype (flax's)
  param_dtype: Dtype = jnp.float32
  unroll: int = 1
  recurrent_init: str = 'orthogonal'  # names in initializers.TABLES
  input_init: str = 'lecun_normal'
  impl: str = 'scan'  # paths.IMPLS; 'fused', 'kernel', 'gpu': LSTM only
  # The matmuls' (seqclf.kernels.precision.PRECISIONS), on every path.
  matmul_precision: str = 'float32'

  def make_cell(self, name: str, features: int) -> nn.Module:
    """The cell, its initializers resolved for inputs of ``features``."""
    inits = initializers.cell_inits(self.input_init, self.recurrent_init,
                                    features, self.hidden_size)
    return self.cell_type(self.hidden_size, dtype=self.dtype, name=name,
                          param_dtype=self.param_dtype,
                          matmul_precision=self.matmul_precision,
                          **self.cell_fields(), **inits)

  def cell_fields(self) -> dict[str, Any]:
    """The cell's own fields beyond the shared ones (``LSTM``: forget_bias)."""
    return {}

  @nn.compact
  def __call__(self, inputs: Array, initial_carry: Any = None,
               **kwargs: Any) -> Any:
    """``(final_carry, outputs)``, as ``RNN.__call__`` (the same keywords)."""
    return self.run(self.make_cell('cell', inputs.shape[-1]), inputs,
                    initial_carry, **kwargs)


class LSTM(_CellLayer):
  """An LSTM layer over (batch, time, features) inputs: ``RNN(LSTMCell(...))``.

  Returns ``(final_carry, outputs)``, ``final_carry = (c, h)`` (by default,
  unlike ``nn.RNN`` and ``seqclf.nnx.LSTM``, which return the outputs
  unless ``return_carry=True``); ``impl`` as in ``RNN`` (``'scan'``,
  ``'fused'``, ``'kernel'``, ``'gpu'``).

  >>> import jax, jax.numpy as jnp
  >>> layer = LSTM(8, forget_bias=1.0)
  >>> x = jnp.ones((2, 5, 3))                       # (batch, time, features)
  >>> params = layer.init(jax.random.key(0), x)
  >>> (c, h), outputs = layer.apply(params, x)
  >>> outputs.shape, h.shape
  ((2, 5, 8), (2, 8))
  """

  forget_bias: float = 1.0
  cell_type = LSTMCell

  def cell_fields(self) -> dict[str, Any]:
    return {'forget_bias': self.forget_bias}


class GRU(_CellLayer):
  """A GRU layer: ``RNN(cells.GRUCell(...))``, ``LSTM``'s interface (the
  ``nn.scan`` path only).

  >>> import jax, jax.numpy as jnp
  >>> x = jnp.ones((2, 5, 3))
  >>> params = GRU(8).init(jax.random.key(0), x)
  >>> h, outputs = GRU(8).apply(params, x)
  >>> outputs.shape
  (2, 5, 8)
  """

  cell_type = cells.GRUCell


class Elman(_CellLayer):
  """An Elman (fully recurrent) layer: ``RNN(cells.ElmanCell(...))`` (the
  ``nn.scan`` path only).

  >>> import jax, jax.numpy as jnp
  >>> x = jnp.ones((2, 5, 3))
  >>> h, outputs = Elman(4).apply(Elman(4).init(jax.random.key(0), x), x)
  >>> outputs.shape
  (2, 5, 4)
  """

  cell_type = cells.ElmanCell


# The layer for each config `cell`.
LAYERS: dict[str, type[_CellLayer]] = {'lstm': LSTM, 'gru': GRU,
                                       'elman': Elman}


def describe(cell: nn.Module, sharded: bool = False) -> paths.Layer:
  """What decides which paths can run ``cell`` (``paths.Layer``)."""
  dtype = jnp.dtype(getattr(cell, 'dtype', None)
                    or getattr(cell, 'param_dtype', jnp.float32))
  kind = type(cell)
  return paths.Layer(
      cell='lstm' if isinstance(cell, LSTMCell) else
      f'{kind.__module__}.{kind.__qualname__}',
      hidden_size=getattr(cell, 'hidden_size', 0), dtype=dtype.name,
      matmul_precision=getattr(cell, 'matmul_precision', 'float32'),
      sharded=sharded)


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
           seq_lengths: Array | None, unroll: int, impl: str
           ) -> tuple[Carry, Array]:
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
                                          cell.forget_bias,
                                          cell.matmul_precision,
                                          lengths=lengths)
    elif impl == 'gpu':
      (c, h), hs = gpu_lstm.lstm_recurrence(cell.project(x), w_h, c0, h0,
                                            cell.forget_bias, lengths,
                                            cell.matmul_precision)
    else:
      (c, h), hs = fast_lstm.lstm_recurrence(cell.project(x), w_h, c0, h0,
                                             cell.forget_bias, unroll, lengths,
                                             cell.matmul_precision)
  outputs = jnp.moveaxis(hs.reshape(steps, *batch_shape, hidden), 0, -2)
  carry = (c.reshape(*batch_shape, hidden), h.reshape(*batch_shape, hidden))
  return carry, outputs


