"""Why seqclf's ``nn.scan`` LSTM was slower than flax's: variants, interleaved.

Each variant is one LSTM-128 layer over (batch, 28, 28), the parameters of
``seqclf.nn.LSTM`` (``cell/input/{kernel,bias}``, ``cell/hidden/kernel``),
differing in one thing at a time:

- ``hoisted``: the input projection for all steps in one matmul before the
  loop, a (T, B, 4H) buffer scanned over its axis -2 (seqclf's layer until
  this change); ``time_major``: the same, projecting time-major inputs and
  scanning axis 0; ``per_step``: ``x_t @ W_x + b`` inside the loop, as
  flax's ``nn.RNN`` does;
- ``autodiff``: the gate nonlinearities differentiated as written (autodiff
  keeps each gate value per step, several twice); ``remat``: the same
  arithmetic under ``jax.checkpoint``, so only the float32 pre-activations
  are kept and the nonlinearities are recomputed in the backward pass;
  ``onetanh``: ``seqclf.kernels.fast_lstm``'s form, one ``tanh`` over the whole
  (B, 4H) tensor with ``sigmoid(x) = (1 + tanh(x / 2)) / 2``;
  ``onetanh_remat``: that form under ``jax.checkpoint``.

Names are ``placement/update`` (e.g. ``hoisted/autodiff``), plus ``flax``
(``nn.RNN(nn.OptimizedLSTMCell(128))``) and ``seqclf`` (``models.LSTM`` as
it is now). For each it reports, from one interleaved run, the median time of
the jitted forward (``fwd``) and forward + backward (``grad``) pass, the ratio
to flax, XLA's scratch (temp) memory and the minor page faults per call. Pin
it to one core:

  taskset -c 1 python experiments/scan_variants.py
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

SEQ, FEATURES, HIDDEN = 28, 28, 128
DEFAULT = ('hoisted/autodiff,time_major/autodiff,hoisted/onetanh,hoisted/remat,'
           'hoisted/onetanh_remat,per_step/autodiff,per_step/onetanh,'
           'per_step/remat,seqclf,flax')


def _layer(name: str):
  """(module, outputs-of-apply) for a variant name."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from seqclf.kernels import fast_lstm  # pylint: disable=g-import-not-at-top
  from seqclf.nn import LSTM  # pylint: disable=g-import-not-at-top

  if name == 'flax':
    return nn.RNN(nn.OptimizedLSTMCell(HIDDEN)), lambda out: out
  if name == 'seqclf':
    return LSTM(HIDDEN), lambda out: out[1]
  placement, update = name.split('/')
  forget_bias = 1.0

  def sigmoid_update(gates, c):
    i, j, f, o = jnp.split(gates, 4, axis=-1)
    c = nn.sigmoid(f + forget_bias) * c + nn.sigmoid(i) * jnp.tanh(j)
    return c, nn.sigmoid(o) * jnp.tanh(c)

  def onetanh_update(gates, c):
    scale, shift, _ = fast_lstm._gate_constants(HIDDEN, forget_bias)  # pylint: disable=protected-access
    t = jnp.tanh(gates * scale + shift)
    i, j, f, o = jnp.split(t * scale + (1.0 - scale), 4, axis=-1)
    c = f * c + i * j
    return c, o * jnp.tanh(c)

  fn = {'autodiff': sigmoid_update, 'remat': jax.checkpoint(sigmoid_update),
        'onetanh': onetanh_update,
        'onetanh_remat': jax.checkpoint(onetanh_update)}[update]

  class Cell(nn.Module):
    def setup(self):
      self.input = nn.Dense(4 * HIDDEN, name='input')
      self.hidden = nn.Dense(4 * HIDDEN, use_bias=False,
                             kernel_init=nn.initializers.orthogonal(),
                             name='hidden')

    def project(self, x):
      return self.input(x)

    def __call__(self, carry, x):
      c, h = carry
      p = self.project(x) if placement == 'per_step' else x  # else projected
      c, h = fn((p + self.hidden(h)).astype(jnp.float32), c)
      return (c, h), h

  class Layer(nn.Module):
    @nn.compact
    def __call__(self, inputs):
      cell = Cell(name='cell')
      zeros = jnp.zeros((*inputs.shape[:-2], HIDDEN), jnp.float32)
      axis = 0 if placement == 'time_major' else -2
      scan = nn.scan(lambda m, carry, x: m(carry, x),
                     variable_broadcast='params', split_rngs={'params': False},
                     in_axes=axis, out_axes=axis)
      if placement == 'per_step':
        return scan(cell, (zeros, zeros), inputs)
      if placement == 'hoisted':
        return scan(cell, (zeros, zeros), cell.project(inputs))
      carry, ys = scan(cell, (zeros, zeros),
                       cell.project(jnp.moveaxis(inputs, -2, 0)))
      return carry, jnp.moveaxis(ys, 0, -2)

  return Layer(), lambda out: out[1]


def compile_variant(name: str, batch: int, mode: str):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  layer, outputs = _layer(name)
  x = jax.random.normal(jax.random.key(0), (batch, SEQ, FEATURES))
  params = layer.init(jax.random.key(1), x)
  w = jnp.cos(jnp.arange(batch * SEQ * HIDDEN)).reshape(batch, SEQ, -1)
  loss = lambda p: jnp.sum(outputs(layer.apply(p, x)) * w)
  compiled = jax.jit(jax.grad(loss) if mode == 'grad' else loss
                     ).lower(params).compile()
  return compiled, params


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--variants', default=DEFAULT)
  parser.add_argument('--modes', default='fwd,grad')
  parser.add_argument('--batch', type=int, default=100)
  parser.add_argument('--rounds', type=int, default=9)
  parser.add_argument('--reps', type=int, default=5)
  args = parser.parse_args(argv)
  sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
  import jax  # pylint: disable=g-import-not-at-top

  fns, temp, faults = {}, {}, {}
  for name in args.variants.split(','):
    for mode in args.modes.split(','):
      compiled, params = compile_variant(name, args.batch, mode)
      key = (name, mode)
      fns[key] = lambda c=compiled, p=params: jax.block_until_ready(c(p))
      temp[key] = compiled.memory_analysis().temp_size_in_bytes / 2**20
      fns[key]()  # warm-up
  keys, times = list(fns), {key: [] for key in fns}
  for r in range(args.rounds):
    for key in keys[r % len(keys):] + keys[:r % len(keys)]:
      start = time.perf_counter()
      for _ in range(args.reps):
        fns[key]()
      times[key].append(1e3 * (time.perf_counter() - start) / args.reps)
  for key in keys:  # after the timing, when the allocator has settled
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(args.reps):
      fns[key]()
    faults[key] = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                   - before) / args.reps
  med = {key: statistics.median(v) for key, v in times.items()}
  print(f'| (batch {args.batch}, {SEQ}, {FEATURES}) -> LSTM-{HIDDEN} | pass | '
        'ms (median) | time / flax | temp MiB | page faults / call |')
  print('|---|---|---|---|---|---|')
  for (name, mode) in keys:
    ref = med.get(('flax', mode), np.nan)
    print(f'| {name} | {mode} | {med[name, mode]:.1f} | '
          f'{med[name, mode] / ref:.2f} | {temp[name, mode]:.1f} | '
          f'{faults[name, mode]:.0f} |')
  command = ' '.join(['python experiments/scan_variants.py',
                       *(argv or sys.argv[1:])])
  print(f'\n{args.rounds} interleaved rounds of {args.reps} calls; '
        f'`{command}`')
  return 0


if __name__ == '__main__':
  sys.exit(main())
