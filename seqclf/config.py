"""The config schema: every key seqclf reads, its default, and its checks.

Config files under ``configs/`` start from ``base_config()`` and change
values; ``validate`` rejects what would otherwise fail late (or silently):
unknown keys, wrong types and out-of-range values, naming the key and a fix.
"""

from __future__ import annotations

import difflib
import math

import ml_collections


class ConfigError(ValueError):
  """A config key or value is invalid; the message names it and the fix."""


def base_config() -> ml_collections.ConfigDict:
  """All keys with library defaults (the reference's hyperparameters)."""
  c = ml_collections.ConfigDict()
  # Model.
  c.hidden_size = 128
  c.forget_bias = 1.0
  c.num_layers = 1
  c.num_classes = 10
  c.dtype = 'float32'       # compute dtype of the matmuls: float32 | bfloat16
  c.unroll = 1              # time steps unrolled per nn.scan iteration
  # Optimisation.
  c.learning_rate = 1e-3
  c.batch_size = 100
  c.num_train_steps = 1000
  c.seed = 0
  # Loop.
  c.log_every = 10
  c.eval_every = 200
  c.checkpoint_every = 500
  c.max_to_keep = 3
  c.steps_per_call = 100    # training steps per jitted call (a lax.scan)
  c.eval_batch_size = 1000
  # Data parallelism: auto (sharded if >1 device, else single) | single |
  # pmap | sharded; batch_size is global and must divide by the device count.
  c.parallelism = 'auto'
  # Data: a tfds data dir; '' means $TFDS_DATA_DIR or ~/tensorflow_datasets.
  c.data_dir = ''
  return c


_POSITIVE_INTS = ('hidden_size', 'num_layers', 'num_classes', 'unroll',
                  'batch_size', 'num_train_steps', 'log_every', 'eval_every',
                  'checkpoint_every', 'max_to_keep', 'steps_per_call',
                  'eval_batch_size')
_DTYPES = ('float32', 'bfloat16')
_PARALLELISM = ('auto', 'single', 'pmap', 'sharded')


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Checks keys, types and ranges; returns the config unchanged if valid."""
  base = base_config()
  for key in config.keys():
    if key not in base:
      near = difflib.get_close_matches(key, list(base.keys()), n=1)
      hint = f' Did you mean `{near[0]}`?' if near else ''
      raise ConfigError(f'Unknown config key `{key}`.{hint} Valid keys: '
                        f'{", ".join(sorted(base.keys()))}.')
  for key, default in base.items():
    if key not in config:
      raise ConfigError(f'Config lacks key `{key}`: start config files from '
                        '`seqclf.config.base_config()`.')
    value = config[key]
    expected = (int, float) if isinstance(default, float) else type(default)
    if isinstance(value, bool) or not isinstance(value, expected):
      raise ConfigError(f'Config key `{key}` must be {type(default).__name__}, '
                        f'got {value!r} ({type(value).__name__}).')
  for key in _POSITIVE_INTS:
    if config[key] <= 0:
      raise ConfigError(f'Config key `{key}` must be > 0, got {config[key]}.')
  if not (math.isfinite(config.learning_rate) and config.learning_rate > 0):
    raise ConfigError('Config key `learning_rate` must be a finite number > 0, '
                      f'got {config.learning_rate}.')
  if config.parallelism not in _PARALLELISM:
    raise ConfigError(f'Config key `parallelism` must be one of {_PARALLELISM}, '
                      f'got {config.parallelism!r}.')
  if config.dtype not in _DTYPES:
    raise ConfigError(f'Config key `dtype` must be one of {_DTYPES}, '
                      f'got {config.dtype!r}.')
  return config
