"""A tfds builder for MNIST with the reference's splits, prepared offline.

Unlike tfds' own ``mnist`` it needs no TensorFlow: images are stored as
``Tensor`` features in ``array_record`` files and read back through
``tfds.data_source``. Splits follow TF1's ``read_data_sets(validation_size=5000)``:
validation is the first 5,000 images of the official training file, train the
remaining 55,000, test the official 10,000.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from seqclf.data import dataset_info, mnist_files

NUM_VALIDATION = 5000


class SeqclfMnist(tfds.core.GeneratorBasedBuilder):
  """MNIST from the four raw IDX files, verified against pinned checksums."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Splits 55k/5k/10k as in TF1 read_data_sets.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      'Put train-images-idx3-ubyte, train-labels-idx1-ubyte, '
      't10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (raw or .gz) in the '
      'manual dir, or run `seqclf prepare-data`, which fetches them.')

  # What a subclass for another dataset in this layout changes.
  load_verified = staticmethod(mnist_files.load_verified)
  DESCRIPTION = 'MNIST handwritten digits, 28x28 uint8, 10 classes.'
  HOMEPAGE = 'http://yann.lecun.com/exdb/mnist/'
  CLASS_NAMES: tuple[str, ...] | None = None  # None: classes 0-9 unnamed

  def _info(self) -> tfds.core.DatasetInfo:
    label = (tfds.features.ClassLabel(num_classes=10)
             if self.CLASS_NAMES is None
             else tfds.features.ClassLabel(names=self.CLASS_NAMES))
    return dataset_info.DatasetInfo(
        builder=self,
        description=self.DESCRIPTION,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Tensor(shape=(28, 28), dtype=np.uint8),
            'label': label,
            # Position in the official file: restores the original order,
            # which tfds shuffles when writing.
            'id': tfds.features.Scalar(dtype=np.int64),
        }),
        supervised_keys=('image', 'label'),
        homepage=self.HOMEPAGE,
    )

  def _split_generators(self, dl_manager):
    load = lambda name: self.load_verified(dl_manager.manual_dir, name)
    train = (load('train-images-idx3-ubyte'), load('train-labels-idx1-ubyte'))
    test = (load('t10k-images-idx3-ubyte'), load('t10k-labels-idx1-ubyte'))
    return {
        'train': self._generate_examples(*train, range(NUM_VALIDATION, 60000)),
        'validation': self._generate_examples(*train, range(NUM_VALIDATION)),
        'test': self._generate_examples(*test, range(10000)),
    }

  def _generate_examples(self, images, labels, ids):
    for i in ids:
      yield i, {'image': images[i], 'label': int(labels[i]), 'id': i}
