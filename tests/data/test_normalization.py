"""seqclf.data.normalization: per-channel statistics fitted on the train
split's valid steps, and the one-line errors of `normalize` and `missing`."""

import numpy as np
import pytest

from conftest import small_config
from seqclf import config as config_lib
from seqclf.data import normalization, registry
from seqclf.errors import ConfigError, DataError


def _split(seed=0, n=40, steps=10, features=3):
  rng = np.random.default_rng(seed)
  lengths = rng.integers(2, steps + 1, n)
  x = (rng.normal(0, 1, (n, steps, features)) * [1, 10, 100]
       + [0, 5, -300]).astype(np.float32)
  for i, k in enumerate(lengths):
    x[i, k:] = 1e6  # padding a fit reading past the lengths would see
  return {'image': x, 'label': rng.integers(0, 2, n), 'lengths': lengths}


def test_statistics_come_from_valid_observed_steps_only():
  split = _split()
  split['image'][0, 0, 1] = np.nan  # missing: skipped, not propagated
  mean, std = normalization.fit_channels(split)
  x, lengths = split['image'], split['lengths']
  valid = np.concatenate([x[i, :k] for i, k in enumerate(lengths)])
  for c in range(3):
    values = valid[:, c][~np.isnan(valid[:, c])].astype(np.float64)
    np.testing.assert_allclose(mean[c], values.mean(), rtol=1e-12)
    np.testing.assert_allclose(std[c], values.std(), rtol=1e-12)
  assert (abs(mean) < 1e3).all()  # the 1e6 padding was not read


def test_a_constant_channel_is_one_line_naming_it():
  split = _split()
  split['image'][..., 2] = 4.0
  with pytest.raises(DataError, match='channel 2 is constant') as e:
    normalization.fit_channels(split, 'npz:d.npz')
  assert '\n' not in str(e.value) and "normalize='none'" in str(e.value)
  split['image'][..., 1] = np.nan
  with pytest.raises(DataError, match='channel 1 has no observed value'):
    normalization.fit_channels(split)


def test_auto_is_per_channel_for_float_series_only():
  series, pixels = _split(), {**_split(), 'image': np.zeros((4, 5, 2),
                                                            np.uint8)}
  config = small_config()
  assert normalization.resolve(config, series) == 'per_channel'
  assert normalization.resolve(config, pixels) == 'none'
  fitted = normalization.fit(config, series)
  assert len(fitted.channel_mean) == 3 and config.channel_mean == ()
  assert normalization.fit(fitted, series).to_dict() == fitted.to_dict()
  none = normalization.fit(small_config(normalize='none'), series)
  assert none.channel_mean == () and none.channel_std == ()


def test_series_under_a_pixel_scaling_are_still_standardized_per_channel():
  """configs/default.py's MNIST input_mean/input_std on float series (a
  user's npz): 'auto' still fits each channel, on what the scalar step
  gives, so the model's first layer reads standardized channels."""
  split = _split()
  pixel_scaled = small_config(input_mean=0.1307, input_std=0.3081)
  assert normalization.resolve(pixel_scaled, split) == 'per_channel'
  for config in (pixel_scaled,
                 small_config(normalize='per_channel', input_mean=-2.0,
                              input_std=50.0)):
    config_lib.validate(config)
    fitted = normalization.fit(config, split)
    x = (split['image'].astype(np.float64) - config.input_mean) / config.input_std
    x = (x - fitted.channel_mean) / fitted.channel_std
    valid = x[normalization.valid_steps(split)]
    np.testing.assert_allclose(valid.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(valid.std(axis=0), 1.0, rtol=1e-5)
  # The identity scalar step: the raw statistics, as before.
  raw = normalization.fit(small_config(), split)
  np.testing.assert_array_equal(
      raw.channel_mean,
      normalization.fit_channels(split)[0].astype(np.float32))


def test_pixels_are_fitted_as_the_model_reads_them():
  """uint8 images are read as pixels / 255 (``ops.to_float``): statistics
  fitted on the raw 0..255 values were 255 times too large, and a
  per_channel model of images learned nothing."""
  rng = np.random.default_rng(1)
  pixels = rng.integers(0, 256, (30, 6, 4)).astype(np.uint8)
  fitted = normalization.fit_channels({'image': pixels})
  scaled = normalization.fit_channels(
      {'image': pixels.astype(np.float32) / 255.0})
  for a, b in zip(fitted, scaled):
    np.testing.assert_array_equal(a, b)
  assert fitted[0].max() <= 1.0


def test_nan_with_missing_refuse_names_file_split_and_count(tmp_path):
  (x, y, n), path = _split().values(), tmp_path / 'gaps.npz'
  x[3, 0, 0] = x[3, 1, 2] = x[7, 0, 1] = np.nan
  clean = {'x': x[10:15], 'y': y[10:15], 'lengths': n[10:15]}
  np.savez(path, x_train=x, y_train=y, lengths_train=n,
           **{f'{k}_{split}': v for k, v in clean.items()
              for split in ('validation', 'test')})
  with pytest.raises(DataError) as e:
    registry.read(f'npz:{path}', None, 0.2, missing='refuse')
  message = str(e.value)
  assert message.startswith(f'npz:{path}: train split holds 3 NaN value(s) '
                            '(in 2 sequence(s))'), message
  assert "missing='impute'" in message and '\n' not in message
  data = registry.read(f'npz:{path}', None, 0.2, missing='impute')
  assert np.isnan(data['train']['image']).sum() == 3


def test_nan_and_inf_in_the_padding_are_no_missing_values(tmp_path):
  """The padding past a length is never read: NaN or inf there is neither
  refused nor counted, and becomes 0 on load (a convolution's window or a
  gradient through a masked step would carry it into valid ones)."""
  x, y, n = _split().values()
  short = np.flatnonzero(n < x.shape[1])[:2]
  x[short[0], n[short[0]]:] = np.nan
  x[short[1], -1] = np.inf
  np.savez(tmp_path / 'pad.npz', x_train=x, y_train=y, lengths_train=n,
           x_test=x, y_test=y, lengths_test=n)
  data = registry.read(f'npz:{tmp_path}/pad.npz', None, 0.2,
                       missing='refuse')
  assert all(np.isfinite(split['image']).all() for split in data.values())
  got = data['test']['image']
  np.testing.assert_array_equal(got[short[0], n[short[0]]:], 0)
  assert got[short[1], -1].tolist() == [0, 0, 0]
  finite = np.isfinite(x)
  np.testing.assert_array_equal(got[finite], x[finite])  # 1e6 padding kept


@pytest.mark.parametrize('overrides, message', [
    (dict(normalize='none', channel_mean=(1.0,), channel_std=(2.0,)),
     "with normalize='none' leave them empty"),
    (dict(channel_mean=(1.0, 2.0), channel_std=(2.0,)), 'as many of each'),
    (dict(channel_mean=(1.0,), channel_std=(0.0,)), 'the std > 0'),
    (dict(normalize='zscore'), 'Config key `normalize` must be one of'),
    (dict(missing='drop'), 'Config key `missing` must be one of'),
])
def test_bad_normalize_and_missing_keys_are_one_line(overrides, message):
  config = config_lib.base_config()
  config.update(overrides)
  with pytest.raises(ConfigError, match=message) as e:
    config_lib.validate(config)
  assert '\n' not in str(e.value)


@pytest.mark.parametrize('name', ['default', 'reference', 'budget', 'smnist',
                                  'psmnist', 'fashion_row', 'gru_row'])
def test_image_configs_build_the_model_they_built_before(name):
  """The MNIST/Fashion configs fit nothing: their model (input_mean/
  input_std, no channel statistics, no imputation) is the one a config
  without these keys built (experiments/model_fingerprint.py: bitwise)."""
  from seqclf.cli import common  # pylint: disable=g-import-not-at-top
  from seqclf.data import views  # pylint: disable=g-import-not-at-top
  from seqclf.nn import classifier  # pylint: disable=g-import-not-at-top
  config = common.load_config_file(name)
  pixels = {'image': np.zeros((4, 28, 28), np.uint8),
            'label': np.zeros(4, int)}
  viewed = views.view_splits(config, {'train': pixels})['train']
  fitted = normalization.fit(config, viewed)
  assert fitted.channel_mean == () and fitted.missing == 'refuse'
  assert (classifier.from_config(fitted, 'scan')
          == classifier.from_config(config, 'scan'))
