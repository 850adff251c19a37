"""Parameters, logits and gradients of fixed models, to compare two checkouts.

``python experiments/model_fingerprint.py save OUT.npz`` in one checkout and
``... compare OUT.npz`` in another shows whether a refactoring changed any
number: every array must match bitwise (the same config and seed give the same
parameters, logits and gradients). Covers the default config and each cell,
impl and the bidirectional layout on a small synthetic batch.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from seqclf import config as config_lib
from seqclf.nn import classifier

CASES = {
    'default': {},
    'fused': {'impl': 'fused'},
    'kernel': {'impl': 'kernel'},
    'gru_bidirectional': {'cell': 'gru', 'bidirectional': True,
                          'num_layers': 2},
    'elman': {'cell': 'elman', 'recurrent_init': 'identity'},
    'lstm_2_layers_bidirectional': {'num_layers': 2, 'bidirectional': True},
}


def fingerprint() -> dict[str, np.ndarray]:
  """Flat arrays: each case's params, logits and parameter gradients."""
  out = {}
  x = jax.random.uniform(jax.random.key(7), (5, 28, 28))
  y = jnp.arange(5) % 10
  for name, overrides in CASES.items():
    config = config_lib.base_config()
    config.update({'impl': 'scan', **overrides})
    model = classifier.from_config(config, config.impl)
    params = jax.jit(model.init)(jax.random.key(config.seed),
                                 jnp.zeros((1, 28, 28)))['params']
    logits = jax.jit(model.apply)({'params': params}, x)
    loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(
        model.apply({'params': p}, x), y).mean()
    grads = jax.jit(jax.grad(loss))(params)
    for kind, tree in (('params', params), ('grads', grads)):
      for path, v in traverse_util.flatten_dict(tree, sep='/').items():
        out[f'{name}:{kind}:{path}'] = np.asarray(v)
    out[f'{name}:logits'] = np.asarray(logits)
  return out


def main(argv: list[str]) -> int:
  if len(argv) != 3 or argv[1] not in ('save', 'compare'):
    print(__doc__.splitlines()[0] + '\nusage: model_fingerprint.py save|compare FILE.npz')
    return 2
  now = fingerprint()
  if argv[1] == 'save':
    np.savez(argv[2], **now)
    print(f'saved {len(now)} arrays to {argv[2]}')
    return 0
  saved = dict(np.load(argv[2]))
  differ = sorted(k for k in set(saved) | set(now)
                  if k not in saved or k not in now
                  or not np.array_equal(saved[k], now[k]))
  print(f'{len(now)} arrays; {len(differ)} differ bitwise'
        + (': ' + ', '.join(differ[:10]) if differ else ''))
  return 1 if differ else 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
