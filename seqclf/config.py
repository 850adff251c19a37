"""The config schema: every key seqclf reads, its default, and its checks.

Config files under ``configs/`` start from ``base_config()`` and change
values; ``validate`` rejects what would otherwise fail late (or silently):
unknown keys, wrong types and out-of-range values, naming the key and a fix.
Each key's allowed values come from the module that uses it; ``check_resume``
says which keys a resumed run may change.
"""

from __future__ import annotations

import difflib
import json
import math
import os
from pathlib import Path

import ml_collections

from seqclf.data import normalization, registry, stream, views
from seqclf.errors import CheckpointError, ConfigError
from seqclf.kernels import paths, precision
from seqclf.nn import classifier, initializers
from seqclf.training import optim, parallel


def base_config() -> ml_collections.ConfigDict:
  """All keys with library defaults (the reference's hyperparameters).

  The model's keys are ``LSTMClassifier``'s fields, declared there once
  (``seqclf.nn.classifier.config_defaults``); the rest follow.

  Returns:
    A new, unlocked ConfigDict; config files change its values.
  """
  c = ml_collections.ConfigDict()
  c.update(classifier.config_defaults())
  # Optimisation. optimizer: adam (optax.adam) | tf1_adam (TF1's
  # AdamOptimizer, bias corrections on the step size: seqclf.training.optim).
  c.optimizer = 'adam'
  c.learning_rate = 1e-3
  # Schedule of the learning rate (its peak): constant | cosine (decay to 0
  # by num_train_steps); either after `warmup_steps` of linear warmup from 0.
  c.lr_schedule = 'constant'
  c.warmup_steps = 0
  c.grad_clip_norm = 0.0    # clip gradients to this global norm; 0 = off
  # Decoupled weight decay (AdamW): each update also shrinks the weight
  # matrices (not biases) by learning_rate * weight_decay; 0 = off.
  c.weight_decay = 0.0
  c.batch_size = 100
  c.num_train_steps = 1000
  c.seed = 0
  # On a non-finite loss: False stops with an error (the last good checkpoint
  # is kept); True skips that update (optax.apply_if_finite) and goes on.
  c.skip_nonfinite_updates = False
  # Loop.
  c.log_every = 10
  c.eval_every = 200
  c.checkpoint_every = 500
  c.max_to_keep = 3
  # Which checkpoint is the run's result: last (the final step) | val_loss |
  # val_accuracy | val_macro_f1 | val_balanced_accuracy (the best-scoring
  # one at an evaluation, kept in checkpoints/best/ beside the newest
  # max_to_keep; evaluate, predict, export and load_model read it).
  c.monitor = 'last'
  # Stop after this many evaluations in a row without a better `monitor`
  # score (early stopping); 0 = off.
  c.patience = 0
  # Per-class loss weights: none | balanced (n_samples / (n_classes *
  # count) on the training split) | a list of one positive number per
  # class. The objective is the batch mean of weight[label] * cross-entropy.
  c.class_weight = ml_collections.FieldReference('none', field_type=object)
  c.steps_per_call = 100    # training steps per jitted call (a lax.scan)
  c.eval_batch_size = 1000
  # Data parallelism: auto (single on one device; on several, pmap for one
  # process's CPU devices, else sharded) | single | pmap | sharded;
  # batch_size is global and must divide by the device count.
  c.parallelism = 'auto'
  # CPU-only hosts, `seqclf train` only: split the CPU into this many XLA
  # devices, each single-threaded, so the data-parallel modes use every core
  # (XLA:CPU runs the LSTM's small matmuls on one thread either way). 0 = one
  # per available core, lowered to a divisor of batch_size; 1 = JAX's default
  # single multi-threaded device. Ignored if XLA_FLAGS already sets a count.
  c.cpu_devices = 0
  # Data: a tfds data dir; '' means $TFDS_DATA_DIR or ~/tensorflow_datasets.
  c.data_dir = ''
  # mnist | fashion_mnist (same 55k/5k/10k splits, prepared by `seqclf
  # prepare-data`) | uea_japanese_vowels | uea_basic_motions |
  # ucr_pickup_gesture_wiimote_z (archive series with lengths, prepared the
  # same way: seqclf.data.timeseries) | npz:PATH, your own arrays
  # (seqclf.data.npz).
  c.dataset = 'mnist'
  # npz:PATH without a validation (or test) split: the fraction of each
  # class carved out for it, by a fixed permutation (seqclf.data.splits.carve).
  c.validation_fraction = 0.1
  # Fitted when a run starts (leave it empty): a hash of the splits' labels,
  # lengths and shapes (seqclf.data.splits.digest), saved with each
  # checkpoint, so a resume on other data is refused rather than trained on.
  c.data_digest = ''
  # The classes' names by label, shown by predict, the report and export:
  # fitted from an npz file's string labels (leave it empty), or given.
  c.class_names = ()
  # Where the training split lives (seqclf.data.stream): device (all of it on
  # each device, batches gathered there; fastest) | stream (read from disk
  # batch by batch with grain, each process its part of each batch, the same
  # batches in the same order) | auto (stream when the split would take more
  # than a quarter of one device's memory). stream needs grain
  # (`pip install 'seqclf[stream]'`) and a prepared dataset (tfds, npz:DIR).
  c.data_placement = 'device'
  # Streaming: grain worker processes reading batches (0: threads of the
  # training process, enough when decoding is cheaper than a step).
  c.data_workers = 0
  # Batches of similar length (seqclf.data.order.bucketed_epoch), each run
  # only to its longest series rounded up to T/8, T/4, T/2 or T: faster on
  # series of uneven lengths, but other batches than unbucketed training, so
  # other results. Needs data with lengths; batches assembled on the host.
  c.bucket_by_length = False
  # How an image dataset is read (seqclf.data.views): row (28 steps x 28)
  # | pixel (784 x 1) | permuted (784 x 1 in a fixed order from
  # permutation_seed). Every other dataset is read as it is (row).
  c.task = 'row'
  c.permutation_seed = 0
  # The model's preprocessing layer standardizes its inputs (pixels in [0, 1],
  # or series) as (x - input_mean) / input_std.
  # Identity here, so checkpoints saved before these keys existed load as
  # they were trained; configs/default.py sets MNIST's training-set values.
  c.input_mean = 0.0
  c.input_std = 1.0
  # Per-feature standardization inside the model, fitted when the run starts
  # on the train split's valid steps (seqclf.data.normalization) and saved
  # as the model keys channel_mean/channel_std (leave those empty), applied
  # after input_mean/input_std: none | per_channel | auto (per_channel for
  # float series, UEA/UCR and float npz:; none for images, uint8 pixels).
  c.normalize = 'auto'
  # NaN values in the data (model key `missing`): refuse (a one-line error
  # naming the split and count) | impute (filled inside the model: the
  # feature's last observed value, else its mean, plus a 0/1 mask channel per
  # feature; the first layer then reads twice the features). The default
  # refuses: a NaN is often a bug of the data, and imputing changes the model.
  c.missing = 'refuse'
  # Augmentation: mirror a random half of each training batch left-right.
  # For Fashion-MNIST (a mirrored shoe is a shoe); never for digits.
  c.augment_hflip = False
  return c


_POSITIVE_INTS = ('hidden_size', 'num_layers', 'num_classes', 'unroll',
                  'batch_size', 'num_train_steps', 'log_every', 'eval_every',
                  'checkpoint_every', 'max_to_keep', 'steps_per_call',
                  'eval_batch_size')


# Number keys that must be finite and >= 0, and what their values mean.
_NON_NEGATIVE = {
    'grad_clip_norm': '0 turns clipping off',
    'input_noise': "the standard deviation of the training inputs' jitter; "
                   '0 = off',
    'weight_decay': '0 turns it off',
    'conv_features': "the convolutional branch's filters; 0 = none",
    'data_workers': '0 = threads of the training process',
    'cpu_devices': '0 = one per core',
}


MONITORS = ('last', 'val_loss', 'val_accuracy', 'val_macro_f1',
            'val_balanced_accuracy')


def choices() -> dict[str, tuple[str, ...]]:
  """The values each string key may take, from the module that uses it."""
  return {
      'parallelism': parallel.MODES,
      'dtype': classifier.DTYPES,
      'cell': classifier.CELLS,
      **{role: tuple(table) for role, table in initializers.TABLES.items()},
      'optimizer': tuple(optim.OPTIMIZERS),
      'lr_schedule': optim.SCHEDULES,
      'task': views.TASKS,
      'data_placement': stream.PLACEMENTS,
      'impl': ('auto', *paths.IMPLS),
      'matmul_precision': precision.PRECISIONS,
      'monitor': MONITORS,
      'normalize': normalization.NORMALIZE,
      'missing': classifier.MISSING,
      'pooling': classifier.POOLING,
  }


def unknown_key(key: str) -> ConfigError:
  """The error for a config key seqclf does not have: the nearest one and
  every valid key."""
  keys = list(base_config().keys())
  near = difflib.get_close_matches(key, keys, n=1)
  hint = f' Did you mean `{near[0]}`?' if near else ''
  return ConfigError(f'Unknown config key `{key}`.{hint} Valid keys: '
                     f'{", ".join(sorted(keys))}.')


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Checks keys, types, ranges and choices, and what a forced ``impl`` needs
  on any backend.

  Args:
    config: the config to check.

  Returns:
    ``config`` unchanged; a one-line ``ConfigError`` naming the key and the
    fix if it is not valid.
  """
  base = base_config()
  for key in config.keys():
    if key not in base:
      raise unknown_key(key)
  for key, default in base.items():
    if key not in config:
      raise ConfigError(f'Config lacks key `{key}`: start config files from '
                        '`seqclf.config.base_config()`.')
    value = config[key]
    if key == 'class_weight':
      continue  # a name or a list: _check_class_weight
    expected = ((int, float) if isinstance(default, float)
                else (tuple, list) if isinstance(default, tuple)
                else type(default))
    if isinstance(value, bool) != isinstance(default, bool) or not isinstance(
        value, expected):
      raise ConfigError(f'Config key `{key}` must be {type(default).__name__}, '
                        f'got {value!r} ({type(value).__name__}).')
  for key in _POSITIVE_INTS:
    if config[key] <= 0:
      raise ConfigError(f'Config key `{key}` must be > 0, got {config[key]}.')
  if not (math.isfinite(config.learning_rate) and config.learning_rate > 0):
    raise ConfigError('Config key `learning_rate` must be a finite number > 0, '
                      f'got {config.learning_rate}.')
  for key, allowed in choices().items():
    if config[key] not in allowed:
      raise ConfigError(f'Config key `{key}` must be one of {allowed}, '
                        f'got {config[key]!r}.')
  if config.impl != 'auto':  # What a forced path needs on any backend.
    layer = paths.Layer(cell=config.cell, hidden_size=config.hidden_size,
                        dtype=config.dtype,
                        matmul_precision=config.matmul_precision)
    try:
      paths.check(config.impl, layer)
    except ConfigError as e:
      raise ConfigError(f'Config key `impl`: {e}', arg='config.impl') from None
  if not 0.0 <= config.dropout_rate < 1.0:
    raise ConfigError('Config key `dropout_rate` must be in [0, 1), got '
                      f'{config.dropout_rate}.')
  for key, meaning in _NON_NEGATIVE.items():
    if not (math.isfinite(config[key]) and config[key] >= 0):
      raise ConfigError(f'Config key `{key}` must be >= 0 ({meaning}), got '
                        f'{config[key]}.')
  if not 0 <= config.warmup_steps < config.num_train_steps:
    raise ConfigError('Config key `warmup_steps` must be in [0, '
                      f'num_train_steps={config.num_train_steps}), got '
                      f'{config.warmup_steps}.')
  if not (math.isfinite(config.input_std) and config.input_std > 0
          and math.isfinite(config.input_mean)):
    raise ConfigError('Config keys `input_mean`/`input_std` must be finite and '
                      f'input_std > 0, got {config.input_mean}/'
                      f'{config.input_std}.')
  _check_channel_stats(config)
  names = tuple(config.class_names)
  if not all(isinstance(n, str) for n in names) or len(names) > len(set(names)):
    raise ConfigError('Config key `class_names` must be distinct strings, '
                      f'one per class, got {list(names)}.')
  if len(names) > config.num_classes:
    raise ConfigError(f'Config key `class_names` names {len(names)} classes, '
                      f'more than num_classes={config.num_classes}: set '
                      f'--config.num_classes={len(names)}.',
                      arg='config.num_classes')
  registry.check_name(config.dataset, config.task)
  if not 0.0 < config.validation_fraction < 1.0:
    raise ConfigError('Config key `validation_fraction` must be in (0, 1), got '
                      f'{config.validation_fraction}.')
  if config.augment_hflip and config.task != 'row':
    raise ConfigError("Config key `augment_hflip` mirrors an image's rows: "
                      f"it needs task='row', got task={config.task!r}.")
  if config.augment_hflip and config.dataset not in registry.IMAGES:
    raise ConfigError("Config key `augment_hflip` mirrors an image's rows: "
                      f'only the image datasets {registry.IMAGES} have them '
                      f'(on {config.dataset!r} it would reverse the order of '
                      'the features): leave it False.',
                      arg='config.augment_hflip')
  if config.permutation_seed < 0:
    raise ConfigError('Config key `permutation_seed` must be >= 0, got '
                      f'{config.permutation_seed}.')
  _check_best(config)
  return config


def _check_best(config: ml_collections.ConfigDict) -> None:
  """``monitor``'s companions ``patience`` and ``class_weight``."""
  if config.patience < 0:
    raise ConfigError('Config key `patience` must be >= 0 (evaluations '
                      f'without improvement; 0 = off), got {config.patience}.')
  if config.patience and config.monitor == 'last':
    raise ConfigError('Config key `patience` stops on a validation metric: '
                      "set `monitor` (e.g. 'val_loss'), or patience=0.")
  weight = config.class_weight
  if isinstance(weight, str):
    if weight not in ('none', 'balanced'):
      raise ConfigError("Config key `class_weight` must be 'none', "
                        "'balanced' or a list of one positive number per "
                        f'class, got {weight!r}.')
    return
  if not isinstance(weight, (list, tuple)) or not all(
      isinstance(w, (int, float)) and not isinstance(w, bool) for w in weight):
    raise ConfigError("Config key `class_weight` must be 'none', 'balanced' "
                      'or a list of one positive number per class, got '
                      f'{weight!r}.')
  if len(weight) != config.num_classes:
    raise ConfigError(f'Config key `class_weight` has {len(weight)} '
                      f'entries: give one per class (num_classes='
                      f'{config.num_classes}).')
  bad = [w for w in weight if not (math.isfinite(w) and w > 0)]
  if bad:
    raise ConfigError('Config key `class_weight` entries must be finite and '
                      f'> 0, got {bad[0]!r}: give each class a positive '
                      'weight.')
def _check_channel_stats(config: ml_collections.ConfigDict) -> None:
  mean, std = tuple(config.channel_mean), tuple(config.channel_std)
  if (len(mean) != len(std) or not all(
      isinstance(v, (int, float)) and math.isfinite(v) for v in mean + std)
      or not all(v > 0 for v in std)):
    raise ConfigError('Config keys `channel_mean`/`channel_std` must be '
                      'finite numbers, as many of each, the std > 0 (the '
                      "trainer fits them: normalize='per_channel'), got "
                      f'{list(mean)}/{list(std)}.')
  if mean and config.normalize == 'none':
    raise ConfigError("Config keys `channel_mean`/`channel_std` are fitted by "
                      "`normalize`: with normalize='none' leave them empty, "
                      f'got {len(mean)} channels.', arg='config.normalize')


# Keys a resumed run may change: how the same computation is run, logged,
# evaluated and saved, and how long it goes on. Every other key changes the
# model, the optimizer, the data or its order, so a checkpoint trained with
# another value of it refuses to resume (``check_resume``).
RESUMABLE_KEYS = frozenset({
    'num_train_steps', 'log_every', 'eval_every', 'checkpoint_every',
    'max_to_keep', 'steps_per_call', 'eval_batch_size', 'impl', 'parallelism',
    'cpu_devices', 'data_dir', 'patience', 'data_placement', 'data_workers'})


def same_dataset(saved: str, now: str, saved_digest: str | None = None,
                 now_digest: str | None = None) -> bool:
  """Whether two values of config key ``dataset`` name the same data: equal,
  ``npz:PATH``s of one file or directory (a path given relative once and
  absolute once, or through a link), read from here, or, given the data's
  digests (``splits.digest``: labels, lengths, shapes), ``npz:`` data moved:
  the same digest."""
  prefix = registry.NPZ_PREFIX
  if saved == now:
    return True
  if not (saved.startswith(prefix) and now.startswith(prefix)):
    return False
  if now_digest and saved_digest == now_digest:
    return True
  try:
    return os.path.samefile(Path(saved[len(prefix):]).expanduser(),
                            Path(now[len(prefix):]).expanduser())
  except OSError:  # one of them is not there
    return False


def check_resume(saved: dict, config: ml_collections.ConfigDict, step: int,
                 where: str) -> list[str]:
  """What a resume of checkpoint ``where`` with ``config`` changes.

  Keys absent from ``saved`` (added to seqclf after it was written) are not
  compared. ``num_train_steps`` may grow, unless ``lr_schedule='cosine'``
  (whose decay it sets), but not fall below the checkpoint's step. An
  ``npz:`` dataset may be named by another path to the same file, or to the
  same data moved (the same ``data_digest``: ``same_dataset``), and
  ``normalize`` changed between ``'auto'`` and what it resolved to (the same
  fitted statistics); another ``normalize`` is named without the statistics
  it fits.

  Args:
    saved: the config saved with the checkpoint.
    config: the config of the run resuming it.
    step: the checkpoint's step.
    where: the checkpoint's directory, for the messages.

  Returns:
    The accepted changes as ``key: old -> new``; a ``CheckpointError``
    listing each key (with both values) a resume cannot change.
  """
  now = json.loads(json.dumps(config.to_dict()))  # tuples as JSON saved them
  changed = {k: (saved[k], now[k]) for k in sorted(now)
             if k in saved and saved[k] != now[k]}
  # 'auto' and what it resolved to are one normalization: the fitted
  # statistics, compared as model keys, say whether it changed.
  same_scaling = not {'channel_mean', 'channel_std'} & set(changed)
  refused = [k for k in changed if k not in RESUMABLE_KEYS
             and not (k == 'dataset' and same_dataset(
                 *changed[k], saved.get('data_digest'),
                 now.get('data_digest')))
             and not (k == 'normalize' and same_scaling
                      and 'auto' in changed[k])]
  if {'normalize', 'data_digest'} & set(refused):  # What fits the
    # statistics (the setting, the data) is named alone, not their values.
    refused = [k for k in refused if k not in ('channel_mean', 'channel_std')]
  if refused == ['data_digest']:  # The keys are the same, the data not.
    raise CheckpointError(
        f'Checkpoint {where} was trained on other data: its splits\' labels, '
        'lengths or shapes differ (another file, or a split carved otherwise, '
        'as by another seqclf version): resume with the data it was trained '
        'on, or use a fresh workdir.')
  if ('num_train_steps' in changed and now.get('lr_schedule') == 'cosine'
      and saved.get('lr_schedule') == 'cosine'):
    refused.append('num_train_steps')  # the cosine decay's length
  if refused:
    raise CheckpointError(
        f'Checkpoint {where} was trained with a different model, optimizer or '
        'data: ' + '; '.join(f'{k}: checkpoint {changed[k][0]!r}, now '
                              f'{changed[k][1]!r}' for k in sorted(refused))
        + '. Resume with the checkpoint\'s values, or use a fresh workdir.')
  if config.num_train_steps < step:
    raise CheckpointError(
        f'Config key `num_train_steps`={config.num_train_steps} is below the '
        f'step {step} of checkpoint {where}: use at least {step}, or a fresh '
        'workdir.')
  return [f'{k}: {old!r} -> {new!r}' for k, (old, new) in changed.items()]
