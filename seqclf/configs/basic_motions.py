"""UEA BasicMotions (4 activities, 6 channels, 100 steps): 2 x bidirectional LSTM-128, conv branch.

Needs `seqclf prepare-data --dataset=uea_basic_motions` (the aeon wheel's
files, seqclf.data.timeseries). The model standardizes each raw channel with
the train split's statistics (normalize='per_channel'). 32 training series: a
small model, dropout between its two layers, batches of 16, a cosine schedule.
Depth, width, cell, peak rate and length were chosen by cross-validation
over the train split (never test) in experiments/timeseries_selection.py
(LSTM-32, -64 and -128 and 600 steps of LSTM-32 all scored 100%;
LSTM-128 had the lowest loss); the head's mean over the steps, 600 steps,
dropout 0.4 and the convolutional branch by `seqclf sweep --cv 5`
(docs/results.md).
Config files are Python and are executed when loaded: only load ones you trust.
"""

import ml_collections

from seqclf.config import base_config


def get_config() -> ml_collections.ConfigDict:
  config = base_config()
  config.dataset = 'uea_basic_motions'
  config.normalize = 'per_channel'  # fitted on train, applied in the model
  config.num_classes = 4
  config.hidden_size = 128
  config.num_layers = 2
  config.bidirectional = True
  config.dropout_rate = 0.4
  config.pooling = 'mean'
  config.conv_features = 128  # LSTM-FCN's branch beside the recurrence
  config.batch_size = 16
  config.learning_rate = 1e-3
  config.lr_schedule = 'cosine'
  config.warmup_steps = 20
  config.grad_clip_norm = 1.0
  config.num_train_steps = 600
  config.steps_per_call = 50
  config.eval_every = 100
  config.checkpoint_every = 300
  config.eval_batch_size = 40
  config.cpu_devices = 1
  return config
