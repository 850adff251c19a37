"""The NNX layers under flax's NNX transforms: nnx.jit, nnx.grad and
value_and_grad, nnx.vmap (an ensemble), nnx.remat, nnx.Optimizer."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from conftest import needs_cpu_kernel
from nnx_cases import HIDDEN, assert_close, assert_equal, inputs, layer
from seqclf import nnx as seqnnx
from seqclf.nn import classifier


def _loss(model, x):
  carry, out = model(x, return_carry=True)
  return jnp.sum(jnp.sin(out)) + sum(jnp.sum(c ** 2)
                                     for c in jax.tree.leaves(carry))


@pytest.mark.parametrize('impl', [
    'fused', pytest.param('scan', marks=pytest.mark.slow),
    pytest.param('kernel', marks=[needs_cpu_kernel, pytest.mark.slow])])
def test_jit_grad_and_value_and_grad_equal_linens(impl):
  """nnx.jit(nnx.value_and_grad) of the NNX layer gives bitwise what
  jax.jit(jax.value_and_grad) of the linen layer gives on its params."""
  model, x = layer(impl=impl), inputs()
  loss, grads = nnx.jit(nnx.value_and_grad(_loss))(model, x)
  linen = model.linen_module
  linen_loss = lambda p: _loss(
      lambda x, **kw: linen.apply({'params': p}, x), x)
  params = seqnnx.to_linen_params(model)
  expected, expected_grads = jax.jit(jax.value_and_grad(linen_loss))(params)
  assert_equal((loss, nnx.to_pure_dict(grads)), (expected, expected_grads))
  assert_close(nnx.to_pure_dict(nnx.grad(_loss)(model, x)), expected_grads)
  assert_equal(nnx.jit(lambda m, x: m(x))(model, x),
               jax.jit(linen.apply)({'params': params}, x)[1])


@pytest.mark.slow
def test_remat_gives_the_same_gradients():
  model, x = layer(impl='fused'), inputs()
  remat_loss = lambda m, x: nnx.remat(_loss)(m, x)
  plain = nnx.grad(_loss)(model, x)
  remat = nnx.grad(remat_loss)(model, x)
  assert_close(nnx.to_pure_dict(remat), nnx.to_pure_dict(plain), rtol=1e-6,
               atol=1e-7)
  # And it is rematerialized: a remat in the traced program (jax's
  # checkpoint primitive, `remat2`), which the plain one lacks.
  graphdef, state = nnx.split(model)
  traced = lambda loss: str(jax.make_jaxpr(jax.grad(
      lambda s: loss(nnx.merge(graphdef, s), x)))(state))
  assert 'remat' in traced(remat_loss) and 'remat' not in traced(_loss)


@pytest.mark.slow
def test_vmap_builds_and_runs_an_ensemble():
  """Members drawn from split keys under nnx.vmap: each is the model built
  alone from its key, and the vmapped forward pass is each one's."""
  keys = jax.random.split(jax.random.key(0), 3)

  @nnx.vmap(in_axes=0, out_axes=0)
  def create(key):
    return seqnnx.LSTM(3, HIDDEN, impl='fused', rngs=nnx.Rngs(params=key))

  ensemble, x = create(keys), inputs()
  outputs = nnx.vmap(lambda m, x: m(x), in_axes=(0, None))(ensemble, x)
  assert outputs.shape == (3, 5, 6, HIDDEN)
  stacked = seqnnx.to_linen_params(ensemble)
  for k, key in enumerate(keys):
    alone = seqnnx.LSTM(3, HIDDEN, impl='fused', rngs=nnx.Rngs(params=key))
    assert_close(jax.tree.map(lambda p: p[k], stacked),
                 seqnnx.to_linen_params(alone), rtol=1e-6, atol=1e-6)
    assert_close(outputs[k], alone(x), rtol=1e-5, atol=1e-6)


def test_optimizer_steps_equal_optax_on_the_linen_params():
  """nnx.Optimizer(model, optax.adam, wrt=nnx.Param) updates the model as
  optax updates the linen classifier's params, and the loss falls."""
  x = inputs((8, 5, 4))
  labels = jnp.arange(8) % 3
  model = seqnnx.LSTMClassifier(4, 3, hidden_size=HIDDEN, impl='fused',
                                rngs=nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
  loss = lambda m: optax.softmax_cross_entropy_with_integer_labels(
      m(x), labels).mean()

  @nnx.jit
  def step(model, optimizer):
    value, grads = nnx.value_and_grad(loss)(model)
    optimizer.update(model, grads)
    return value

  linen = classifier.LSTMClassifier(num_classes=3, hidden_size=HIDDEN,
                                    impl='fused')
  params = seqnnx.to_linen_params(model)
  tx = optax.adam(1e-2)
  opt_state = tx.init(params)

  @jax.jit
  def linen_step(params, opt_state):
    value, grads = jax.value_and_grad(
        lambda p: optax.softmax_cross_entropy_with_integer_labels(
            linen.apply({'params': p}, x), labels).mean())(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, value

  losses = []
  for _ in range(5):
    losses.append(float(step(model, optimizer)))
    params, opt_state, value = linen_step(params, opt_state)
    np.testing.assert_allclose(losses[-1], value, rtol=1e-6)
  assert losses[-1] < losses[0]
  assert int(optimizer.step[...]) == 5
  assert_close(seqnnx.to_linen_params(model), params, rtol=1e-5, atol=1e-6)
