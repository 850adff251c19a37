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

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from seed_stats import mean_std  # pylint: disable=g-bad-import-order

REPO = Path(__file__).resolve().parents[1]
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
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--seeds', type=int, default=5)
  parser.add_argument('--out', default=str(REPO / 'runs' / 'imbalanced_mnist'))
  args = parser.parse_args()
  out = Path(args.out).resolve()
  npz = out / 'mnist_imbalanced.npz'
  counts = write_npz(npz)
  print(f'{npz}: training examples per class {counts}', flush=True)
  rows = {}
  for weight in WEIGHTS:
    runs = []
    for seed in range(args.seeds):
      workdir = out / weight / f'seed{seed}'
      subprocess.run(command(npz, weight, workdir, seed), check=True,
                     cwd=REPO)
      runs.append(json.loads((workdir / 'results.json').read_text()))
    rows[weight] = runs
  shown = ' '.join(command(Path('runs/imbalanced_mnist/mnist_imbalanced.npz'),
                           'WEIGHT', Path('runs/imbalanced_mnist/WEIGHT/seedK'),
                           0)[1:]).replace('--config.seed=0', '--config.seed=K')
  print('\n| class_weight | test balanced acc. % (best) | test macro-F1 % (best)'
        ' | test accuracy % (best) | test balanced acc. % (last step) | '
        'test macro-F1 % (last step) | best steps |')
  print('|---|---|---|---|---|---|---|')
  for weight, runs in rows.items():
    get = lambda key: [r[key] for r in runs]
    print(f'| `{weight}` | {mean_std(get("test_balanced_accuracy"))} | '
          f'{mean_std(get("test_macro_f1"))} | {mean_std(get("test_accuracy"))} | '
          f'{mean_std(get("last_test_balanced_accuracy"))} | '
          f'{mean_std(get("last_test_macro_f1"))} | '
          f'{", ".join(str(s) for s in get("best_step"))} |')
  print(f'\n{args.seeds} seeds (K = 0..{args.seeds - 1}), WEIGHT in '
        f'{", ".join(WEIGHTS)}: `python {shown}`')


if __name__ == '__main__':
  main()
