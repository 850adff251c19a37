"""The reference job with a GRU cell: row-wise MNIST, GRU-128, Adam 1e-3, 1000 x 100.

Config files are Python and are executed when loaded: only load ones you trust.
"""

import ml_collections

from seqclf.config import base_config


def get_config() -> ml_collections.ConfigDict:
  config = base_config()  # the reference's hyperparameters (default.py), raw pixels
  config.cell = 'gru'
  return config
