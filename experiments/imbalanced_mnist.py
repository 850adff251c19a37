"""Class weights on skewed labels: MNIST with classes 0-4 cut to 1%.

  python experiments/imbalanced_mnist.py [--seeds 5] [--out runs/imbalanced_mnist]

Writes ``OUT/mnist_imbalanced.npz`` from the prepared MNIST (``make setup``):
``x_train``/``y_train`` the 55,000-example training split with each of classes
0-4 cut to 1% of its examples (a fixed random choice), ``x_test``/``y_test``
the whole balanced test split; seqclf carves the validation split from the
(equally skewed) training examples (``validation_fraction``). It then trains
``--config default`` on it with ``class_weight='none'`` and ``'balanced'``,
both with ``monitor='val_balanced_accuracy'``, one ``seqclf train`` per seed
(``OUT/WEIGHT/seedK``, resumable), and prints a markdown table of the test
balanced accuracy and macro-F1 of the best checkpoint and of the last step
(mean ± sample std over seeds), the figures ``experiments/results.md``
keeps.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import per_seed  # pylint: disable=g-bad-import-order

RARE, KEEP = (0, 1, 2, 3, 4), 0.01
WEIGHTS = ('none', 'balanced')


def write_npz(path: Path, data_dir: str | None = None) -> dict[str, int]:
  """The skewed npz at ``path``; returns its training examples per class."""
  from seqclf.data import prepared  # pylint: disable=g-import-not-at-top
  data = prepared.load_datasets(data_dir, ('train', 'test'))
  x, y = data['train']['image'], data['train']['label']
  rng = np.random.default_rng(0)
  keep = np.ones(len(y), bool)
  for c in RARE:
    members = np.flatnonzero(y == c)
    n = max(1, round(KEEP * len(members)))
    keep[members] = False
    keep[rng.choice(members, n, replace=False)] = True
  path.parent.mkdir(parents=True, exist_ok=True)
  np.savez(path, x_train=x[keep], y_train=y[keep],
           x_test=data['test']['image'], y_test=data['test']['label'])
  return {int(c): int(n) for c, n in
          zip(*np.unique(y[keep], return_counts=True))}


def command(npz: Path, weight: str, workdir: Path, seed: int) -> list[str]:
  return [sys.executable, '-m', 'seqclf', 'train', '--config', 'default',
          f'--config.dataset=npz:{npz}', f'--config.class_weight={weight}',
          '--config.monitor=val_balanced_accuracy', f'--config.seed={seed}',
          f'--workdir={workdir}', '--noreport', '--quiet']


def main() -> None:
  args = per_seed.arguments(__doc__, 'imbalanced_mnist')
  npz = args.out / 'mnist_imbalanced.npz'
  counts = write_npz(npz)
  print(f'{npz}: training examples per class {counts}', flush=True)
  rows = per_seed.train(WEIGHTS, args.seeds, args.out,
                        lambda weight, workdir, seed: command(
                            npz, weight, workdir, seed))
  shown = ' '.join(command(Path('runs/imbalanced_mnist/mnist_imbalanced.npz'),
                           'WEIGHT', Path('runs/imbalanced_mnist/WEIGHT/seedK'),
                           0)[1:]).replace('--config.seed=0', '--config.seed=K')
  print('\n| class_weight | test balanced acc. % (best) | test macro-F1 % (best)'
        ' | test accuracy % (best) | test balanced acc. % (last step) | '
        'test macro-F1 % (last step) | best steps |')
  print('|---|---|---|---|---|---|---|')
  for weight, runs in rows.items():
    stat = lambda key, runs=runs: per_seed.mean_std([r[key] for r in runs])
    print(f'| `{weight}` | {stat("test_balanced_accuracy")} | '
          f'{stat("test_macro_f1")} | {stat("test_accuracy")} | '
          f'{stat("last_test_balanced_accuracy")} | '
          f'{stat("last_test_macro_f1")} | '
          f'{", ".join(str(r["best_step"]) for r in runs)} |')
  print(f'\n{args.seeds} seeds (K = 0..{args.seeds - 1}), WEIGHT in '
        f'{", ".join(WEIGHTS)}: `python {shown}`')


if __name__ == '__main__':
  main()
