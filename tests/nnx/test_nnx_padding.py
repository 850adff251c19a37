"""A padded batch through an NNX layer equals each row run alone.

Values and gradients (parameters, inputs, initial carry) of a batch with
``seq_lengths`` are those of each row cropped to its length and run alone:
padding changes nothing and gets zero input gradient, on every path.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import needs_cpu_kernel, normal
from nnx_cases import HIDDEN, LENGTHS, assert_close, inputs, layer, valid

# The full suite only: tests/nn/test_recurrent_api.py runs the same linen
# code on the paths of the fast tier.
CASES = [pytest.param('lstm', 'kernel', False,
                      marks=[needs_cpu_kernel, pytest.mark.slow]),
         *(pytest.param(*case, marks=pytest.mark.slow) for case in (
             ('lstm', 'scan', False), ('lstm', 'fused', False),
             ('lstm', 'fused', True),
             ('gru', 'scan', True), ('elman', 'scan', False))),
         pytest.param('lstm', 'kernel', True,
                      marks=[needs_cpu_kernel, pytest.mark.slow])]


def _row_loss(carry, out):
  w = jnp.sin(jnp.arange(out.shape[-2] * out.shape[-1], dtype=jnp.float32)
              ).reshape(out.shape[-2:])
  return jnp.sum(out * w) + sum(jnp.sum(jnp.tanh(c)) for c in
                                jax.tree.leaves(carry))


@pytest.mark.parametrize('cell,impl,reverse', CASES)
def test_padded_batch_equals_each_row_alone(cell, impl, reverse):
  model, x = layer(cell, impl), inputs()
  shape = (5, HIDDEN)
  carry0 = normal(4, shape) * 0.1
  if cell == 'lstm':
    carry0 = (carry0, -carry0)
  kwargs = dict(return_carry=True, reverse=reverse, keep_order=True)

  def padded(model, x, carry0):
    carry, out = model(x, initial_carry=carry0,
                       seq_lengths=jnp.asarray(LENGTHS), **kwargs)
    rows = sum(_row_loss(jax.tree.map(lambda c: c[b], carry), out[b, :n])
               for b, n in enumerate(LENGTHS))
    return rows, (carry, out)

  def alone(model, x, carry0):
    total, rows = 0.0, []
    for b, n in enumerate(LENGTHS):
      carry, out = model(x[b:b + 1, :n], initial_carry=jax.tree.map(
          lambda c: c[b:b + 1], carry0), **kwargs)
      total += _row_loss(jax.tree.map(lambda c: c[0], carry), out[0])
      rows.append((carry, out))
    return total, rows

  grad = lambda f: nnx.jit(nnx.value_and_grad(f, argnums=(0, 1, 2),
                                              has_aux=True))
  (l1, (carry, out)), g1 = grad(padded)(model, x, carry0)
  (l2, rows), g2 = grad(alone)(model, x, carry0)
  np.testing.assert_allclose(l1, l2, rtol=1e-5)
  for b, (row_carry, row_out) in enumerate(rows):
    n = LENGTHS[b]
    assert_close(jax.tree.map(lambda c: c[b:b + 1], carry), row_carry)
    assert_close(out[b:b + 1, :n], row_out)
    np.testing.assert_array_equal(out[b, n:], 0.0)
  assert_close(nnx.to_pure_dict(g1[0]), nnx.to_pure_dict(g2[0]), rtol=1e-4,
               atol=1e-5)
  assert_close(g1[1:], g2[1:], rtol=1e-4, atol=1e-5)
  np.testing.assert_array_equal(g1[1][~valid(LENGTHS, x.shape[1])], 0.0)
