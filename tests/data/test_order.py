"""The data order: batches a pure function of (seed, step); evaluation covers each example once; flips."""

import numpy as np

from seqclf.data import ops, order as order_lib


def test_train_order_depends_only_on_seed_and_step():
  a = order_lib.train_indices(0, 1000, 100, 0, 25)
  assert a.shape == (25, 100)
  # Each epoch (10 steps) is a permutation; epochs differ.
  for e in range(2):
    assert sorted(a[10 * e:10 * e + 10].ravel()) == list(range(1000))
  assert not np.array_equal(a[:10], a[10:20])
  # Resuming at step 13 sees exactly the same batches.
  np.testing.assert_array_equal(
      order_lib.train_indices(0, 1000, 100, 13, 12), a[13:])
  assert not np.array_equal(order_lib.train_indices(1, 1000, 100, 0, 25), a)


def test_train_batches_shapes(mnist):
  batch = next(order_lib.train_batches(mnist['train'], 0, 32))
  assert batch['image'].shape == (32, 28, 28)
  assert batch['image'].dtype == np.float32 and batch['label'].dtype == np.int32
  assert 0.0 <= batch['image'].min() and batch['image'].max() <= 1.0


def test_eval_batches_cover_every_example_once():
  split = {'image': np.arange(250 * 784, dtype=np.uint32).astype(np.uint8)
                    .reshape(250, 28, 28),
           'label': np.arange(250, dtype=np.int32)}
  batches = list(order_lib.eval_batches(split, 100))
  assert [b['image'].shape for b in batches] == [(100, 28, 28)] * 3
  assert batches[-1]['mask'].sum() == 50
  seen = np.concatenate([b['label'][b['mask']] for b in batches])
  np.testing.assert_array_equal(seen, split['label'])


def test_random_hflip_mirrors_about_half_the_images_reproducibly():
  import jax  # pylint: disable=g-import-not-at-top
  images = np.arange(1000 * 28 * 28, dtype=np.float32).reshape(1000, 28, 28)
  out = np.asarray(ops.random_hflip(images, jax.random.key(0)))
  same = np.all(out == images, axis=(1, 2))
  mirrored = np.all(out == images[..., ::-1], axis=(1, 2))
  assert np.all(same ^ mirrored)  # each image whole, either way round
  assert 400 < mirrored.sum() < 600
  np.testing.assert_array_equal(
      out, ops.random_hflip(images, jax.random.key(0)))
  assert not np.array_equal(
      out, ops.random_hflip(images, jax.random.key(1)))
