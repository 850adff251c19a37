"""The tutorial's model and budget: row-wise MNIST, LSTM-128, Adam 1e-3, 1000 x 100.

Its initializers, standardized pixels and optax's Adam differ from the
tutorial's; configs/reference.py is the tutorial exactly (docs/design.md).

Config files are Python and are executed when loaded: only load ones you trust.
"""

import ml_collections

from seqclf.config import base_config


def get_config() -> ml_collections.ConfigDict:
  config = base_config()
  config.hidden_size = 128
  config.forget_bias = 1.0
  config.num_layers = 1
  config.learning_rate = 1e-3
  config.batch_size = 100
  config.num_train_steps = 1000
  config.log_every = 10
  config.eval_every = 200
  config.checkpoint_every = 500
  config.max_to_keep = 3
  config.seed = 0
  # Pixels standardized with the 55k training images' mean and std instead
  # of fed raw in [0, 1]: same model, optimizer and budget, higher mean test
  # accuracy over seeds (experiments/results.md, the ablation table).
  config.input_mean = 0.1307
  config.input_std = 0.3081
  return config
