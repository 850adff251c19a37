"""UEA JapaneseVowels (9 speakers, 12 LPC channels, lengths 7-29): bidirectional LSTM-128, each utterance read to its length.

Needs the aeon wheel's files: `seqclf prepare-data --dataset=uea_japanese_vowels`
(seqclf.data.timeseries says how to get them). The model standardizes each
raw channel with the train split's statistics (normalize='per_channel'), so
it takes raw series. 216 training utterances are few: one bidirectional
layer and a cosine-decayed rate. The cell, width and depth were chosen by
5-fold cross-validation over the official train split (never test) in
experiments/timeseries_selection.py (LSTM-128 over LSTM-64, GRU-64 and two
layers of 64); the head's mean over the steps, a jitter of 0.1 and weight
decay by `seqclf sweep --cv 5` (docs/results.md).
Config files are Python and are executed when loaded: only load ones you trust.
"""

import ml_collections

from seqclf.config import base_config


def get_config() -> ml_collections.ConfigDict:
  config = base_config()
  config.dataset = 'uea_japanese_vowels'
  config.normalize = 'per_channel'  # fitted on train, applied in the model
  config.num_classes = 9
  config.hidden_size = 128
  config.bidirectional = True
  config.pooling = 'mean'
  config.input_noise = 0.1
  config.batch_size = 24
  config.learning_rate = 3e-3
  config.lr_schedule = 'cosine'
  config.warmup_steps = 20
  config.grad_clip_norm = 1.0
  config.weight_decay = 0.1
  config.num_train_steps = 900
  config.steps_per_call = 45
  config.eval_every = 90
  config.checkpoint_every = 450
  config.eval_batch_size = 400
  config.cpu_devices = 1
  return config
