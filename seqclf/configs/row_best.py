"""Row-wise MNIST pushed for accuracy: 2 x LSTM-128, Adam 2e-3 warmup + cosine, clipping.

About 18 epochs (10,000 x 100) instead of the reference's ~2.
Config files are Python and are executed when loaded: only load ones you trust.
"""

import ml_collections

from seqclf.config import base_config


def get_config() -> ml_collections.ConfigDict:
  config = base_config()  # the reference's hyperparameters (default.py), raw pixels
  config.num_layers = 2
  config.learning_rate = 2e-3
  config.lr_schedule = 'cosine'
  config.warmup_steps = 200
  config.grad_clip_norm = 1.0
  config.num_train_steps = 10000
  config.eval_every = 1000
  config.checkpoint_every = 1000
  return config
