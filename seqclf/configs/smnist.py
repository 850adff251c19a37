"""Sequential MNIST: one pixel per step (784 x 1), LSTM-128, as Cooijmans et al. 2017.

Adam 1e-3 with warmup + cosine and global-norm clipping (long sequences),
30,000 x 100 (~55 epochs): too long for a 2-core CPU, sized for a GPU.
Config files are Python and are executed when loaded: only load ones you trust.
"""

import ml_collections

from seqclf.config import base_config


def get_config() -> ml_collections.ConfigDict:
  config = base_config()  # the reference's hyperparameters (default.py), raw pixels
  config.task = 'pixel'
  config.learning_rate = 1e-3
  config.lr_schedule = 'cosine'
  config.warmup_steps = 500
  config.grad_clip_norm = 1.0
  config.num_train_steps = 30000
  config.eval_every = 2000
  config.checkpoint_every = 2000
  config.eval_batch_size = 500
  return config
