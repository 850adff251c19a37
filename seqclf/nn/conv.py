"""A convolutional branch over time, beside the recurrence (LSTM-FCN's).

Karim et al.'s LSTM-FCN and MLSTM-FCN classify a series from two summaries
side by side: a recurrent layer's and a fully convolutional network's
(Wang et al.'s FCN: three 1-D convolutions over time, their outputs averaged
over the steps). ``ConvBranch`` is that FCN for ``LSTMClassifier``
(``conv_features``). It differs in two ways, each so that it fits seqclf's
contracts: layer normalization over the channels of each step instead of
batch normalization (no batch statistics to carry in the train state, and
the same output for a row alone or in any batch), and rows of any length:
steps past a row's length are zeroed before every convolution (and the
classifier leaves them out of its mean), so a row's result does not depend
on its padding.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from seqclf.kernels import precision

Array = jax.Array

# FCN's three blocks: (kernel width in steps, filters as a multiple of the
# branch's `features`).
BLOCKS = ((8, 1), (5, 2), (3, 1))


def windows(x: Array, width: int) -> Array:
  """(batch, time, width * features): each step's ``width`` neighbouring
  steps of (batch, time, features) ``x`` side by side, zeros beyond the
  ends (a 'SAME' convolution's receptive field, centred as
  ``lax.conv_general_dilated`` centres it)."""
  time = x.shape[-2]
  left = (width - 1) // 2
  padded = jnp.pad(x, ((0, 0), (left, width - 1 - left), (0, 0)))
  return jnp.concatenate([padded[:, i:i + time] for i in range(width)], -1)


class ConvBranch(nn.Module):
  """FCN's convolutions over (batch, time, features): (batch, time,
  ``features``) outputs, meaningful at each row's valid steps (the caller
  averages them: ``classifier.mean_valid``).

  Each block is a 'SAME' convolution over time (a dense layer on each
  step's window, so it runs at the classifier's ``matmul_precision`` and
  ``dtype`` like every other matmul; flax's default LeCun-normal kernels),
  layer normalization and a ReLU.
  """

  features: int = 128
  dtype: Any = None
  param_dtype: Any = jnp.float32
  matmul_precision: str = 'float32'

  @nn.compact
  def __call__(self, x: Array, seq_lengths: Array | None = None) -> Array:
    """Args:
      x: (batch, time, channels) floats, already standardized.
      seq_lengths: (batch,) valid steps per row; None: all.

    Returns:
      (batch, time, features): the last block's outputs.
    """
    if seq_lengths is not None:
      valid = jnp.arange(x.shape[-2]) < jnp.asarray(seq_lengths)[:, None]
    for k, (width, multiple) in enumerate(BLOCKS):
      if seq_lengths is not None:  # Padding reads as the ends' zeros.
        x = jnp.where(valid[..., None], x, 0)
      x = nn.Dense(
          self.features * multiple, dtype=self.dtype,
          param_dtype=self.param_dtype,
          dot_general=precision.dot_general(self.matmul_precision),
          name=f'conv_{k}')(windows(x, width))
      x = nn.LayerNorm(dtype=self.dtype, param_dtype=self.param_dtype,
                       name=f'norm_{k}')(x)
      x = nn.relu(x)
    return x
