"""The TF1 tutorial's recipe exactly: row-wise MNIST, LSTM-128, its initializers.

What differs from configs/default.py, and what each difference does, is
measured in experiments/results.md (the ablation table):
- one Glorot-uniform kernel over the concatenated [x, h], as TF1's
  BasicLSTMCell draws it (seqclf keeps its input and recurrent rows as two
  parameters, both drawn with the whole kernel's limit);
- the output layer's weights and bias from tf.random_normal (std 1);
- raw [0, 1] pixels;
- TF1's AdamOptimizer (bias corrections on the step size);
- 999 updates: the tutorial's `while step * batch_size < training_iters`
  loop, `step` counting from 1, stops one short of 1000.
Batches are shuffled epochs in both (the tutorial's mnist.train.next_batch).
Config files are Python and are executed when loaded: only load ones you trust.
"""

import ml_collections

from seqclf.config import base_config


def get_config() -> ml_collections.ConfigDict:
  config = base_config()
  config.hidden_size = 128
  config.forget_bias = 1.0
  config.num_layers = 1
  config.input_init = 'concat_glorot_uniform'
  config.recurrent_init = 'concat_glorot_uniform'
  config.head_init = 'normal'
  config.head_bias_init = 'normal'
  config.input_mean = 0.0
  config.input_std = 1.0
  config.optimizer = 'tf1_adam'
  config.learning_rate = 1e-3
  config.batch_size = 100
  config.num_train_steps = 999
  config.log_every = 10  # the tutorial's display_step
  config.eval_every = 200
  config.checkpoint_every = 500
  config.seed = 0
  return config
