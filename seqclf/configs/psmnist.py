"""Permuted sequential MNIST: pixels in a fixed random order (seed stored here).

The same recipe as smnist.py; the permutation is
`seqclf.data.views.permutation(permutation_seed, 784)`, a pure function of the seed,
so the config (saved with every checkpoint) pins it.
Config files are Python and are executed when loaded: only load ones you trust.
"""

import ml_collections

from seqclf.config import base_config


def get_config() -> ml_collections.ConfigDict:
  config = base_config()  # the reference's hyperparameters, then smnist.py's
  config.task = 'pixel'
  config.lr_schedule = 'cosine'
  config.warmup_steps = 500
  config.grad_clip_norm = 1.0
  config.num_train_steps = 30000
  config.eval_every = 2000
  config.checkpoint_every = 2000
  config.eval_batch_size = 500
  config.task = 'permuted'
  config.permutation_seed = 1
  return config
