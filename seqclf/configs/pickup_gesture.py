"""UCR PickupGestureWiimoteZ (10 gestures, univariate, lengths 29-361): bidirectional LSTM-32.

Needs `seqclf prepare-data --dataset=ucr_pickup_gesture_wiimote_z` (the aeon
wheel's files, seqclf.data.timeseries). The model standardizes each raw
channel with the train split's statistics (normalize='per_channel'). 40
training series of very different lengths, each read to its own; one small
bidirectional layer, batches of 16, a cosine schedule. Depth, width and peak
rate were chosen on validation (never test) by
experiments/timeseries_selection.py.
Config files are Python and are executed when loaded: only load ones you trust.
"""

import ml_collections

from seqclf.config import base_config


def get_config() -> ml_collections.ConfigDict:
  config = base_config()
  config.dataset = 'ucr_pickup_gesture_wiimote_z'
  config.normalize = 'per_channel'  # fitted on train, applied in the model
  config.num_classes = 10
  config.hidden_size = 32
  config.num_layers = 1
  config.bidirectional = True
  config.batch_size = 16
  config.learning_rate = 3e-3
  config.lr_schedule = 'cosine'
  config.warmup_steps = 20
  config.grad_clip_norm = 1.0
  config.num_train_steps = 300
  config.steps_per_call = 50
  config.eval_every = 100
  config.checkpoint_every = 300
  config.eval_batch_size = 50
  config.cpu_devices = 1
  return config
