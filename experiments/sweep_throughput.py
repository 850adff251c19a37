"""Throughput of K models in one vmapped jitted step vs K sequential runs.

  python experiments/sweep_throughput.py [--models 5] [--steps 200] [--repeats 3] [--out runs/results/throughput.json]

Both sides run the reference config's ``train_steps`` in compiled chunks of
``steps_per_call`` steps on the device-resident training set, timed after
compilation; the two are interleaved ``--repeats`` times so a busy machine
slows both alike, and the best repeat of each is reported.
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
from seqclf.training import state as state_lib, steps as steps_lib


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

  single = jax.jit(steps_lib.train_steps)
  singles = [state_lib.create_train_state(config, jax.random.key(s)) for s in seeds]
  many = sweep.sweep_steps_fn()
  states = sweep.init_states(config, seeds)
  rngs = jax.vmap(steps_lib.train_key)(np.asarray(seeds, np.uint32))
  jax.block_until_ready(single(singles[0], images, labels, indices[0][0]))
  # Copies on the device: `many` donates its states.
  fresh = lambda: jax.tree.map(jnp.copy, states)
  jax.block_until_ready(many(fresh(), images, labels, rngs, indices[0]))

  seq_times, vmap_times = [], []
  for _ in range(args.repeats):
    t = time.perf_counter()
    for m in range(k):
      state = singles[m]
      for idx in indices:
        state, _ = single(state, images, labels, idx[m])
      jax.block_until_ready(state)
    seq_times.append(time.perf_counter() - t)
    s = jax.block_until_ready(fresh())
    t = time.perf_counter()
    for idx in indices:
      s, _ = many(s, images, labels, rngs, idx)
    jax.block_until_ready(s)
    vmap_times.append(time.perf_counter() - t)
  examples = k * steps * batch
  result = {
      'models': k, 'steps_per_model': steps, 'batch_size': batch,
      'sequential_seconds': min(seq_times), 'vmapped_seconds': min(vmap_times),
      'sequential_examples_per_second': examples / min(seq_times),
      'vmapped_examples_per_second': examples / min(vmap_times),
      'speedup': min(seq_times) / min(vmap_times),
      'all_sequential_seconds': seq_times, 'all_vmapped_seconds': vmap_times,
      'machine': sweep.machine(),
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
