"""Float64 numpy references of the LSTM the tests compare every path with."""

import functools

import jax
import jax.numpy as jnp
import numpy as np


def sigmoid(z):
  return 1 / (1 + np.exp(-z))


def tf_lstm(x, w_x, b, w_h, forget_bias):
  """TF ``BasicLSTMCell`` over (B, T, I) ``x``: gates [i, j, f, o] =
  x W_x + h W_h + b; c' = s(f + forget_bias) c + s(i) tanh(j); h' = s(o)
  tanh(c'). Returns ((c_T, h_T), hs)."""
  c = h = np.zeros((x.shape[0], w_h.shape[0]))
  hs = []
  for t in range(x.shape[1]):
    i, j, f, o = np.split(x[:, t] @ w_x + h @ w_h + b, 4, axis=-1)
    c = sigmoid(f + forget_bias) * c + sigmoid(i) * np.tanh(j)
    h = sigmoid(o) * np.tanh(c)
    hs.append(h)
  return (c, h), np.stack(hs, 1)


def torch_lstm(x, w_ih, w_hh, b_ih, b_hh):
  """``torch.nn.LSTM(batch_first=True)``, one layer: gates [i, f, g, o] =
  W_ih x + b_ih + W_hh h + b_hh; c' = s(f) c + s(i) tanh(g); h' = s(o) tanh(c')."""
  c = h = np.zeros((x.shape[0], w_hh.shape[1]))
  hs = []
  for t in range(x.shape[1]):
    i, f, g, o = np.split(x[:, t] @ w_ih.T + b_ih + h @ w_hh.T + b_hh, 4, -1)
    c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
    h = sigmoid(o) * np.tanh(c)
    hs.append(h)
  return (c, h), np.stack(hs, 1)


def random_lstm_params(i, h, seed=0):
  rng = np.random.default_rng(seed)
  return {'cell': {
      'input': {'kernel': rng.normal(0, 1 / np.sqrt(i), (i, 4 * h)),
                'bias': rng.normal(0, 0.5, 4 * h)},
      'hidden': {'kernel': rng.normal(0, 1 / np.sqrt(h), (h, 4 * h))}}}


def f32(tree):
  return jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), tree)


def tf_loss(x, params, forget_bias, weights):
  p = params['cell']
  (c, _), hs = tf_lstm(x, p['input']['kernel'], p['input']['bias'],
                        p['hidden']['kernel'], forget_bias)
  return np.sum(hs * weights) + np.sum(np.sin(c))


def numerical_grad(f, params):
  """Central differences of float64 ``f`` in every entry of ``params``."""
  leaves, treedef = jax.tree.flatten(params)
  grads = []
  for k, leaf in enumerate(leaves):
    g = np.zeros_like(leaf)
    for idx in np.ndindex(leaf.shape):
      shifted = []
      for eps in (1e-6, -1e-6):
        moved = [l.copy() for l in leaves]
        moved[k][idx] += eps
        shifted.append(f(jax.tree.unflatten(treedef, moved)))
      g[idx] = (shifted[0] - shifted[1]) / 2e-6
    grads.append(g)
  return jax.tree.unflatten(treedef, grads)


REFERENCE_FORGET_BIAS = 0.7  # not the default: it must be passed through


@functools.cache
def reference_case():
  """Inputs, params, loss weights, outputs and float64 gradients of one case."""
  b, t, i, h = 3, 6, 5, 16
  x = np.random.default_rng(1).uniform(-1, 1, (b, t, i))
  params = random_lstm_params(i, h)
  weights = np.cos(np.arange(b * t * h)).reshape(b, t, h)
  p = params['cell']
  outputs = tf_lstm(x, p['input']['kernel'], p['input']['bias'],
                     p['hidden']['kernel'], REFERENCE_FORGET_BIAS)
  grads = numerical_grad(
      lambda p: tf_loss(x, p, REFERENCE_FORGET_BIAS, weights), params)
  return x, params, weights, outputs, grads
