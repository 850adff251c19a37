"""The pure steps: evaluation masks padding examples."""

import jax
import jax.numpy as jnp
import numpy as np

from conftest import small_config, uniform
from seqclf.training import state as state_lib, steps as steps_lib


def test_eval_step_ignores_masked_examples():
  state = state_lib.create_train_state(small_config(hidden_size=8),
                                   jax.random.key(0))
  x = uniform(1, (6, 28, 28))
  labels = jnp.arange(6) % 10
  eval_step = jax.jit(steps_lib.eval_step)
  full = eval_step(state, {'image': x[:4], 'label': labels[:4]})
  padded = eval_step(state, {
      'image': x.at[4:].set(0.5), 'label': labels,
      'mask': jnp.arange(6) < 4})
  assert int(padded['count']) == 4
  np.testing.assert_allclose(padded['loss'], full['loss'], rtol=1e-5)
  assert int(padded['correct']) == int(full['correct'])
