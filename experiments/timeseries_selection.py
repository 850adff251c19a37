"""Chooses the UEA/UCR configs' hyperparameters on validation with `seqclf sweep`.

  python experiments/timeseries_selection.py [--only basic_motions ...] [--seeds 3]

For each time-series config a grid (``GRIDS``) runs as ``seqclf.sweep`` runs
it: scored by mean validation accuracy over seeds (ties: lower validation
loss), never by test; JapaneseVowels and BasicMotions, whose carved
validation splits (54 and 8 series) are near 100% for every candidate, by
stratified 5-fold cross-validation over their training split (``--cv 5``).
Each sweep's table goes to ``runs/selection/NAME/results.md``; the tables
are gathered in ``experiments/results/timeseries_selection.md``. Each is the
same as the command printed beside it.
"""

from __future__ import annotations

import argparse

import results_table

from seqclf import sweep
from seqclf.cli import common as cli_common

OUT = results_table.REPO / 'experiments' / 'results' / 'timeseries_selection'
# config -> (grid, folds of cross-validation; 0: the carved validation split).
GRIDS = {
    'japanese_vowels': ({'bidirectional': [False, True],
                         'hidden_size': [64, 128]}, 5),
    'basic_motions': ({'num_layers': [1, 2], 'hidden_size': [64, 128]}, 5),
    'pickup_gesture': ({'hidden_size': [32, 64], 'num_layers': [1, 2],
                        'learning_rate': [3e-3, 1e-2]}, 0),
}


def command(name: str, seeds: int) -> str:
  grid, cv = GRIDS[name]
  flags = ' '.join(f'--grid {k}={",".join(map(str, v))}'
                   for k, v in grid.items())
  return (f'seqclf sweep --config {name} --workdir runs/selection/{name} '
          f'--seeds {seeds} {flags}' + (f' --cv {cv}' if cv else ''))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--only', nargs='*', choices=list(GRIDS),
                      default=list(GRIDS))
  parser.add_argument('--seeds', type=int, default=3)
  args = parser.parse_args()
  sections = ['# Time-series hyperparameters, chosen on validation', '']
  for name in args.only:
    grid, cv = GRIDS[name]
    config = cli_common.load_config_file(name)
    results = sweep.run_sweep(
        config, results_table.REPO / 'runs' / 'selection' / name, args.seeds,
        grid=grid, cv=cv)
    sections += [f'## {name}', '', f'`{command(name, args.seeds)}`', '',
                 results['table'], f'Chosen: `{results["chosen"]}`.', '']
  OUT.parent.mkdir(parents=True, exist_ok=True)
  OUT.with_suffix('.md').write_text('\n'.join(sections))
  print(f'Wrote {OUT.with_suffix(".md")}')


if __name__ == '__main__':
  main()
