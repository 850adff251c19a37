"""Kill -9 a training run at random moments, restart it, and check nothing is lost.

  python experiments/fault_injection.py [--cycles 20] [--seed 0] [--workdir DIR]

Trains a small config once uninterrupted, then again under repeated SIGKILLs at
random times (during start-up, steps, evaluation and checkpoint writes), each
followed by a restart with the same command. A third of the cycles first
damage the newest checkpoint (the restart moves it aside and trains that step
again, and may be killed while it does); a third start a second run on the
same workdir (one of the two must refuse). Prints a table: cycles, kills that
hit a checkpoint write, resumes, recoveries, refusals, checkpoints lost or
corrupt, and whether the final params are bitwise equal to the uninterrupted
run's.
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
from collections.abc import Collection
from pathlib import Path

import jax
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from seqclf.config import base_config  # pylint: disable=g-import-not-at-top,wrong-import-position
from seqclf.training import checkpoint, state as state_lib

# Long enough (compare --max_delay) that 20 random kills land in start-up,
# training steps, evaluation and checkpoint writes alike
# (docs/robustness.md).
OVERRIDES = {'hidden_size': 64, 'num_train_steps': 600, 'steps_per_call': 5,
             'checkpoint_every': 5, 'eval_every': 50, 'log_every': 5,
             'max_to_keep': 2}


def command(workdir: Path, **overrides) -> list[str]:
  """The run's command line: OVERRIDES, then ``overrides``."""
  return [sys.executable, '-m', 'seqclf', 'train', '--config',
          str(REPO / 'configs/default.py'), '--workdir', str(workdir),
          '--noreport', *(f'--config.{k}={v}'
                          for k, v in {**OVERRIDES, **overrides}.items())]


def reference_command(workdir: Path) -> list[str]:
  """The uninterrupted run: the same training (the chunks follow log_every
  and eval_every), saving only its final step."""
  return command(workdir, checkpoint_every=OVERRIDES['num_train_steps'])


def final_state(workdir: Path):
  config = base_config()
  config.update(OVERRIDES)
  target = state_lib.create_train_state(config, jax.random.key(0))
  state, _ = checkpoint.restore(checkpoint.manager(workdir, create=False),
                                target, OVERRIDES['num_train_steps'])
  return state


def writing_checkpoint(workdir: Path) -> bool:
  """True if a step directory is mid-write (orbax's temporary name)."""
  ckpts = workdir / 'checkpoints'
  return ckpts.exists() and any('tmp' in p.name for p in ckpts.iterdir())


def unreadable_steps(workdir: Path,
                     pending: Collection[int] = ()) -> tuple[int, int]:
  """(newest checkpoint unreadable: 0/1, older checkpoints unreadable),
  ignoring the steps in ``pending`` (damaged on purpose, not yet recovered).

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
  target = state_lib.create_train_state(config, jax.random.key(0))
  bad = []
  steps = [s for s in mngr.all_steps() if s not in pending]
  for step in steps:
    try:
      checkpoint.restore(mngr, target, step)
    except Exception:  # pylint: disable=broad-except
      bad.append(step)
  newest = max(steps, default=None)
  return int(newest in bad), len([s for s in bad if s != newest])


def damage_newest(workdir: Path, rng: random.Random) -> int | None:
  """Damages the newest checkpoint as a bad disk or a careless rm would
  (truncated array files, or its config deleted); None when there is no
  older one to fall back to. Returns the damaged step."""
  ckpts = workdir / 'checkpoints'
  steps = checkpoint.manager(workdir, create=False).all_steps() if (
      ckpts.exists()) else []
  if len(steps) < 2:
    return None
  newest = max(steps)
  if rng.random() < 0.5:
    for f in (ckpts / str(newest) / 'state').rglob('*'):
      if f.is_file() and f.parent.name == 'd':
        f.write_bytes(f.read_bytes()[:7])
  else:
    (ckpts / str(newest) / 'config' / 'metadata').unlink(missing_ok=True)
  return newest


def moved_aside(workdir: Path, step: int) -> int:
  """How many copies of ``step`` recovery has moved to checkpoints/damaged/."""
  aside = workdir / 'checkpoints' / checkpoint.DAMAGED_DIR
  return len([p for p in aside.glob(f'{step}*')
              if p.name.split('.')[0] == str(step)]) if aside.exists() else 0


def _run_one(workdir: Path, rng: random.Random, max_delay: float,
             competitor: bool) -> tuple[str, str | None, bool]:
  """Starts a run (and with ``competitor`` a second one on the same workdir
  soon after), SIGKILLs whatever still runs at a random moment. Returns the
  outputs and whether a kill hit a checkpoint write."""
  procs = [subprocess.Popen(command(workdir), cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)]
  start = time.monotonic()
  deadline = start + rng.uniform(0.5, max_delay)
  second_at = start + rng.uniform(0.0, 3.0) if competitor else None
  hit_write = False
  while time.monotonic() < deadline and any(p.poll() is None for p in procs):
    if second_at is not None and time.monotonic() >= second_at:
      procs.append(subprocess.Popen(command(workdir), cwd=REPO,
                                    stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True))
      second_at = None
    hit_write |= writing_checkpoint(workdir)
    time.sleep(0.02)
  for p in procs:
    if p.poll() is None:
      hit_write |= writing_checkpoint(workdir)
      p.send_signal(signal.SIGKILL)
  outputs = [p.communicate()[0] for p in procs]
  return outputs[0], (outputs[1] if len(outputs) > 1 else None), hit_write


def run_cycles(workdir: Path, cycles: int, rng: random.Random,
               max_delay: float) -> dict[str, int]:
  """Kill cycles; a third of them first damage the newest checkpoint (the
  restart must recover, and may itself be killed while it does), a third
  start a second run on the same workdir (one of them must refuse)."""
  stats = {'cycles': cycles, 'kills_during_checkpoint_write': 0,
           'kills_before_first_checkpoint': 0, 'resumes': 0,
           'checkpoints_lost_or_corrupt': 0,
           'superseded_checkpoints_half_deleted': 0,
           'finished_before_kill': 0,
           'newest_checkpoint_damaged_on_purpose': 0,
           'damaged_checkpoints_moved_aside': 0,
           'restarts_killed_before_recovering': 0,
           'second_run_started': 0, 'second_run_refused': 0,
           'two_runs_trained_at_once': 0}
  last_step = 0
  # Damaged on purpose, not yet recovered: step -> how many of its copies
  # checkpoints/damaged/ held before (recovery moves one more there).
  pending: dict[int, int] = {}
  for _ in range(cycles):
    kind = rng.choice(['kill', 'damage', 'competitor'])
    if kind == 'damage' and not pending:
      damaged = damage_newest(workdir, rng)
      if damaged is not None:
        pending[damaged] = moved_aside(workdir, damaged)
        stats['newest_checkpoint_damaged_on_purpose'] += 1
        steps = checkpoint.manager(workdir, create=False).all_steps()
        last_step = max(s for s in steps if s != damaged)
    output, second, hit_write = _run_one(workdir, rng, max_delay,
                                         kind == 'competitor')
    finished = 'Test accuracy' in output
    if second is not None:
      stats['second_run_started'] += 1
      refused = [o for o in (output, second) if 'is in use by another' in o]
      stats['second_run_refused'] += bool(refused)
      trained = [o for o in (output, second) if '\nstep ' in '\n' + o]
      took_over = any('taking over' in o for o in (output, second))
      stats['two_runs_trained_at_once'] += (len(trained) == 2
                                            and not refused and not took_over)
      finished |= 'Test accuracy' in second
      output += second
    stats['finished_before_kill'] += finished
    if kind == 'damage' and pending and 'moved to ' not in output:
      stats['restarts_killed_before_recovering'] += 1
    stats['resumes'] += 'Resumed from' in output
    stats['damaged_checkpoints_moved_aside'] += output.count('moved to ')
    stats['kills_during_checkpoint_write'] += hit_write
    ckpts = workdir / 'checkpoints'
    steps = checkpoint.manager(workdir, create=False).all_steps() if (
        ckpts.exists()) else []
    pending = {s: n for s, n in pending.items()
               if (ckpts / str(s)).exists() and moved_aside(workdir, s) == n}
    stats['kills_before_first_checkpoint'] += not steps
    newest = max((s for s in steps if s not in pending), default=0)
    if newest < last_step:
      stats['checkpoints_lost_or_corrupt'] += 1  # progress went backwards
    last_step = newest
    lost, half_deleted = unreadable_steps(workdir, pending)
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
  subprocess.run(reference_command(reference), cwd=REPO, check=True)
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
        and stats['checkpoints_lost_or_corrupt'] == 0
        and stats['two_runs_trained_at_once'] == 0)
  sys.exit(0 if ok else 1)


if __name__ == '__main__':
  main()
