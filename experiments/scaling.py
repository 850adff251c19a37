"""Examples/s of each parallelism mode on 1, 2 and 4 devices, with a per-step breakdown.

  python experiments/scaling.py [--devices 1,2,4] [--steps_per_call 50] [--chunks 3]

Each device count runs in its own subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` (JAX reads it once, at
start). On forced CPU devices all "devices" share the same cores, so this
measures correctness and overhead (index transfer, replication, collectives),
not a speedup. On a GPU/TPU host pass ``--real`` to use the real devices.

Per chunk of ``steps_per_call`` steps, the trainer's chunk runner
(``seqclf.training.loop.Chunks``, as ``train.train_and_evaluate`` sets it up) does: host indices (``seqclf.data.order.train_indices``), their placement
(``DataParallel.put_indices``), state layout conversion (``to_run``), the
compiled chunk (timed to ``block_until_ready``), and the way back
(``from_run`` + ``metrics``). Each is reported in ms per training step. The
data are random uint8 images of MNIST's shape: speed does not depend on them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

MODES = ('single', 'pmap', 'sharded')
PHASES = ('indices', 'put_indices', 'to_run', 'compute', 'from_run')  # loop.PHASES


def measure(mode: str, steps_per_call: int, chunks: int) -> dict:
  """Times ``chunks`` chunks (after one warm-up) of ``mode`` on this process's devices."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from seqclf.config import base_config  # pylint: disable=g-import-not-at-top
  from seqclf.training import loop  # pylint: disable=g-import-not-at-top
  from seqclf.training import parallel  # pylint: disable=g-import-not-at-top
  from seqclf.training import state as state_lib, steps as steps_lib  # pylint: disable=g-import-not-at-top

  config = base_config()  # The reference model: LSTM-128, batch 100.
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (55_000, 28, 28), dtype=np.uint8)
  labels = rng.integers(0, 10, 55_000).astype(np.int32)
  batch = config.batch_size
  dp = parallel.setup(mode, batch)
  state = dp.canonical(state_lib.create_train_state(config, jax.random.key(0)))
  # The trainer's own chunk runner, laid out as train_and_evaluate lays it out.
  runner = loop.Chunks(dp.chunk_fn(steps_lib.train_steps),
                       dp.put_data(images, labels), 0, len(labels), batch,
                       put_indices=dp.put_indices, to_run=dp.to_run,
                       from_run=dp.from_run, metrics=dp.metrics)
  runner.compile(state, dp.put_indices(runner.indices(0, steps_per_call)))
  step = 0
  for chunk in range(chunks + 1):
    if chunk == 1:  # The first chunk warms caches and allocators.
      runner.phase_seconds = dict.fromkeys(PHASES, 0.0)
    state, metrics = runner(state, step, step + steps_per_call)
    step += steps_per_call
  steps = chunks * steps_per_call
  totals = runner.phase_seconds
  per_step = {k: 1e3 * v / steps for k, v in totals.items()}
  return {'mode': dp.mode, 'devices': dp.num_devices,
          'visible_devices': jax.device_count(),
          'platform': jax.devices()[0].platform,
          'examples_per_second': batch * steps / sum(totals.values()),
          'ms_per_step': per_step, 'compile_seconds': runner.compile_seconds,
          'final_loss': float(metrics['loss'][-1])}


def _child(args: argparse.Namespace) -> None:
  for mode in MODES:
    print(json.dumps(measure(mode, args.steps_per_call, args.chunks)),
          flush=True)


def _parent(args: argparse.Namespace) -> None:
  repo = Path(__file__).resolve().parents[1]
  header = (f'{"devices":>7} {"mode":>8} {"ex/s":>8} '
            + ' '.join(f'{p:>11}' for p in PHASES) + f' {"loss":>7}')
  print(f'ms per step; {args.chunks} chunks x {args.steps_per_call} steps, '
        'batch 100, LSTM-128')
  print(header)
  rows = []
  for n in args.devices:
    env = dict(os.environ, JAX_PLATFORMS='cpu',
               XLA_FLAGS=f'--xla_force_host_platform_device_count={n}')
    if args.real:
      env = dict(os.environ)
    out = subprocess.run(
        [sys.executable, __file__, '--child',
         f'--steps_per_call={args.steps_per_call}', f'--chunks={args.chunks}'],
        cwd=repo, env=env, capture_output=True, text=True, check=False)
    if out.returncode:
      sys.exit(f'scaling: the {n}-device run failed:\n{out.stderr[-3000:]}')
    for line in out.stdout.splitlines():
      r = json.loads(line)
      rows.append(r)
      print(f'{r["visible_devices"]:>7} {r["mode"]:>8} '
            f'{r["examples_per_second"]:>8,.0f} '
            + ' '.join(f'{r["ms_per_step"][p]:>11.3f}' for p in PHASES)
            + f' {r["final_loss"]:>7.4f}', flush=True)
  if args.json:
    Path(args.json).write_text(json.dumps(rows, indent=2) + '\n')


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--devices', default='1,2,4',
                      type=lambda s: [int(x) for x in s.split(',')])
  parser.add_argument('--steps_per_call', type=int, default=50)
  parser.add_argument('--chunks', type=int, default=3)
  parser.add_argument('--real', action='store_true',
                      help='use the real devices (one run), not forced CPU ones')
  parser.add_argument('--json', help='also write the rows to this file')
  parser.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.real:
    args.devices = args.devices[:1]
  (_child if args.child else _parent)(args)


if __name__ == '__main__':
  main()
