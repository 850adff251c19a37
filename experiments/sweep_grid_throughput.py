"""A grid sweep against the single runs it replaces, as a user runs both.

  python experiments/sweep_grid_throughput.py [--steps 1000] [--seeds 3] [--out runs/results/sweep_grid.json]

8 same-shape settings of the default job (learning_rate 5e-4, 1e-3, 2e-3,
4e-3 x grad_clip_norm 0, 1) x ``--seeds`` seeds: one ``seqclf sweep
--grid ...`` (one vmapped program) against the 8 x seeds ``seqclf train``
runs one after the other, each a fresh process as a user starts it. Both
sides get their own empty compilation cache and take the config's
``num_train_steps=--steps``; the sweep runs first, then the singles (run
``--order singles-first`` to check the order does not matter). Wall
seconds of each side and their ratio are printed (and written to ``--out``),
with the seconds each side spent in training calls and the bound they set:
the singles' wall time over their training seconds is the most a sweep that
trains no faster per example could gain.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GRID = {'learning_rate': ['5e-4', '1e-3', '2e-3', '4e-3'],
        'grad_clip_norm': ['0', '1']}


def _run(cmd: list[str]) -> float:
  t = time.perf_counter()
  subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL,
                 stderr=subprocess.PIPE)
  return time.perf_counter() - t


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--steps', type=int, default=1000)
  parser.add_argument('--seeds', type=int, default=3)
  parser.add_argument('--order', choices=('sweep-first', 'singles-first'),
                      default='sweep-first')
  parser.add_argument('--out', default=None, help='also write the JSON here')
  args = parser.parse_args()
  seqclf = [sys.executable, '-m', 'seqclf']
  common = ['--config=default', f'--config.num_train_steps={args.steps}',
            '--quiet']
  with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    sweep_cmd = [*seqclf, 'sweep', *common, f'--workdir={tmp / "sweep"}',
                 f'--seeds={args.seeds}',
                 f'--compilation_cache={tmp / "cache_sweep"}',
                 *[f'--grid={k}={",".join(v)}' for k, v in GRID.items()]]
    singles = [
        [*seqclf, 'train', *common, f'--workdir={tmp / f"single{n}"}',
         f'--compilation_cache={tmp / "cache_single"}', '--noreport',
         f'--config.learning_rate={lr}', f'--config.grad_clip_norm={clip}',
         f'--config.seed={seed}']
        for n, (lr, clip, seed) in enumerate(
            (lr, clip, seed) for lr in GRID['learning_rate']
            for clip in GRID['grad_clip_norm'] for seed in range(args.seeds))]
    times = {}
    for side in (('sweep', 'singles') if args.order == 'sweep-first'
                 else ('singles', 'sweep')):
      if side == 'sweep':
        times['sweep'] = _run(sweep_cmd)
      else:
        times['singles'] = sum(_run(cmd) for cmd in singles)
    swept = json.loads((tmp / 'sweep' / 'results.json').read_text())
    # Seconds spent in training calls (after compilation), each side.
    train_seconds = lambda paths: sum(
        json.loads(p.read_text())['train_seconds'] for p in paths)
    sweep_train = train_seconds((tmp / 'sweep' / 'units').glob('*/results.json'))
    singles_train = train_seconds(
        tmp / f'single{n}' / 'results.json' for n in range(len(singles)))
  result = {
      'settings': 8, 'seeds': args.seeds, 'models': 8 * args.seeds,
      'steps_per_model': args.steps, 'sweep_seconds': times['sweep'],
      'single_runs_seconds': times['singles'],
      'speedup': times['singles'] / times['sweep'],
      'sweep_train_seconds': sweep_train,
      'single_runs_train_seconds': singles_train,
      # What the sweep could reach at the singles' training speed with no
      # start-up, compilation, data loading or evaluation of its own.
      'speedup_bound': times['singles'] / singles_train,
      'sweep_groups': swept['num_groups'], 'order': args.order,
      'machine': swept['machine'],
      'command': ('python experiments/sweep_grid_throughput.py '
                  f'--steps {args.steps} --seeds {args.seeds} '
                  f'--order {args.order}'),
  }
  text = json.dumps(result, indent=2)
  print(text)
  if args.out:
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + '\n')


if __name__ == '__main__':
  main()
