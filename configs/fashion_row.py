"""Fashion-MNIST read row by row: LSTM-128, Adam 2e-3 with warmup + cosine, 5000 x 100.

Needs `apt-get install -y dataset-fashion-mnist` and
`seqclf prepare-data --dataset=fashion_mnist`. Fashion-MNIST is harder than
MNIST, so it trains ~9 epochs instead of the reference's ~2.
Config files are Python and are executed when loaded: only load ones you trust.
"""

import ml_collections

from seqclf.config import base_config


def get_config() -> ml_collections.ConfigDict:
  config = base_config()  # the reference's hyperparameters (default.py), raw pixels
  config.dataset = 'fashion_mnist'
  config.learning_rate = 2e-3
  config.lr_schedule = 'cosine'
  config.warmup_steps = 100
  config.grad_clip_norm = 1.0
  config.num_train_steps = 5000
  config.eval_every = 1000
  config.checkpoint_every = 1000
  return config
