"""How a model reads an image: rows, pixels, permuted pixels."""

import dataclasses

import jax
import numpy as np
import pytest

from seqclf.config import ConfigError, base_config, validate
from seqclf.data import views
from seqclf.nn import LSTMClassifier


def test_row_pixel_permuted_are_the_same_pixels():
  images = np.random.default_rng(0).integers(0, 256, (3, 28, 28), np.uint8)
  row = views.as_sequence(images, 'row')
  pixel = views.as_sequence(images, 'pixel')
  permuted = views.as_sequence(images, 'permuted', permutation_seed=7)
  assert row.shape == (3, 28, 28) and np.array_equal(row, images)
  assert pixel.shape == permuted.shape == (3, 784, 1)
  np.testing.assert_array_equal(pixel[:, 28 * 5 + 3, 0], images[:, 5, 3])
  perm = views.permutation(7, 784)
  assert sorted(perm) == list(range(784)) and not np.array_equal(perm,
                                                                 np.arange(784))
  np.testing.assert_array_equal(permuted[:, :, 0], pixel[:, perm, 0])
  np.testing.assert_array_equal(np.sort(permuted, 1), np.sort(pixel, 1))
  assert not np.array_equal(views.permutation(8, 784), perm)
  # The same view on the device, as the jitted step takes it.
  on_device = jax.jit(lambda x: views.as_sequence(x, 'permuted', 7))(images)
  np.testing.assert_array_equal(on_device, permuted)


def test_the_task_is_the_datas_view_and_the_model_reads_sequences():
  """``views.view`` reads every split as the config's task; labels and
  lengths are untouched, and the stored images are never modified."""
  images = np.random.default_rng(0).integers(0, 256, (3, 28, 28), np.uint8)
  data = {'train': {'image': images, 'label': np.arange(3)}}
  config = base_config()
  assert views.view_splits(config, data)['train']['image'] is images
  config.task, config.permutation_seed = 'permuted', 3
  viewed = views.view_splits(config, data)['train']
  np.testing.assert_array_equal(viewed['image'],
                                views.as_sequence(images, 'permuted', 3))
  assert viewed['label'] is data['train']['label']
  assert data['train']['image'] is images and images.shape == (3, 28, 28)
  assert views.sequence_shape('permuted', (28, 28)) == (784, 1)
  assert views.sequence_shape('row', (28, 28)) == (28, 28)
  assert not {'task', 'permutation_seed'} & {
      f.name for f in dataclasses.fields(LSTMClassifier)}


def test_task_needs_images_and_mirroring_needs_rows_of_images():
  config = base_config()
  config.dataset, config.task = 'uea_basic_motions', 'pixel'
  with pytest.raises(ConfigError, match="task.*only the image datasets"):
    validate(config)
  config = base_config()
  config.task, config.augment_hflip = 'pixel', True
  with pytest.raises(ConfigError, match="augment_hflip.*needs task='row'"):
    validate(config)
  config = base_config()
  config.dataset, config.augment_hflip = 'npz:series.npz', True
  with pytest.raises(ConfigError, match="augment_hflip.*only the image "
                     r"datasets \('mnist', 'fashion_mnist'\) have them"):
    validate(config)
