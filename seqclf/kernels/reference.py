"""The portable recurrence (``impl='scan'``): ``nn.scan`` of a cell's step.

Runs on every backend and under every transform, for every cell: seqclf's
(``seqclf.nn.cells``: ``project`` and ``step``) and flax's own
(``nn.RNNCellBase``: ``LSTMCell``, ``GRUCell``, ``OptimizedLSTMCell``, ...,
called as ``cell(carry, x)``, as ``nn.RNN`` calls them). The fused and
kernel paths are tested against it. The parameters are broadcast into the
loop, so the scanned layer has exactly the cell's parameters.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array


def _raw_step(cell: nn.Module, carry: Any, x: Array):
  return cell.step(carry, cell.project(x))


def _call_step(cell: nn.Module, carry: Any, x: Array):
  return cell(carry, x)


def _projected_step(cell: nn.Module, carry: Any, projected: Array):
  return cell.step(carry, projected)


def _masked(step):
  """``step`` where padding (``valid`` False) keeps the carry, outputs 0."""
  def masked_step(cell: nn.Module, carry: Any, xs):
    x, valid = xs
    new, y = step(cell, carry, x)
    new = jax.tree.map(lambda n, o: jnp.where(valid, n, o), new, carry)
    return new, jnp.where(valid, y, jnp.zeros_like(y))
  return masked_step


def scan(cell: nn.Module, carry: Any, inputs: Array, unroll: int = 1,
         seq_lengths: Array | None = None) -> tuple[Any, Array]:
  """``(final_carry, outputs)`` of ``cell`` over (..., time, features) inputs.

  ``seq_lengths`` (batch shape, int): each row's steps from its length on
  are padding: the carry stays as its last valid step left it (so that is
  the final carry) and the outputs there are zero. A cell with
  ``project_in_loop`` (the LSTM) projects each step's input inside the loop,
  as flax's ``nn.RNN`` does: on XLA:CPU one large projection before the loop
  measured slower for it (docs/scan_path.md). The others project every step
  in one matmul before the loop; flax's cells, which have no ``project``,
  run their own ``__call__`` each step.
  """
  if isinstance(cell, nn.RNNCellBase):
    step, xs = _call_step, inputs
  elif getattr(cell, 'project_in_loop', False):
    step, xs = _raw_step, inputs
  else:
    step, xs = _projected_step, cell.project(inputs)
  if seq_lengths is not None:
    steps = inputs.shape[-2]
    valid = jnp.arange(steps) < jnp.asarray(seq_lengths)[..., None]
    step, xs = _masked(step), (xs, valid[..., None])
  scanned = nn.scan(step, variable_broadcast='params',
                    split_rngs={'params': False}, in_axes=-2, out_axes=-2,
                    unroll=unroll)
  return scanned(cell, carry, xs)
