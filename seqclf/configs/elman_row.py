"""The reference job with a fully recurrent (Elman, tanh) cell of 128 units.

Gradients of a plain tanh recurrence spike more than an LSTM's, hence the
global-norm clipping; everything else is the reference's.
Config files are Python and are executed when loaded: only load ones you trust.
"""

import ml_collections

from seqclf.config import base_config


def get_config() -> ml_collections.ConfigDict:
  config = base_config()  # the reference's hyperparameters (default.py), raw pixels
  config.cell = 'elman'
  config.grad_clip_norm = 1.0
  return config
