"""Parameter initializers by the config's name for them, one table per role.

The roles are the config keys ``input_init`` (a cell's input kernel),
``recurrent_init`` (its recurrent kernel), ``head_init`` and
``head_bias_init`` (the output layer). ``config.validate`` accepts exactly the
names in ``TABLES``; ``resolve`` turns a name into a flax initializer (drawn
in float32 for any parameter dtype: ``in_float32``).
The defaults are flax's (LeCun-normal input and head kernels, zero head bias)
and an orthogonal recurrent kernel. The rest reproduce other recipes, chiefly
the TF1 tutorial's: one Glorot-uniform kernel over the concatenated
``[x, h]`` (``concat_glorot_uniform``, which seqclf stores as its input and
recurrent parts) and ``tf.random_normal`` (``normal``, std 1) for the head.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

Initializer = nn.initializers.Initializer
# A table entry: the rows of the cell's concatenated [x, h] kernel (input
# features + hidden size) to an initializer; only concat_glorot_uniform
# depends on them.
Factory = Callable[[int], Initializer]


def identity_init(scale: float = 1.0) -> Initializer:
  """``scale * I`` for (n, n), tiled per gate for (n, g * n) recurrent kernels.

  The IRNN initialisation (Le et al., 2015): a fresh recurrence copies its
  state forward, so gradients neither vanish nor explode at the start.
  """

  def init(key, shape, dtype=jnp.float32):
    del key
    rows, cols = shape
    if cols % rows:
      raise ValueError(f'identity init needs a (n, k*n) kernel, got {shape}.')
    return scale * jnp.tile(jnp.eye(rows, dtype=dtype), (1, cols // rows))

  return init


def concat_glorot_uniform(concat_rows: int) -> Initializer:
  """Glorot-uniform for a block of rows of one (concat_rows, cols) kernel.

  TF1's ``BasicLSTMCell`` multiplies ``[x, h]`` by one (F + H, 4H) kernel
  drawn as Glorot-uniform, limit ``sqrt(6 / (F + H + 4H))``; seqclf keeps its
  input (F, 4H) and recurrent (H, 4H) rows as two parameters. Entries are
  i.i.d., so drawing each block with the whole kernel's limit gives the same
  distribution as drawing the whole kernel and splitting it.
  """

  def init(key, shape, dtype=jnp.float32):
    limit = math.sqrt(6.0 / (concat_rows + shape[-1]))
    return jax.random.uniform(key, shape, dtype, -limit, limit)

  return init


def in_float32(init: Initializer) -> Initializer:
  """``init`` drawn in float32 and cast to the parameter dtype: the
  orthogonal initializer's QR has no bfloat16 kernel, and a bfloat16 draw
  would not be the float32 one rounded. Float32 parameters are unchanged."""

  def float32_init(key, shape, dtype=jnp.float32):
    return init(key, shape, jnp.float32).astype(dtype)

  return float32_init


def _fixed(initializer: Initializer) -> Factory:
  return lambda concat_rows: initializer


TABLES: dict[str, dict[str, Factory]] = {
    'input_init': {
        'lecun_normal': _fixed(nn.initializers.lecun_normal()),
        'glorot_uniform': _fixed(nn.initializers.glorot_uniform()),
        'concat_glorot_uniform': concat_glorot_uniform,
    },
    'recurrent_init': {
        'orthogonal': _fixed(nn.initializers.orthogonal()),
        'identity': _fixed(identity_init()),
        'concat_glorot_uniform': concat_glorot_uniform,
    },
    'head_init': {
        'lecun_normal': _fixed(nn.initializers.lecun_normal()),
        'glorot_uniform': _fixed(nn.initializers.glorot_uniform()),
        'normal': _fixed(nn.initializers.normal(1.0)),  # tf.random_normal
    },
    'head_bias_init': {
        'zeros': _fixed(nn.initializers.zeros),
        'normal': _fixed(nn.initializers.normal(1.0)),
    },
}


def resolve(role: str, name: str, concat_rows: int = 0) -> Initializer:
  """The initializer ``name`` of ``role`` (a key of ``TABLES``).

  ``concat_rows``: input features + hidden size of the cell, for
  ``concat_glorot_uniform``.
  """
  table = TABLES[role]
  if name not in table:
    raise ValueError(f'{role} must be one of {tuple(table)}, got {name!r}.')
  return in_float32(table[name](concat_rows))


def cell_inits(input_init: str, recurrent_init: str, features: int,
               hidden_size: int) -> dict[str, Initializer]:
  """A cell's ``kernel_init`` and ``recurrent_kernel_init`` fields from names."""
  rows = features + hidden_size
  return {'kernel_init': resolve('input_init', input_init, rows),
          'recurrent_kernel_init': resolve('recurrent_init', recurrent_init,
                                           rows)}
