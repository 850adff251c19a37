"""The best checkpoint and early stopping on a run that overfits.

  python experiments/early_stopping.py [--seeds 5] [--out runs/early_stopping]

Writes ``OUT/mnist_small.npz`` from the prepared MNIST (``make setup``):
``x_train``/``y_train`` 3,000 examples of the training split (a fixed random
choice, 300 of each class), ``x_test``/``y_test`` the whole test split;
seqclf carves its validation split from the 3,000 (``validation_fraction``,
stratified). It then trains ``--config default`` far past where a training
set this small stops helping (``STEPS`` steps, an evaluation every
``EVERY``), one ``seqclf train`` per seed and setting (``OUT/NAME/seedK``,
resumable):

- ``last``: ``monitor='last'``, the run's last step served (as before
  ``monitor`` existed);
- ``best``: ``monitor='val_loss'``, the best checkpoint served, no early stop;
- ``early``: ``monitor='val_loss'`` with ``patience=PATIENCE``;
- ``early_accuracy``: ``monitor='val_accuracy'`` with ``patience=PATIENCE``.

It prints a markdown table of the served model's test accuracy and loss, the
steps trained, the best steps and each run's wall time (mean ± sample std over
seeds), the figures ``experiments/results.md`` keeps.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import per_seed  # pylint: disable=g-bad-import-order

PER_CLASS, STEPS, EVERY, PATIENCE = 300, 3000, 100, 5
SETTINGS = {'last': ['--config.monitor=last'],
            'best': ['--config.monitor=val_loss'],
            'early': ['--config.monitor=val_loss',
                      f'--config.patience={PATIENCE}'],
            'early_accuracy': ['--config.monitor=val_accuracy',
                               f'--config.patience={PATIENCE}']}


def write_npz(path: Path, data_dir: str | None = None) -> int:
  """The small npz at ``path``; returns its training examples."""
  from seqclf.data import prepared  # pylint: disable=g-import-not-at-top
  data = prepared.load_datasets(data_dir, ('train', 'test'))
  x, y = data['train']['image'], data['train']['label']
  rng = np.random.default_rng(0)
  keep = np.sort(np.concatenate([
      rng.choice(np.flatnonzero(y == c), PER_CLASS, replace=False)
      for c in range(10)]))
  path.parent.mkdir(parents=True, exist_ok=True)
  np.savez(path, x_train=x[keep], y_train=y[keep],
           x_test=data['test']['image'], y_test=data['test']['label'])
  return len(keep)


def command(npz: Path, name: str, workdir: Path, seed: int) -> list[str]:
  return [sys.executable, '-m', 'seqclf', 'train', '--config', 'default',
          f'--config.dataset=npz:{npz}', f'--config.num_train_steps={STEPS}',
          f'--config.eval_every={EVERY}', *SETTINGS[name],
          f'--config.seed={seed}', f'--workdir={workdir}', '--noreport',
          '--quiet']


def main() -> None:
  args = per_seed.arguments(__doc__, 'early_stopping')
  npz = args.out / 'mnist_small.npz'
  print(f'{npz}: {write_npz(npz)} training examples', flush=True)
  rows = per_seed.train(SETTINGS, args.seeds, args.out,
                        lambda name, workdir, seed: command(
                            npz, name, workdir, seed))
  shown = ' '.join(command(Path('runs/early_stopping/mnist_small.npz'), 'last',
                           Path('runs/early_stopping/NAME/seedK'), 0)[1:])
  print('\n| served | test accuracy % | test loss | steps trained | best steps '
        '| test accuracy % at the last step | wall s |')
  print('|---|---|---|---|---|---|---|')
  for name, runs in rows.items():
    get = lambda key, runs=runs: [r[key] for r in runs]
    best = ', '.join(str(s) for s in get('best_step')) if name != 'last' \
        else '–'
    last = (get('last_test_accuracy') if name != 'last'
            else get('test_accuracy'))
    stat = per_seed.mean_std
    print(f'| `{name}` | {stat(get("test_accuracy"))} | '
          f'{stat(get("test_loss"), 1, 3)} | {stat(get("step"), 1, 0)} | '
          f'{best} | {stat(last)} | {stat(get("wall_seconds"), 1, 1)} |')
  print(f'\n{args.seeds} seeds (K = 0..{args.seeds - 1}); `last`: `python '
        f'{shown.replace("--config.seed=0", "--config.seed=K")}`; '
        'the others replace `--config.monitor=last` by '
        + ', '.join(f'`{" ".join(SETTINGS[n])}`' for n in list(SETTINGS)[1:]))


if __name__ == '__main__':
  main()
