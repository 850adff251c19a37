"""The classifier: shapes, parameter layout, preprocessing, its fields as config keys."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

import references
from conftest import normal, uniform
from seqclf.nn import LSTMClassifier


def _init(module, *args):
  # Jitted: eager init dispatches nn.scan's ops one by one (seconds).
  return jax.jit(module.init)(jax.random.key(0), *args)


def test_classifier_shapes_and_param_layout():
  model = LSTMClassifier(num_classes=10, hidden_size=32, num_layers=2)
  x = jnp.ones((5, 28, 28))
  variables = _init(model, x)
  assert model.apply(variables, x).shape == (5, 10)
  p = variables['params']
  assert p['lstm_0']['cell']['input']['kernel'].shape == (28, 128)
  assert p['lstm_0']['cell']['hidden']['kernel'].shape == (32, 128)
  assert p['lstm_1']['cell']['input']['kernel'].shape == (32, 128)
  assert p['head']['kernel'].shape == (32, 10)


def test_inputs_are_standardized_inside_the_model():
  raw = LSTMClassifier(hidden_size=8)
  std = LSTMClassifier(hidden_size=8, input_mean=0.1307, input_std=0.3081)
  x = uniform(1, (3, 28, 28))
  params = _init(raw, x)
  std_apply, raw_apply = jax.jit(std.apply), jax.jit(raw.apply)
  np.testing.assert_allclose(std_apply(params, x),
                             raw_apply(params, (x - 0.1307) / 0.3081),
                             rtol=1e-6, atol=1e-6)
  assert not np.allclose(std_apply(params, x), raw_apply(params, x))


def test_channel_statistics_standardize_each_feature_inside_the_model():
  """Raw inputs into a model with per-channel statistics give the logits
  of the same params on inputs standardized outside (identity statistics)."""
  mean, std = (5.0, -100.0, 0.5), (2.0, 30.0, 0.25)
  fitted = LSTMClassifier(num_classes=4, hidden_size=8, channel_mean=mean,
                          channel_std=std)
  plain = LSTMClassifier(num_classes=4, hidden_size=8)
  z = normal(1, (3, 7, 3))
  raw = z * jnp.array(std) + jnp.array(mean)
  params = _init(plain, z)
  n = jnp.array([7, 3, 1])
  want = jax.jit(plain.apply)(params, (raw - jnp.array(mean)) / jnp.array(std),
                              seq_lengths=n)
  got = jax.jit(fitted.apply)(params, raw, seq_lengths=n)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
  assert not np.allclose(jax.jit(plain.apply)(params, raw, seq_lengths=n), want)


def test_impute_carries_forward_then_fills_the_mean_and_marks_the_mask():
  from seqclf.nn import classifier  # pylint: disable=g-import-not-at-top
  nan = np.nan
  x = jnp.array([[[nan, 1.0], [2.0, nan], [nan, nan], [4.0, 5.0]]])
  out = np.asarray(classifier.impute(x))
  np.testing.assert_array_equal(out[0, :, :2], [[0.0, 1.0], [2.0, 1.0],
                                                [2.0, 1.0], [4.0, 5.0]])
  np.testing.assert_array_equal(out[0, :, 2:], [[0, 1], [1, 0], [0, 0], [1, 1]])


def test_impute_model_reads_nan_on_every_path_and_doubles_the_width():
  """NaN inputs give finite logits, the same on scan, fused and kernel
  (the imputation is before the recurrence); the first layer reads the
  values and their mask."""
  from seqclf.kernels import paths  # pylint: disable=g-import-not-at-top
  kw = dict(num_classes=3, hidden_size=16, missing='impute',
            channel_mean=(1.0, 2.0), channel_std=(0.5, 4.0))
  x = np.array(normal(2, (4, 6, 2)))
  x[0, :2, 0] = np.nan
  x[2, 3, 1] = np.nan
  n = jnp.array([6, 5, 4, 2])
  params = _init(LSTMClassifier(**kw), x)
  assert params['params']['lstm_0']['cell']['input']['kernel'].shape[0] == 4
  eligible = paths.eligible(paths.Layer(hidden_size=16), 'cpu')
  impls = ['scan', *[i for i in ('fused', 'kernel') if i in eligible]]
  logits = {impl: np.asarray(jax.jit(LSTMClassifier(**kw, impl=impl).apply)(
      params, x, seq_lengths=n)) for impl in impls}
  assert np.isfinite(logits['scan']).all()
  for impl in impls:
    np.testing.assert_allclose(logits[impl], logits['scan'], atol=1e-5)
  # A NaN changes the logits of its row only.
  clean = np.nan_to_num(x)
  base = np.asarray(jax.jit(LSTMClassifier(**kw).apply)(params, clean,
                                                         seq_lengths=n))
  np.testing.assert_array_equal(base[[1, 3]], logits['scan'][[1, 3]])
  assert not np.allclose(base[0], logits['scan'][0])


def _logits_ignoring_padding(model, params, x, n):
  """``model``'s logits of ``x``, asserting that values past each row's
  length (of ``n``) do not change them."""
  logits = np.asarray(jax.jit(model.apply)(params, x, seq_lengths=n))
  padded = x.copy()
  for r, k in enumerate(n):
    padded[r, int(k):] = 7.0 - 5.0 * r
  np.testing.assert_array_equal(
      jax.jit(model.apply)(params, padded, seq_lengths=n), logits)
  return logits


def _directions(p, x, n):
  """The forward and backward LSTM-8 layers' outputs, run on their own."""
  from seqclf.nn import recurrent  # pylint: disable=g-import-not-at-top
  lstm = recurrent.LSTM(hidden_size=8)
  _, fwd = lstm.apply({'params': p['lstm_0']}, x, seq_lengths=n)
  _, bwd = lstm.apply({'params': p['lstm_0_reverse']}, x, seq_lengths=n,
                      reverse=True, keep_order=True)
  return fwd, bwd


def test_mean_pooling_averages_the_valid_steps_of_both_directions():
  """With pooling='mean' the head reads the last layer's (forward and
  backward) outputs averaged over each row's valid steps: padding past a
  row's length changes nothing, and the logits are the head applied to that
  mean of the layers run on their own."""
  kw = dict(num_classes=3, hidden_size=8, bidirectional=True)
  model = LSTMClassifier(**kw, pooling='mean')
  x = np.array(normal(5, (3, 6, 2)))
  n = jnp.array([6, 4, 1])
  params = _init(model, x)
  logits = _logits_ignoring_padding(model, params, x, n)
  p = params['params']
  fwd, bwd = _directions(p, x, n)
  outputs = np.concatenate([fwd, bwd], -1)
  mean = np.stack([outputs[r, :int(k)].mean(0) for r, k in enumerate(n)])
  want = mean @ p['head']['kernel'] + p['head']['bias']
  np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-5)
  last = jax.jit(LSTMClassifier(**kw).apply)(params, x, seq_lengths=n)
  assert not np.allclose(last, logits)


def test_conv_branch_is_fcn_beside_the_recurrence_and_ignores_padding():
  """conv_features adds FCN's three 'SAME' convolutions (widths 8, 5, 3),
  each layer-normalized and ReLU'd, whose mean over a row's valid steps the
  head reads after the recurrence's summary: padding past a row's length
  changes nothing, and the logits equal that computed by hand with
  lax.conv_general_dilated on each row cut to its length."""
  model = LSTMClassifier(num_classes=3, hidden_size=8, bidirectional=True,
                         conv_features=4)
  x = np.array(normal(7, (3, 9, 2)))
  n = jnp.array([9, 5, 1])
  params = _init(model, x)
  p = params['params']
  assert [p['conv'][f'conv_{k}']['kernel'].shape for k in range(3)] == [
      (8 * 2, 4), (5 * 4, 8), (3 * 8, 4)]
  logits = _logits_ignoring_padding(model, params, x, n)

  def fcn(row):  # (time, channels) -> (features,)
    h = row[None]
    for k, width in enumerate((8, 5, 3)):
      conv, norm = p['conv'][f'conv_{k}'], p['conv'][f'norm_{k}']
      kernel = conv['kernel'].reshape(width, h.shape[-1], -1)
      h = jax.lax.conv_general_dilated(
          h, kernel, (1,), 'SAME', dimension_numbers=('NWC', 'WIO', 'NWC'),
          precision='highest') + conv['bias']
      h = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True)
                                                    + 1e-6)
      h = np.maximum(h * norm['scale'] + norm['bias'], 0)
    return h[0].mean(0)

  fwd, bwd = _directions(p, x, n)
  rows = [np.concatenate([fwd[r, int(k) - 1], bwd[r, 0], fcn(x[r, :int(k)])])
          for r, k in enumerate(n)]
  want = np.stack(rows) @ p['head']['kernel'] + p['head']['bias']
  np.testing.assert_allclose(logits, want, rtol=1e-4, atol=1e-5)


def test_input_noise_jitters_training_only_from_the_dropout_rng():
  """input_noise adds noise in training mode only: evaluation is the plain
  model's; training draws it from the 'dropout' rng (same key, same logits;
  another key, others), on the standardized inputs."""
  kw = dict(num_classes=3, hidden_size=8, channel_mean=(100.0, 0.0),
            channel_std=(50.0, 1.0))
  noisy = LSTMClassifier(**kw, input_noise=0.5)
  assert noisy.stochastic and not LSTMClassifier(**kw).stochastic
  z = np.array(normal(6, (4, 5, 2)))
  x = z * np.array([50.0, 1.0]) + np.array([100.0, 0.0])
  params = _init(noisy, x)
  plain = jax.jit(LSTMClassifier(**kw).apply)(params, x)
  np.testing.assert_array_equal(jax.jit(noisy.apply)(params, x), plain)
  train = jax.jit(lambda key: noisy.apply(params, x, train=True,
                                          rngs={'dropout': key}))
  a, b = train(jax.random.key(1)), train(jax.random.key(2))
  np.testing.assert_array_equal(train(jax.random.key(1)), a)
  assert not np.allclose(a, plain) and not np.allclose(a, b)
  # The jitter is on the standardized inputs: raw data into the model with
  # statistics equals standardized data into one without, key for key.
  unit = LSTMClassifier(num_classes=3, hidden_size=8, input_noise=0.5)
  np.testing.assert_allclose(
      unit.apply(params, z, train=True, rngs={'dropout': jax.random.key(1)}),
      a, rtol=1e-5, atol=1e-5)


def test_classifier_is_the_reference_lstm_then_a_dense_head():
  b, i, h = 4, 28, 16
  rng = np.random.default_rng(3)
  x = rng.uniform(0, 1, (b, 28, i))
  model = LSTMClassifier(hidden_size=h, input_mean=0.1307, input_std=0.3081)
  params = {'lstm_0': references.random_lstm_params(i, h, seed=4),
            'head': {'kernel': rng.normal(0, 0.3, (h, 10)),
                     'bias': rng.normal(0, 0.3, 10)}}
  logits = model.apply({'params': jax.tree.map(jnp.float32, params)},
                       jnp.asarray(x, jnp.float32))
  p = params['lstm_0']['cell']
  (_, last), _ = references.tf_lstm((x - 0.1307) / 0.3081, p['input']['kernel'],
                          p['input']['bias'], p['hidden']['kernel'], 1.0)
  want = last @ params['head']['kernel'] + params['head']['bias']
  np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-5)


def test_from_config_reads_every_classifier_field_by_name():
  """A model field is set by the config key of its name: change each key and
  the built model follows (a field the config lacks would fail here)."""
  from seqclf.config import base_config  # pylint: disable=g-import-not-at-top
  from seqclf.nn import classifier  # pylint: disable=g-import-not-at-top
  changed = dict(num_classes=7, hidden_size=24, num_layers=2, forget_bias=0.5,
                 unroll=2, cell='gru', recurrent_init='identity',
                 bidirectional=True, dropout_rate=0.1,
                 input_mean=0.5, input_std=2.0, channel_mean=(1.0, 2.0),
                 channel_std=(3.0, 4.0), missing='impute',
                 matmul_precision='bfloat16', dtype='bfloat16',
                 input_init='glorot_uniform', head_init='normal',
                 head_bias_init='normal', pooling='mean', input_noise=0.1,
                 conv_features=16)
  config = base_config()
  config.update(changed)
  model = classifier.from_config(config, 'kernel')
  fields = {f.name for f in dataclasses.fields(LSTMClassifier)} - {
      'parent', 'name', 'param_dtype', 'impl'}
  assert fields == set(changed)  # every configurable field is tested here
  for name in fields - {'dtype'}:
    assert getattr(model, name) == changed[name], name
  assert model.dtype == jnp.bfloat16 and model.impl == 'kernel'
  assert classifier.from_config(base_config(), 'scan').dtype is None


def test_lengths_past_the_steps_read_as_all_of_them():
  """A length above T is T and one below 0 is 0, as the layers read them:
  not a NaN read past the end (pooling='last') nor a mean over T divided by
  more (pooling='mean')."""
  x = np.array(normal(6, (3, 5, 2)))
  for pooling in ('last', 'mean'):
    model = LSTMClassifier(num_classes=3, hidden_size=8, pooling=pooling)
    params = _init(model, x)
    apply = jax.jit(model.apply)
    past = apply(params, x, seq_lengths=jnp.array([9, 3, -2]))
    within = apply(params, x, seq_lengths=jnp.array([5, 3, 0]))
    assert np.isfinite(past).all(), pooling
    np.testing.assert_array_equal(past, within)
