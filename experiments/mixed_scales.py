"""A user's series with mixed scales under ``--config default``.

  python experiments/mixed_scales.py [--seeds 5] [--out runs/mixed_scales]

Writes ``OUT/mixed_scales.npz``: 3,000 series of 40 steps x 4 channels,
labels 0/1/2 at 85/10/5%, channel 1 shifted by (label - 1) on every step,
channel 0 on a pressure-like scale (x 1,000, + 100,000), the rest noise.
It then trains ``--config default`` (MNIST's ``input_mean``/``input_std``)
for 300 steps with ``normalize='none'`` (what ``'auto'`` resolved to under
that config before it fitted per-channel statistics there too) and with the
default ``'auto'``, one ``seqclf train`` per seed (``OUT/NORMALIZE/seedK``,
resumable), and prints a markdown table of validation and test accuracy and
balanced accuracy (mean ± sample std over seeds).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import per_seed  # pylint: disable=g-bad-import-order

NORMALIZE = ('none', 'auto')


def write_npz(path: Path) -> None:
  rng = np.random.default_rng(0)
  n, steps, features = 3000, 40, 4
  y = rng.choice(3, n, p=[0.85, 0.10, 0.05])
  x = rng.normal(0.0, 1.0, (n, steps, features)).astype(np.float32)
  x[:, :, 1] += y[:, None] - 1.0
  x[:, :, 0] = x[:, :, 0] * 1000 + 1e5
  path.parent.mkdir(parents=True, exist_ok=True)
  np.savez(path, x=x, y=y)


def command(npz: Path, normalize: str, workdir: Path, seed: int) -> list[str]:
  return [sys.executable, '-m', 'seqclf', 'train', '--config', 'default',
          f'--config.dataset=npz:{npz}', '--config.num_classes=3',
          f'--config.normalize={normalize}', '--config.num_train_steps=300',
          '--config.eval_every=100', f'--config.seed={seed}',
          f'--workdir={workdir}', '--quiet', '--noreport']


def main(argv: list[str] | None = None) -> int:
  args = per_seed.arguments(__doc__, 'mixed_scales', argv)
  npz = args.out / 'mixed_scales.npz'
  write_npz(npz)
  runs = per_seed.train(NORMALIZE, args.seeds, args.out,
                        lambda normalize, workdir, seed: command(
                            npz, normalize, workdir, seed))
  rows = ['| normalize | val accuracy | test accuracy | test balanced accuracy |',
          '|---|---|---|---|']
  for normalize, results in runs.items():
    column = lambda split, key, results=results: per_seed.mean_std(
        [r[split][key] for r in results])
    rows.append(f'| {normalize} | {column("validation", "accuracy")} | '
                f'{column("test", "accuracy")} | '
                f'{column("test", "balanced_accuracy")} |')
  print('\n'.join(rows))
  return 0

if __name__ == '__main__':
  sys.exit(main())
