"""LSTM parameters between seqclf's layout and flax's LSTM cells.

seqclf's ``LSTMCell`` keeps its four gates in one input kernel (F, 4H) with
one bias and one recurrent kernel (H, 4H), gates in TF's order i, j, f, o, and
adds ``forget_bias`` to the forget gate. flax has two layouts, and no forget
bias (its forget gate's bias is seqclf's plus ``forget_bias``):

* per gate: linen ``LSTMCell`` and ``OptimizedLSTMCell``, and
  ``nnx.LSTMCell``, keep one kernel per gate and side (``ii``, ``if``,
  ``ig``, ``io`` without bias; ``hi``, ``hf``, ``hg``, ``ho`` with the bias),
  gates i, f, g (= seqclf's j), o; ``nnx.LSTMCell`` names its ``if`` kernel
  ``if_`` (``nnx=True``);
* fused: ``nnx.OptimizedLSTMCell`` keeps the four gates in one input kernel
  ``dense_i`` (F, 4H, no bias) and one recurrent ``dense_h`` (H, 4H, with the
  bias), gates in flax's order i, f, g, o (``nnx=True, optimized=True``).

The conversion is exact both ways (a reordering, and one addition on the
forget bias). The NNX cells' parameters as a dict:
``nnx.to_pure_dict(nnx.state(cell, nnx.Param))``; back:
``nnx.update(cell, params)``.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from seqclf.errors import UsageError

# seqclf's gate order (i, j, f, o), in flax's names.
GATES = ('i', 'g', 'f', 'o')
# flax's gate order, as nnx.OptimizedLSTMCell stacks them.
FLAX_GATES = ('i', 'f', 'g', 'o')


def _input_name(gate: str, nnx: bool) -> str:
  return 'if_' if (nnx and gate == 'f') else f'i{gate}'


def to_flax_lstm(cell: Any, forget_bias: float = 1.0, *, nnx: bool = False,
                 optimized: bool = False) -> dict[str, Any]:
  """flax ``LSTMCell`` parameters computing what seqclf's cell computes.

  Args:
    cell: seqclf ``LSTMCell`` parameters, ``{'input': {'kernel', 'bias'},
      'hidden': {'kernel'}}`` (an ``LSTM`` layer's ``params['cell']``).
    forget_bias: the seqclf cell's ``forget_bias``.
    nnx: name the forget gate's input kernel ``if_`` (``nnx.LSTMCell``).
    optimized: with ``nnx``, ``nnx.OptimizedLSTMCell``'s fused layout (linen's
      ``OptimizedLSTMCell`` has ``LSTMCell``'s parameters: leave it False).

  Returns:
    ``{'ii': {'kernel'}, 'hi': {'kernel', 'bias'}, ...}``, the params of
    linen ``LSTMCell`` / ``OptimizedLSTMCell`` (or the state of
    ``nnx.LSTMCell`` with ``nnx=True``); ``{'dense_i': {'kernel'},
    'dense_h': {'kernel', 'bias'}}`` with ``optimized``.
  """
  if optimized and not nnx:
    raise UsageError(
        'optimized=True is nnx.OptimizedLSTMCell\'s layout: pass nnx=True '
        "too (flax.linen's OptimizedLSTMCell has LSTMCell's parameters: "
        'optimized=False).', arg='optimized')
  split = lambda a: dict(zip(GATES, jnp.split(a, 4, axis=-1)))
  kx, kh = split(cell['input']['kernel']), split(cell['hidden']['kernel'])
  bias = split(cell['input']['bias'])
  bias['f'] = bias['f'] + forget_bias
  if optimized:
    fuse = lambda parts: jnp.concatenate([parts[g] for g in FLAX_GATES], -1)
    return {'dense_i': {'kernel': fuse(kx)},
            'dense_h': {'kernel': fuse(kh), 'bias': fuse(bias)}}
  out = {}
  for g in GATES:
    out[_input_name(g, nnx)] = {'kernel': kx[g]}
    out[f'h{g}'] = {'kernel': kh[g], 'bias': bias[g]}
  return out


def from_flax_lstm(params: Any, forget_bias: float = 1.0) -> dict[str, Any]:
  """seqclf ``LSTMCell`` parameters computing what flax's cell computes.

  Args:
    params: linen ``LSTMCell`` / ``OptimizedLSTMCell`` params, or the state
      of ``nnx.LSTMCell`` (its ``if_`` is read too) or
      ``nnx.OptimizedLSTMCell`` (``dense_i``, ``dense_h``) as a dict.
    forget_bias: the ``forget_bias`` the seqclf cell will add (subtracted
      from flax's forget bias here).

  Returns:
    ``{'input': {'kernel', 'bias'}, 'hidden': {'kernel'}}``, an ``LSTM``
    layer's ``params['cell']``.
  """
  if 'dense_i' in params:
    unfuse = lambda a: dict(zip(FLAX_GATES, jnp.split(a, 4, axis=-1)))
    kx = unfuse(params['dense_i']['kernel'])
    kh = unfuse(params['dense_h']['kernel'])
    biases = unfuse(params['dense_h']['bias'])
    kx, kh, bias = ([parts[g] for g in GATES] for parts in (kx, kh, biases))
  else:
    nnx = 'if_' in params
    kx = [params[_input_name(g, nnx)]['kernel'] for g in GATES]
    kh = [params[f'h{g}']['kernel'] for g in GATES]
    bias = [params[f'h{g}']['bias'] for g in GATES]
  bias[2] = bias[2] - forget_bias
  return {'input': {'kernel': jnp.concatenate(kx, -1),
                    'bias': jnp.concatenate(bias, -1)},
          'hidden': {'kernel': jnp.concatenate(kh, -1)}}
