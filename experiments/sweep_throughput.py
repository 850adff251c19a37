"""Throughput of K models in one group program vs K single runs' programs.

  python experiments/sweep_throughput.py [--models 5] [--steps 200] [--repeats 3] [--out runs/results/throughput.json]

Three ways to train K models of the default config on one device, each in
compiled chunks of ``steps_per_call`` steps on the device-resident training
set, timed after compilation: the single run's chunk program called for one
model after another; one group program running the models one after another
inside it (``hyper.steps_fn(sequential=True)``, what a sweep runs on the
CPU); and one vmapped group program (what it runs on an accelerator). The
three are interleaved ``--repeats`` times so a busy machine slows them alike,
and the best repeat of each is reported.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from seqclf import sweep
from seqclf.config import base_config
from seqclf.data import order as order_lib, prepared
from seqclf.training import (autotune, hyper, state as state_lib,
                             steps as steps_lib)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--models', type=int, default=5)
  parser.add_argument('--steps', type=int, default=200)
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--out', default=None, help='also write the JSON here')
  args = parser.parse_args()
  config = base_config()
  k, steps, chunk = args.models, args.steps, config.steps_per_call
  split = prepared.load_datasets(None, ('train',))['train']
  n, batch = len(split['label']), config.batch_size
  images, labels = jax.device_put((split['image'], split['label']))
  seeds = list(range(k))
  indices = [np.stack([order_lib.train_indices(s, n, batch, i, chunk)
                       for s in seeds]) for i in range(0, steps, chunk)]

  impl = autotune.resolve_impl(config)
  single = jax.jit(steps_lib.train_steps)
  singles = [state_lib.create_train_state(config, jax.random.key(s), impl=impl)
             for s in seeds]
  states = hyper.init_states(config, seeds, [{}] * k, impl=impl,
                             sequence_shape=images.shape[1:])
  rngs = jax.vmap(steps_lib.train_key)(np.asarray(seeds, np.uint32))
  groups = {name: jax.jit(hyper.steps_fn(config, False, False,
                                         sequential=name == 'sequential'),
                          donate_argnums=0)
            for name in ('sequential', 'vmapped')}
  # Copies on the device: the group programs donate their states.
  fresh = lambda: jax.tree.map(jnp.copy, states)
  jax.block_until_ready(single(singles[0], images, labels, indices[0][0]))
  for fn in groups.values():
    jax.block_until_ready(fn(fresh(), images, labels, rngs, indices[0]))

  times = {'single_runs': [], **{name: [] for name in groups}}
  for _ in range(args.repeats):
    t = time.perf_counter()
    for m in range(k):
      state = singles[m]
      for idx in indices:
        state, _ = single(state, images, labels, idx[m])
      jax.block_until_ready(state)
    times['single_runs'].append(time.perf_counter() - t)
    for name, fn in groups.items():
      s = jax.block_until_ready(fresh())
      t = time.perf_counter()
      for idx in indices:
        s, _ = fn(s, images, labels, rngs, idx)
      jax.block_until_ready(s)
      times[name].append(time.perf_counter() - t)
  examples = k * steps * batch
  best = {name: min(t) for name, t in times.items()}
  result = {
      'models': k, 'steps_per_model': steps, 'batch_size': batch,
      'impl': impl,
      'examples_per_second': {n: examples / t for n, t in best.items()},
      'speedup_over_single_runs': {n: best['single_runs'] / t
                                   for n, t in best.items()},
      'all_seconds': times, 'machine': sweep.machine(),
  }
  result['command'] = ('python experiments/sweep_throughput.py '
                       f'--models {k} --steps {steps} --repeats {args.repeats}')
  text = json.dumps(result, indent=2)
  print(text)
  if args.out:
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + '\n')


if __name__ == '__main__':
  main()
