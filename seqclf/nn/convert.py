"""LSTM parameters between seqclf's layout and flax's ``LSTMCell``.

seqclf's ``LSTMCell`` keeps its four gates in one input kernel (F, 4H) with
one bias and one recurrent kernel (H, 4H), gates in TF's order i, j, f, o, and
adds ``forget_bias`` to the forget gate. flax's linen ``LSTMCell`` and
``OptimizedLSTMCell`` keep one kernel per gate and side (``ii``, ``if``,
``ig``, ``io`` without bias; ``hi``, ``hf``, ``hg``, ``ho`` with the bias),
gates i, f, g (= seqclf's j), o, and no forget bias: its forget gate's bias
is seqclf's plus ``forget_bias``. The conversion is exact both ways (a
reordering, and one addition on the forget bias). ``nnx.LSTMCell`` names its
``if`` kernel ``if_``: ``nnx=True``.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

# seqclf's gate order (i, j, f, o), in flax's names.
GATES = ('i', 'g', 'f', 'o')


def _input_name(gate: str, nnx: bool) -> str:
  return 'if_' if (nnx and gate == 'f') else f'i{gate}'


def to_flax_lstm(cell: Any, forget_bias: float = 1.0, *,
                 nnx: bool = False) -> dict[str, Any]:
  """flax ``LSTMCell`` parameters computing what seqclf's cell computes.

  Args:
    cell: seqclf ``LSTMCell`` parameters, ``{'input': {'kernel', 'bias'},
      'hidden': {'kernel'}}`` (an ``LSTM`` layer's ``params['cell']``).
    forget_bias: the seqclf cell's ``forget_bias``.
    nnx: name the forget gate's input kernel ``if_`` (``nnx.LSTMCell``).

  Returns:
    ``{'ii': {'kernel'}, 'hi': {'kernel', 'bias'}, ...}``, the params of
    linen ``LSTMCell`` / ``OptimizedLSTMCell`` (or the state of
    ``nnx.LSTMCell`` with ``nnx=True``).
  """
  split = lambda a: dict(zip(GATES, jnp.split(a, 4, axis=-1)))
  kx, kh = split(cell['input']['kernel']), split(cell['hidden']['kernel'])
  bias = split(cell['input']['bias'])
  bias['f'] = bias['f'] + forget_bias
  out = {}
  for g in GATES:
    out[_input_name(g, nnx)] = {'kernel': kx[g]}
    out[f'h{g}'] = {'kernel': kh[g], 'bias': bias[g]}
  return out


def from_flax_lstm(params: Any, forget_bias: float = 1.0) -> dict[str, Any]:
  """seqclf ``LSTMCell`` parameters computing what flax's cell computes.

  Args:
    params: linen ``LSTMCell`` / ``OptimizedLSTMCell`` params, or
      ``nnx.LSTMCell``'s state as a dict (its ``if_`` is read too).
    forget_bias: the ``forget_bias`` the seqclf cell will add (subtracted
      from flax's forget bias here).

  Returns:
    ``{'input': {'kernel', 'bias'}, 'hidden': {'kernel'}}``, an ``LSTM``
    layer's ``params['cell']``.
  """
  nnx = 'if_' in params
  kx = [params[_input_name(g, nnx)]['kernel'] for g in GATES]
  kh = [params[f'h{g}']['kernel'] for g in GATES]
  bias = [params[f'h{g}']['bias'] for g in GATES]
  bias[2] = bias[2] - forget_bias
  return {'input': {'kernel': jnp.concatenate(kx, -1),
                    'bias': jnp.concatenate(bias, -1)},
          'hidden': {'kernel': jnp.concatenate(kh, -1)}}
