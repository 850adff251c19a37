"""seqclf.training.loop: absolute chunk boundaries, one chunk runner, one evaluation."""

import itertools
import time

import jax
import numpy as np
import pytest

from conftest import small_config
from seqclf.data import order as order_lib
from seqclf.training import hyper, loop, state as state_lib, steps as steps_lib


def _data(n=64, seed=0):
  rng = np.random.default_rng(seed)
  return {'image': rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
          'label': rng.integers(0, 10, n).astype(np.int32)}


def test_boundaries_are_absolute_multiples_of_every_interval():
  config = small_config(num_train_steps=23, steps_per_call=7, eval_every=10,
                        checkpoint_every=5)
  assert list(loop.boundaries(0, config)) == [
      (0, 5), (5, 7), (7, 10), (10, 14), (14, 15), (15, 20), (20, 21),
      (21, 23)]
  # Resumed at a boundary: exactly the rest of an uninterrupted run's chunks.
  assert list(loop.boundaries(15, config)) == list(loop.boundaries(0, config))[5:]


def test_chunks_split_anywhere_train_bitwise_the_same():
  """One chunk of 6 steps == chunks of 2 + 4: the batches depend on (seed,
  step) alone and each call continues the state."""
  config = small_config(hidden_size=8, batch_size=8)
  data = _data()
  fresh = lambda: state_lib.create_train_state(config, jax.random.key(0),
                                           impl='scan')
  make = lambda: loop.Chunks(jax.jit(steps_lib.train_steps),
                             (data['image'], data['label']), 3, 64, 8)
  one = make()
  a, metrics = one(fresh(), 0, 6)
  assert metrics['loss'].shape == (6,) and one.examples == 48
  two = make()
  b, m1 = two(fresh(), 0, 2)
  b, m2 = two(b, 2, 6)
  assert len(two.compiled) == 2 and two.compile_seconds > 0
  assert two.examples_per_second > 0
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)
  np.testing.assert_array_equal(metrics['loss'],
                                np.concatenate([m1['loss'], m2['loss']]))


def test_stacked_runner_gives_each_model_its_seeds_batches():
  chunks = loop.Chunks(None, (), [4, 9], 64, 8)
  indices = chunks.indices(3, 5)
  assert indices.shape == (2, 5, 8)
  for k, seed in enumerate((4, 9)):
    np.testing.assert_array_equal(
        indices[k], order_lib.train_indices(seed, 64, 8, 3, 5))


def _group(config, seeds):
  return hyper.init_states(config, seeds, [{}] * len(seeds), impl='scan',
                           sequence_shape=(28, 28))


def test_stacked_evaluation_is_each_models_own_evaluation():
  """The sweep's evaluation is the single run's (host float64 sums) per
  model: bitwise one model after another, to rounding vmapped."""
  config = small_config(hidden_size=8)
  split = _data(50, seed=1)
  states = _group(config, [0, 1])
  vmapped = steps_lib.evaluate(states, split, 20, stacked=True)
  each = steps_lib.evaluate(states, split, 20, stacked=True, sequential=True)
  assert each['count'] == 50 and each['loss'].shape == (2,)
  for k in range(2):
    one = steps_lib.evaluate(jax.tree.map(lambda x, k=k: x[k], states), split, 20)
    assert each['accuracy'][k] == one['accuracy'] == vmapped['accuracy'][k]
    assert each['loss'][k] == one['loss']
    assert vmapped['loss'][k] == pytest.approx(one['loss'], rel=1e-6)
  assert each['loss'][0] != each['loss'][1]


def test_group_runner_uses_the_loop_boundaries_and_counts_examples():
  config = small_config(hidden_size=8, batch_size=8, num_train_steps=6,
                        steps_per_call=4, eval_every=100, checkpoint_every=100)
  states = _group(config, [0, 1])
  data = _data()
  rngs = jax.vmap(steps_lib.train_key)(np.asarray([0, 1], np.uint32))
  run = jax.jit(hyper.steps_fn(config, False, False, sequential=True),
                donate_argnums=0)
  chunks = loop.Chunks(run, (data['image'], data['label'], rngs), [0, 1],
                       64, 8)
  for start, end in loop.boundaries(0, config):
    states, metrics = chunks(states, start, end)
  assert sorted(chunks.compiled) == [(2, 2, 8), (2, 4, 8)]  # steps 0-4, 4-6
  assert chunks.examples == 2 * 6 * 8
  assert np.asarray(states.step).tolist() == [6, 6]
  assert metrics['loss'].shape == (2, 2)


class _EndlessStream:
  """Rows of one-step batches, each read taking a while: a reader that is
  mid-chunk when training stops (an early stop) is the case."""
  bucket = False

  def steps(self, start):
    for i in itertools.count(start):
      time.sleep(0.01)
      yield (np.full((2, 3), i, np.float32),)


def test_stream_chunks_close_waits_for_the_reader_to_end():
  """``close`` returns only once the reading thread has ended: a reader
  still placing arrays on the devices as the interpreter exits aborted the
  process (exit status 134 after an early stop)."""
  fn = jax.jit(lambda state, x: (state + x.sum(), {'loss': x.sum(axis=(1, 2))}))
  chunks = loop.StreamChunks(fn, _EndlessStream(), jax.device_put,
                             [(0, 4), (4, 8), (8, 12)], seed=0,
                             num_examples=10, batch_size=2)
  state, metrics = chunks(np.float32(0), 0, 4)
  assert float(state) == 3 * (0 + 1 + 2 + 3) * 2
  assert metrics['loss'].tolist() == [0, 6, 12, 18]
  thread = chunks._thread  # pylint: disable=protected-access
  assert thread.is_alive()  # reading the next chunk ahead
  chunks.close()
  assert not thread.is_alive()
