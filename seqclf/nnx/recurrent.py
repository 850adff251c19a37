"""seqclf's recurrent layers as native NNX modules, with ``nnx.RNN``'s contract.

``LSTM``, ``GRU`` and ``Elman`` are constructed eagerly, as NNX modules are
(``LSTM(in_features, hidden_size, *, rngs, impl=…, forget_bias=…, …)``),
and called as ``nnx.RNN`` is: they return the outputs, and ``(carry,
outputs)`` with ``return_carry=True``; they compose with
``nnx.Bidirectional`` and run under ``nnx.jit``, ``nnx.grad``, ``nnx.vmap``
and ``nnx.remat``. Each holds its linen twin's parameters
(``cell/input/kernel``, …) and runs its ``apply`` (``seqclf.nnx.params``):
every path (``scan``, ``fused``, ``kernel``) and option of
``seqclf.nn.LSTM`` is the same code here, with the same numbers.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
from flax import nnx

from seqclf.errors import UsageError
from seqclf.nn import recurrent
from seqclf.nnx.params import LinenParams

Array = jax.Array

# The linen layer fields an NNX layer sets itself or takes as nnx.RNN's.
_OWN = frozenset({'parent', 'name', 'hidden_size', 'return_carry',
                  'time_major', 'reverse', 'keep_order'})


def check_fields(owner: str, linen_type: type, fields: dict[str, Any],
                 own: frozenset[str] = frozenset(),
                 also: tuple[str, ...] = ()) -> None:
  """A ``UsageError`` naming any of ``fields`` that ``linen_type`` lacks
  (or that the NNX module sets itself, ``own``); ``also``: the module's
  own keywords, listed in the message."""
  known = {f.name for f in dataclasses.fields(linen_type)} - own - {
      'parent', 'name'}
  unknown = sorted(set(fields) - known)
  if unknown:
    raise UsageError(f'{owner} has no option {unknown[0]!r}; its options '
                     f'are {sorted(known | set(also))}.', arg=unknown[0])


class _Layer(LinenParams):
  """A seqclf linen cell layer (``linen_type``) as an NNX module."""

  linen_type: type  # the linen layer: recurrent.LSTM, GRU or Elman
  cell_name: str  # its config `cell`, as paths.Layer names it

  def __init__(self, in_features: int, hidden_size: int, *, rngs: nnx.Rngs,
               time_major: bool = False, return_carry: bool = False,
               reverse: bool = False, keep_order: bool = False,
               **fields: Any):
    check_fields(type(self).__name__, self.linen_type, fields, _OWN,
                 ('time_major', 'return_carry', 'reverse', 'keep_order'))
    self.init_params(self.linen_type(hidden_size, **fields), self.cell_name,
                     in_features, rngs)
    self.in_features = in_features
    self.hidden_size = hidden_size
    self.time_major = time_major
    self.return_carry = return_carry
    self.reverse = reverse
    self.keep_order = keep_order

  @property
  def impl(self) -> str:
    """The path this layer runs (``'auto'`` resolved at construction)."""
    return self.linen_module.impl

  def __call__(self, inputs: Array, *, initial_carry: Any = None,
               seq_lengths: Array | None = None,
               return_carry: bool | None = None,
               time_major: bool | None = None, reverse: bool | None = None,
               keep_order: bool | None = None,
               rngs: nnx.Rngs | None = None) -> Any:
    """The outputs (..., time, hidden_size), or ``(carry, outputs)``.

    Args:
      inputs: (..., time, features) floats ((time, ..., features) with
        ``time_major``).
      initial_carry: the carry each row starts from (default zeros; an
        LSTM's is ``(c, h)``).
      seq_lengths: (batch shape) ints, each row's valid steps: its carry
        stops at its last valid step and its outputs from there on are zero
        (flax computes on over the padding); a row of length 0 returns its
        initial carry.
      return_carry, time_major, reverse, keep_order: ``nnx.RNN``'s, each
        defaulting to the attribute of the same name (set at construction).
      rngs: accepted for ``nnx.Bidirectional``, unused: carries start at
        zero.

    Returns:
      The outputs; with ``return_carry``, ``(final_carry, outputs)``.
    """
    del rngs
    pick = lambda given, default: default if given is None else given
    carry, outputs = self.apply(
        inputs, initial_carry, seq_lengths=seq_lengths, return_carry=True,
        time_major=pick(time_major, self.time_major),
        reverse=pick(reverse, self.reverse),
        keep_order=pick(keep_order, self.keep_order))
    if pick(return_carry, self.return_carry):
      return carry, outputs
    return outputs


class LSTM(_Layer):
  """An LSTM layer: ``seqclf.nn.LSTM``'s paths and parameters, as NNX.

  ``LSTM(in_features, hidden_size, *, rngs, impl='scan', forget_bias=1.0,
  dtype=None, param_dtype=jnp.float32, …)``: the keyword options are
  ``seqclf.nn.LSTM``'s fields (``impl``: ``'scan'``, ``'fused'``,
  ``'kernel'`` or ``'auto'``, resolved here; ``matmul_precision``,
  ``unroll``, ``input_init``, ``recurrent_init``), and
  ``time_major``, ``return_carry``, ``reverse``, ``keep_order`` as
  ``nnx.RNN``'s. Called as ``nnx.RNN``: outputs by default, ``(carry,
  outputs)`` with ``return_carry=True``, ``carry = (c, h)``. The
  parameters are ``cell/input/kernel`` (F, 4H), ``cell/input/bias`` and
  ``cell/hidden/kernel`` (H, 4H), gates i, j, f, o, drawn from
  ``rngs.params()`` as ``seqclf.nn.LSTM(hidden_size).init`` draws them.

  >>> import jax.numpy as jnp
  >>> from flax import nnx
  >>> from seqclf import nnx as seqnnx
  >>> layer = seqnnx.LSTM(3, 8, rngs=nnx.Rngs(0))
  >>> x = jnp.ones((2, 5, 3))                       # (batch, time, features)
  >>> layer(x).shape
  (2, 5, 8)
  >>> (c, h), outputs = layer(x, seq_lengths=jnp.array([5, 2]),
  ...                         return_carry=True)
  >>> h.shape, float(abs(outputs[1, 2:]).max())     # zero past the length
  ((2, 8), 0.0)
  """

  linen_type = recurrent.LSTM
  cell_name = 'lstm'


class GRU(_Layer):
  """A GRU layer: ``seqclf.nn.GRU`` as NNX, ``LSTM``'s interface (the
  ``scan`` path only); parameters ``cell/input/kernel`` (F, 3H),
  ``cell/input/bias``, ``cell/hidden/kernel`` and ``cell/hidden/bias``.

  >>> import jax.numpy as jnp
  >>> from flax import nnx
  >>> from seqclf import nnx as seqnnx
  >>> h, outputs = seqnnx.GRU(3, 8, rngs=nnx.Rngs(0))(
  ...     jnp.ones((2, 5, 3)), return_carry=True)
  >>> h.shape, outputs.shape
  ((2, 8), (2, 5, 8))
  """

  linen_type = recurrent.GRU
  cell_name = 'gru'


class Elman(_Layer):
  """An Elman (fully recurrent) layer: ``seqclf.nn.Elman`` as NNX,
  ``LSTM``'s interface (the ``scan`` path only).

  >>> import jax.numpy as jnp
  >>> from flax import nnx
  >>> from seqclf import nnx as seqnnx
  >>> seqnnx.Elman(3, 4, rngs=nnx.Rngs(0))(jnp.ones((2, 5, 3))).shape
  (2, 5, 4)
  """

  linen_type = recurrent.Elman
  cell_name = 'elman'
