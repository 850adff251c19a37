"""Kill -9 a training run at random moments, restart it, and check nothing is lost.

  python experiments/fault_injection.py [--cycles 20] [--seed 0] [--workdir DIR]

Trains a small config once uninterrupted, then again under repeated SIGKILLs at
random times (during start-up, steps, evaluation and checkpoint writes), each
followed by a restart with the same command. Prints a table: cycles, kills
that hit a checkpoint write, resumes, checkpoints lost or corrupt, and whether
the final params are bitwise equal to the uninterrupted run's.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from seqclf import checkpoint, train  # pylint: disable=g-import-not-at-top,wrong-import-position
from seqclf.config import base_config  # pylint: disable=g-import-not-at-top,wrong-import-position

# Long enough (compare --max_delay) that 20 random kills land in start-up,
# training steps, evaluation and checkpoint writes alike
# (docs/robustness.md).
OVERRIDES = {'hidden_size': 64, 'num_train_steps': 600, 'steps_per_call': 5,
             'checkpoint_every': 5, 'eval_every': 50, 'log_every': 5,
             'max_to_keep': 2}


def command(workdir: Path) -> list[str]:
  return [sys.executable, '-m', 'seqclf.main', 'train', '--config',
          str(REPO / 'configs/default.py'), '--workdir', str(workdir),
          '--noreport',
          *(f'--config.{k}={v}' for k, v in OVERRIDES.items())]


def final_state(workdir: Path):
  config = base_config()
  config.update(OVERRIDES)
  target = train.create_train_state(config, jax.random.key(0))
  state, _ = checkpoint.restore(checkpoint.manager(workdir, create=False),
                                target, OVERRIDES['num_train_steps'])
  return state


def writing_checkpoint(workdir: Path) -> bool:
  """True if a step directory is mid-write (orbax's temporary name)."""
  ckpts = workdir / 'checkpoints'
  return ckpts.exists() and any('tmp' in p.name for p in ckpts.iterdir())


def unreadable_steps(workdir: Path) -> tuple[int, int]:
  """(newest checkpoint unreadable: 0/1, older checkpoints unreadable).

  Only the newest counts as lost: orbax deletes superseded steps beyond
  ``max_to_keep`` in the background, so a kill can leave an old step half
  deleted; restore skips it (with a warning) and the next cleanup removes it.
  """
  ckpts = workdir / 'checkpoints'
  if not ckpts.exists():
    return 0, 0
  mngr = checkpoint.manager(workdir, create=False)
  config = base_config()
  config.update(OVERRIDES)
  target = train.create_train_state(config, jax.random.key(0))
  bad = []
  for step in mngr.all_steps():
    try:
      checkpoint.restore(mngr, target, step)
    except Exception:  # pylint: disable=broad-except
      bad.append(step)
  newest = mngr.latest_step()
  return int(newest in bad), len([s for s in bad if s != newest])


def run_cycles(workdir: Path, cycles: int, rng: random.Random,
               max_delay: float) -> dict[str, int]:
  stats = {'cycles': cycles, 'kills_during_checkpoint_write': 0,
           'kills_before_first_checkpoint': 0, 'resumes': 0,
           'checkpoints_lost_or_corrupt': 0,
           'superseded_checkpoints_half_deleted': 0,
           'finished_before_kill': 0}
  last_step = 0
  for _ in range(cycles):
    proc = subprocess.Popen(command(workdir), cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + rng.uniform(0.5, max_delay)
    hit_write = False
    while time.monotonic() < deadline and proc.poll() is None:
      hit_write |= writing_checkpoint(workdir)
      time.sleep(0.02)
    if proc.poll() is not None:
      stats['finished_before_kill'] += 1
    else:
      hit_write |= writing_checkpoint(workdir)
      proc.send_signal(signal.SIGKILL)
    output = proc.communicate()[0]
    stats['resumes'] += 'Resumed from' in output
    stats['kills_during_checkpoint_write'] += hit_write
    steps = checkpoint.manager(workdir, create=False).all_steps() if (
        workdir / 'checkpoints').exists() else []
    stats['kills_before_first_checkpoint'] += not steps
    newest = max(steps, default=0)
    if newest < last_step:
      stats['checkpoints_lost_or_corrupt'] += 1  # progress went backwards
    last_step = newest
    lost, half_deleted = unreadable_steps(workdir)
    stats['checkpoints_lost_or_corrupt'] += lost
    stats['superseded_checkpoints_half_deleted'] += half_deleted
  return stats


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--cycles', type=int, default=20)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--max_delay', type=float, default=12.0,
                      help='longest time before a kill, seconds')
  parser.add_argument('--workdir', type=Path, default=None)
  args = parser.parse_args()
  root = args.workdir or Path(tempfile.mkdtemp(prefix='fault_injection_'))
  reference, faulty = root / 'reference', root / 'faulty'
  for d in (reference, faulty):
    shutil.rmtree(d, ignore_errors=True)
  t = time.perf_counter()
  subprocess.run(command(reference), cwd=REPO, check=True)
  stats = run_cycles(faulty, args.cycles, random.Random(args.seed),
                     args.max_delay)
  final = subprocess.run(command(faulty), cwd=REPO, capture_output=True,
                         text=True)
  if final.returncode != 0:
    raise SystemExit(f'final restart failed:\n{final.stdout}{final.stderr}')
  a, b = final_state(reference), final_state(faulty)
  equal = all(np.array_equal(x, y) for x, y in zip(
      jax.tree.leaves((a.params, a.opt_state)),
      jax.tree.leaves((b.params, b.opt_state))))
  ra, rb = (json.loads((d / 'results.json').read_text())
            for d in (reference, faulty))
  stats['final_params_equal'] = 'yes' if equal else 'no'
  stats['results_equal'] = 'yes' if all(
      ra[k] == rb[k] for k in ('test_accuracy', 'val_accuracy')) else 'no'
  stats['test_accuracy'] = rb['test_accuracy']
  stats['seconds'] = round(time.perf_counter() - t, 1)
  width = max(map(len, stats))
  print('| measure | value |\n|---|---|')
  for key, value in stats.items():
    print(f'| {key:<{width}} | {value} |')
  (root / 'fault_injection.json').write_text(json.dumps(stats, indent=2))
  ok = (equal and stats['results_equal'] == 'yes'
        and stats['checkpoints_lost_or_corrupt'] == 0)
  sys.exit(0 if ok else 1)


if __name__ == '__main__':
  main()
