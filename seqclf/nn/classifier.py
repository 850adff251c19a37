"""The classifier: stacked recurrent layers and a dense head on the last step
(or on the mean over the valid steps).

``LSTMClassifier``'s fields are the model's whole description, declared once:
``seqclf.config`` takes its model keys and defaults from them
(``config_defaults``) and ``from_config`` builds the model from those keys,
so a new model field is one line and its default here.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from seqclf.kernels import precision
from seqclf.nn import initializers
from seqclf.nn.conv import ConvBranch
from seqclf.nn.recurrent import LAYERS

Array = jax.Array
Dtype = Any
CELLS = tuple(LAYERS)  # LSTMClassifier.cell
# LSTMClassifier.missing: how NaN steps are read. 'refuse': not at all (the
# data layer refuses data with NaN); 'impute': filled inside the model, with
# a mask channel per feature.
MISSING = ('refuse', 'impute')
# LSTMClassifier.pooling: what the head reads. 'last': each row's last valid
# step (bidirectional: beside the backward first step); 'mean': the last
# layer's outputs averaged over the row's valid steps.
POOLING = ('last', 'mean')
# The compute dtypes a config names (`dtype`); float32 is the parameters' own.
DTYPES = ('float32', 'bfloat16')


class LSTMClassifier(nn.Module):
  """Stacked recurrent layers, then a dense layer on each row's last valid step.

  ``cell`` picks the recurrence (``lstm``, ``gru`` or ``elman``); layer ``k``
  is named ``{cell}_{k}``, so the default LSTM's parameters keep their
  names. ``bidirectional`` adds a ``{cell}_{k}_reverse`` layer reading the
  sequence backwards; its outputs are concatenated to the forward ones, and
  the head sees the forward last step beside the backward first step (each
  direction's summary of the whole sequence). ``pooling='mean'`` gives the
  head the last layer's outputs averaged over each row's valid steps
  instead, so every step reaches the loss directly. ``conv_features`` adds
  a convolutional branch (``seqclf.nn.conv``) whose mean over the valid
  steps the head reads beside that summary. ``dropout_rate`` drops
  between stacked layers and ``input_noise`` jitters the standardized inputs
  when ``train=True`` (both need a ``'dropout'`` rng: ``stochastic``). It reads
  float (batch, time, features) sequences and knows nothing of where they
  come from: how a dataset's examples become sequences (an image's rows, or
  its pixels in some order) is the data's (``seqclf.data.views``). Its one
  preprocessing layer standardizes the inputs as ``(x - input_mean) /
  input_std`` (identity by default), inside the model so that every caller of
  ``apply`` (training, evaluation, prediction, an exported function, your own
  code) feeds it the same data. ``channel_mean``/``channel_std`` (fitted on
  the training data by the trainer, ``seqclf.data.normalization``) then
  standardize each feature, so callers give it raw values. With
  ``missing='impute'`` a NaN value is replaced by the feature's last observed
  value in that row (or, before the first, the channel mean: 0 after the
  standardization) and a 0/1 mask of the observed values is appended to the
  features: the recurrence reads twice the input width (``input_width``).
  Each layer gets every field of the classifier that the layer declares
  (``hidden_size``, ``impl``, …).

  >>> import jax, jax.numpy as jnp
  >>> model = LSTMClassifier(num_classes=3, hidden_size=8)
  >>> x = jnp.ones((2, 5, 4))                       # (batch, time, features)
  >>> params = model.init(jax.random.key(0), x)
  >>> model.apply(params, x, seq_lengths=jnp.array([5, 2])).shape
  (2, 3)
  """

  num_classes: int = 10
  hidden_size: int = 128
  num_layers: int = 1
  forget_bias: float = 1.0  # added to the LSTM's forget gate (Gers et al.)
  # The matmuls' compute dtype (a config names it: DTYPES); None computes in
  # the parameters' dtype. Cell state and nonlinearities stay float32.
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32  # flax's; no config key
  unroll: int = 1  # time steps unrolled per nn.scan iteration
  cell: str = 'lstm'  # CELLS
  # Initializers by name (seqclf.nn.initializers.TABLES): the cells' input
  # and recurrent kernels, the head's kernel and bias.
  recurrent_init: str = 'orthogonal'
  input_init: str = 'lecun_normal'
  head_init: str = 'lecun_normal'
  head_bias_init: str = 'zeros'
  bidirectional: bool = False  # a backward layer beside each forward one
  dropout_rate: float = 0.0  # between stacked layers, training only
  # Standard deviation of Gaussian noise added to the standardized inputs,
  # training only (jitter: a regularizer for small series datasets).
  input_noise: float = 0.0
  # The recurrence (seqclf.kernels.paths.IMPLS; 'fused', 'kernel' and 'gpu':
  # LSTM only), the same numbers to float rounding. A config may say 'auto': the
  # fastest here, timed by seqclf.training.autotune.
  impl: str = 'scan'
  # Every matmul's, on every path (seqclf.kernels.precision): float32 (true
  # float32, also on GPUs) | tensorfloat32 (TF32, GPUs only) | bfloat16
  # (operands rounded to bfloat16, float32 accumulation; the CPU kernel: on
  # AMX or AVX512_BF16). Unlike `dtype`, parameters, state and gates stay float32.
  matmul_precision: str = 'float32'
  # (x - input_mean) / input_std: identity by default, so checkpoints saved
  # before these fields existed load as they were trained.
  input_mean: float = 0.0
  input_std: float = 1.0
  # Per-feature statistics applied after them, (x - channel_mean) /
  # channel_std: fitted on the training split by `normalize='per_channel'`
  # (seqclf.data.normalization), carried in the saved config. Empty: none.
  channel_mean: tuple[float, ...] = ()
  channel_std: tuple[float, ...] = ()
  missing: str = 'refuse'  # MISSING
  pooling: str = 'last'  # POOLING
  # Filters of a convolutional branch beside the recurrence (LSTM-FCN's:
  # seqclf.nn.conv.ConvBranch), its outputs averaged over the valid steps
  # and read by the head beside the recurrence's summary; 0 = none.
  conv_features: int = 0

  @nn.compact
  def __call__(self, inputs: Array, train: bool = False,
               seq_lengths: Array | None = None) -> Array:
    """Maps (batch, time, features) sequences to (batch, num_classes) logits.

    Args:
      inputs: (batch, time, features) floats.
      train: dropout between layers and input noise (need a ``'dropout'`` rng).
      seq_lengths: (batch,) ints, each row's valid steps, clipped to
        [0, time]; the head then sees each row's last valid step (and,
        bidirectional, the reverse direction's first), or with
        ``pooling='mean'`` the mean over them. None: every step is valid.

    Returns:
      (batch, num_classes) float32 logits.
    """
    if self.cell not in CELLS:
      raise ValueError(f'cell must be one of {CELLS}, got {self.cell!r}.')
    if self.missing not in MISSING:
      raise ValueError(f'missing must be one of {MISSING}, got '
                       f'{self.missing!r}.')
    if self.pooling not in POOLING:
      raise ValueError(f'pooling must be one of {POOLING}, got '
                       f'{self.pooling!r}.')
    layer_type = LAYERS[self.cell]
    options = {name: getattr(self, name) for name in _shared_fields(layer_type)}

    if seq_lengths is not None:  # As the layers read them: past T is T.
      seq_lengths = jnp.clip(seq_lengths, 0, inputs.shape[-2])
    x = (inputs - self.input_mean) / self.input_std
    if self.channel_mean or self.channel_std:
      x = ((x - jnp.asarray(self.channel_mean, jnp.float32))
           / jnp.asarray(self.channel_std, jnp.float32))
    if train and self.input_noise:
      noise = jax.random.normal(self.make_rng('dropout'), x.shape, x.dtype)
      x = x + self.input_noise * noise
    if self.missing == 'impute':
      x = impute(x)
    standardized = x
    for k in range(self.num_layers):
      if k:
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
      name = f'{self.cell}_{k}'
      _, forward = layer_type(**options, name=name)(x, seq_lengths=seq_lengths)
      last = last_valid(forward, seq_lengths)
      if not self.bidirectional:
        x = forward
        continue
      _, backward = layer_type(**options, name=f'{name}_reverse')(
          x, seq_lengths=seq_lengths, reverse=True, keep_order=True)
      x = jnp.concatenate([forward, backward], -1)
      last = jnp.concatenate([last, backward[..., 0, :]], -1)
    if self.pooling == 'mean':
      last = mean_valid(x, seq_lengths)
    if self.conv_features:
      conv = ConvBranch(self.conv_features, dtype=self.dtype,
                        param_dtype=self.param_dtype,
                        matmul_precision=self.matmul_precision,
                        name='conv')(standardized, seq_lengths)
      last = jnp.concatenate([last, mean_valid(conv, seq_lengths)], -1)
    logits = nn.Dense(
        self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype,
        kernel_init=initializers.resolve('head_init', self.head_init),
        bias_init=initializers.resolve('head_bias_init', self.head_bias_init),
        dot_general=precision.dot_general(self.matmul_precision),
        name='head')(last)
    return logits.astype(jnp.float32)

  @property
  def stochastic(self) -> bool:
    """Whether training draws from the ``'dropout'`` rng."""
    return bool(self.dropout_rate or self.input_noise)


def _field_names(cls: type) -> set[str]:
  return {f.name for f in dataclasses.fields(cls)} - {'parent', 'name'}


def _shared_fields(layer_type: type[nn.Module]) -> list[str]:
  """The classifier's fields that ``layer_type`` declares too."""
  return sorted(_field_names(layer_type) & _field_names(LSTMClassifier))


def impute(x: Array) -> Array:
  """(batch, time, 2 * features): each NaN of (batch, time, features)
  ``x`` replaced by its feature's last observed value in that row (0, the
  standardized channel mean, before the first), then a 1.0/0.0 mask of the
  observed values."""
  observed = ~jnp.isnan(x)
  steps = jnp.arange(x.shape[-2])[:, None]
  last = jax.lax.cummax(jnp.where(observed, steps, -1), axis=x.ndim - 2)
  carried = jnp.take_along_axis(x, jnp.maximum(last, 0), axis=-2)
  filled = jnp.where(last >= 0, carried, 0.0)
  return jnp.concatenate([filled, observed.astype(x.dtype)], axis=-1)


def input_width(features: int, missing: str) -> int:
  """The width the first recurrent layer reads for inputs of ``features``
  (doubled by ``missing='impute'``'s mask channels)."""
  return 2 * features if missing == 'impute' else features


def features_of(width: int, missing: str) -> int:
  """The callers' input width of a first layer reading ``width``
  (``input_width``'s inverse)."""
  return width // 2 if missing == 'impute' else width


def last_valid(outputs: Array, seq_lengths: Array | None) -> Array:
  """Each row's output at its last valid step (the last step without
  lengths; zeros for an empty row) from (..., time, features) outputs."""
  if seq_lengths is None:
    return outputs[..., -1, :]
  index = jnp.maximum(jnp.asarray(seq_lengths) - 1, 0)[..., None, None]
  return jnp.take_along_axis(outputs, index, axis=-2)[..., 0, :]


def mean_valid(outputs: Array, seq_lengths: Array | None) -> Array:
  """Each row's outputs averaged over its valid steps (all steps without
  lengths; zeros for an empty row) from (..., time, features) outputs."""
  if seq_lengths is None:
    return jnp.mean(outputs, axis=-2)
  lengths = jnp.asarray(seq_lengths)
  valid = jnp.arange(outputs.shape[-2]) < lengths[..., None]
  total = jnp.sum(jnp.where(valid[..., None], outputs, 0), axis=-2)
  return total / jnp.maximum(lengths, 1)[..., None].astype(outputs.dtype)


# What a config says differently from the fields: `impl` may be 'auto'
# (resolved by the entry point, which knows the devices and the batch), and
# `dtype` is a name (DTYPES) where the field is a dtype or None.
_CONFIG_DEFAULTS = {'impl': 'auto', 'dtype': 'float32'}
_NOT_IN_CONFIG = frozenset({'param_dtype'})


def config_defaults() -> dict[str, Any]:
  """The model's config keys (``seqclf.config``) and their defaults: every
  field of ``LSTMClassifier`` but ``param_dtype``, in declaration order."""
  return {f.name: _CONFIG_DEFAULTS.get(f.name, f.default)
          for f in dataclasses.fields(LSTMClassifier)
          if f.name in _field_names(LSTMClassifier) - _NOT_IN_CONFIG}


def from_config(config: Any, impl: str) -> LSTMClassifier:
  """The classifier ``config`` describes (its keys of ``config_defaults``).

  Args:
    config: a ``seqclf.config`` config (or any mapping with those keys).
    impl: the path the recurrent layers run (``seqclf.kernels.paths.IMPLS``;
      a config's ``'auto'`` is resolved by the caller first).

  Returns:
    The model (unbound).
  """
  fields = {name: config[name] for name in config_defaults()}
  fields['dtype'] = (None if config.dtype == 'float32'
                     else jnp.dtype(config.dtype))
  for name in ('channel_mean', 'channel_std'):  # JSON gives lists
    fields[name] = tuple(float(v) for v in fields[name])
  return LSTMClassifier(**{**fields, 'impl': impl})
