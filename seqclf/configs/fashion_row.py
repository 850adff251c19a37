"""Fashion-MNIST read row by row: 2 x bidirectional LSTM-128, random mirroring, 10000 x 100.

Needs `apt-get install -y dataset-fashion-mnist` and
`seqclf prepare-data --dataset=fashion_mnist`. Fashion-MNIST is harder than
MNIST: two bidirectional layers with dropout 0.1 between them, Adam 2e-3 with
warmup + cosine decay, ~18 epochs instead of the reference's ~2, pixels
standardized with Fashion-MNIST's own training-set mean and std, and half of
each batch mirrored left-right (a mirrored garment is the same garment).
Config files are Python and are executed when loaded: only load ones you trust.
"""

import ml_collections

from seqclf.config import base_config


def get_config() -> ml_collections.ConfigDict:
  config = base_config()  # the reference's hyperparameters (default.py), raw pixels
  config.dataset = 'fashion_mnist'
  config.input_mean = 0.2860  # the 55k training images' pixel mean and std
  config.input_std = 0.3530
  config.num_layers = 2
  config.bidirectional = True
  config.augment_hflip = True
  config.dropout_rate = 0.1
  config.learning_rate = 2e-3
  config.lr_schedule = 'cosine'
  config.warmup_steps = 200
  config.grad_clip_norm = 1.0
  config.num_train_steps = 10000
  config.eval_every = 1000
  config.checkpoint_every = 1000
  return config
