"""Chooses the UEA/UCR configs' hyperparameters on validation, never on test.

  python experiments/timeseries_selection.py [--only basic_motions ...] [--seeds 3]
  python experiments/timeseries_selection.py --markdown_only   # rewrite the table

For each time-series config (``results_table.TIMESERIES``) a small grid of
candidates (``GRID``: a few model or schedule variants, each at a few peak
learning rates; the recipe the config had before selection among them) is
trained with ``seqclf.sweep`` (seeds and rates side by side in one vmapped
step) and scored by its mean validation accuracy over ``--seeds`` seeds, ties
broken by the lower mean validation loss. The test split is never loaded.

The carved validation splits are small (JapaneseVowels 54 series,
PickupGestureWiimoteZ 10, BasicMotions 8). BasicMotions and JapaneseVowels
(whose 54 were near 100% for every candidate) are scored by stratified k-fold
cross-validation over the official train split instead (``FOLDS``): every
train series is held out once, and a candidate's score for a seed is its
accuracy over all of them. PickupGestureWiimoteZ keeps its 10 (its long
series make k fits too slow for a 2-core CPU). Each fit standardizes with
the statistics of the series it trains on (``normalize``).
Writes ``experiments/results/timeseries_selection.json`` (every candidate's
figures, per config; ``--only`` replaces those configs' entries and keeps
the others') and the markdown table made from it beside it.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections
import numpy as np
import results_table

from seqclf import sweep
from seqclf.cli import common as cli_common
from seqclf.data import normalization, registry, splits as splits_lib, views
from seqclf.training import steps as steps_lib

OUT = results_table.REPO / 'experiments' / 'results' / 'timeseries_selection'

# config -> (peak learning rates, variants: values of the chosen keys).
# Candidates are every variant at every rate, the config file giving the
# other keys; the one its file held when the selection ran is marked. The
# variants are absolute, so the grid stays the same once a choice is shipped.
Grid = tuple[tuple[float, ...], tuple[dict[str, Any], ...]]
GRID: dict[str, Grid] = {
    'japanese_vowels': ((3e-3,), tuple(
        {'cell': cell, 'hidden_size': h, 'num_layers': layers,
         'dropout_rate': drop}
        for cell, h, layers, drop in (
            ('lstm', 64, 1, 0.0), ('gru', 64, 1, 0.0), ('lstm', 64, 2, 0.3),
            ('lstm', 128, 1, 0.0), ('lstm', 256, 1, 0.0)))),
    'basic_motions': ((1e-3,), tuple(
        {'cell': cell, 'hidden_size': h, 'num_train_steps': n}
        for cell, h, n in (
            ('lstm', 32, 300), ('gru', 32, 300), ('lstm', 64, 300),
            ('lstm', 32, 600), ('lstm', 128, 300), ('lstm', 64, 600)))),
    'pickup_gesture': ((3e-3, 1e-2), (
        {'num_layers': 2, 'dropout_rate': 0.2, 'hidden_size': 32},
        {'num_layers': 1, 'dropout_rate': 0.0, 'hidden_size': 32},
        {'num_layers': 2, 'dropout_rate': 0.2, 'hidden_size': 64},
    )),
}
# config -> k of the stratified k-fold cross-validation over the official
# train split (carved train + validation); absent: the carved validation.
FOLDS = {'basic_motions': 5, 'japanese_vowels': 5}


def pick(rows: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
  """The row of the highest ``val_accuracy_mean``, ties to the lowest
  ``val_loss_mean``; reads no other key (no test figure can sway it)."""
  return max(rows, key=lambda r: (r['val_accuracy_mean'], -r['val_loss_mean']))


def folds(labels: np.ndarray, k: int,
          seed: int = splits_lib.SPLIT_SEED) -> list[np.ndarray]:
  """``k`` disjoint index sets covering ``labels``, each class dealt round-robin
  over them in an order fixed by ``seed`` (so every fold holds each class)."""
  rng = np.random.default_rng(seed)
  fold_of = np.empty(len(labels), int)
  for c in np.unique(labels):
    members = rng.permutation(np.flatnonzero(labels == c))
    fold_of[members] = np.arange(len(members)) % k
  return [np.flatnonzero(fold_of == i) for i in range(k)]


def _take(split: splits_lib.Split, index: np.ndarray) -> splits_lib.Split:
  return {key: value[index] for key, value in split.items()}


def held_out_pairs(data: dict[str, splits_lib.Split], k: int | None
                   ) -> list[tuple[splits_lib.Split, splits_lib.Split]]:
  """(train, held-out) pairs: the carved split, or k folds of train + it."""
  if not k:
    return [(data['train'], data['validation'])]
  pool = {key: np.concatenate([data['train'][key], data['validation'][key]])
          for key in data['train']}
  parts = folds(pool['label'], k)
  return [(_take(pool, np.sort(np.concatenate(parts[:i] + parts[i + 1:]))),
           _take(pool, part)) for i, part in enumerate(parts)]


def score(config: ml_collections.ConfigDict, rates: Sequence[float],
          num_seeds: int, pairs: list[tuple[splits_lib.Split, splits_lib.Split]]
          ) -> dict[float, dict[str, Any]]:
  """Per rate: validation accuracy and loss of each seed over all held-out
  series (summed over the pairs), and the mean wall time of one pair."""
  seeds, model_rates = sweep.grid(config, num_seeds, rates)
  correct = loss = 0.0
  count, start = 0, time.perf_counter()
  for fit, held_out in pairs:
    # `normalize`'s statistics from the series this pair trains on.
    states, _ = sweep.train_models(normalization.fit(config, fit), seeds,
                                   model_rates, fit, quiet=True)
    metrics = steps_lib.evaluate(states, held_out, config.eval_batch_size,
                             stacked=True)
    correct = correct + np.asarray(metrics['accuracy']) * metrics['count']
    loss = loss + np.asarray(metrics['loss']) * metrics['count']
    count += metrics['count']
  seconds = (time.perf_counter() - start) / len(pairs)
  acc, loss, rates_arr = correct / count, loss / count, np.asarray(model_rates)
  return {rate: {'val_accuracies': acc[m].tolist(),
                 'val_accuracy_mean': float(acc[m].mean()),
                 'val_accuracy_std': float(np.std(acc[m], ddof=1)),
                 'val_loss_mean': float(loss[m].mean()),
                 'held_out': count, 'seconds_per_fit': seconds}
          for rate in dict.fromkeys(rates) for m in [rates_arr == rate]}


def select(name: str, num_seeds: int,
           previous: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """Every candidate of ``name``'s grid, scored, and the one picked.

  A candidate ``previous`` (this config's last selection, same seeds and
  folds) already scored is taken from it rather than trained again: the
  same values and seeds give the same figures."""
  base = cli_common.load_config_file(
      str(results_table.REPO / 'configs' / f'{name}.py'))
  rates, variants = GRID[name]
  # Never the test split; viewed as run_sweep views its data.
  data = views.view_splits(base,
                              registry.load(base, ('train', 'validation')))
  pairs = held_out_pairs(data, FOLDS.get(name))
  known = {}
  if previous and (previous.get('seeds'), previous.get('folds')) == (
      num_seeds, FOLDS.get(name)):
    known = {json.dumps(r['values'], sort_keys=True): r
             for r in previous['rows']}
  rows = []
  for values in variants:
    config = base.copy_and_resolve_references()
    config.update(values)
    keys = {rate: json.dumps({**values, 'learning_rate': rate},
                             sort_keys=True) for rate in rates}
    if all(k in known for k in keys.values()):
      for rate in rates:
        config.learning_rate = rate
        rows.append({**known[keys[rate]], 'recipe': results_table.recipe(
            config.to_dict()), 'shipped': all(
                base[k] == v for k, v in known[keys[rate]]['values'].items())})
      continue
    for rate, figures in score(config, rates, num_seeds, pairs).items():
      config.learning_rate = rate
      chosen_keys = {**values, 'learning_rate': rate}
      rows.append({'values': chosen_keys,
                   'recipe': results_table.recipe(config.to_dict()),
                   'shipped': all(base[k] == v for k, v in chosen_keys.items()),
                   **figures})
      print(f'{name} {rows[-1]["recipe"]}: val acc '
            f'{_pct(figures["val_accuracy_mean"])} ± '
            f'{_pct(figures["val_accuracy_std"])}, loss '
            f'{figures["val_loss_mean"]:.4f}', flush=True)
  best = pick(rows)
  return {'rows': rows, 'chosen': next(i for i, r in enumerate(rows)
                                       if r is best),
          'folds': FOLDS.get(name), 'held_out': rows[0]['held_out'],
          'seeds': num_seeds}


def _pct(x: float) -> str:
  return f'{100 * x:.2f}'


def markdown(selections: dict[str, dict[str, Any]]) -> str:
  lines = ['# Time-series hyperparameters, chosen on validation', '',
           'Generated by experiments/timeseries_selection.py (each section '
           'names its command). Each candidate: mean ± sample std over '
           'seeds of the validation accuracy (%), then the mean validation '
           'loss, which breaks ties. '
           'The test split is never loaded. Validation is small, so a '
           'difference of one series is several points: the choice is a '
           'rough one.', '']
  for name, s in selections.items():
    where = (f'{s["folds"]}-fold cross-validation over the official train '
             f'split ({s["held_out"]} series, each held out once)'
             if s['folds'] else
             f'the carved validation split ({s["held_out"]} series)')
    lines += [f'## {name}', '',
              f'`{s["command"]}`: scored on {where}, {s["seeds"]} seeds. '
              '"then in config": the candidate the config file held when '
              'this ran.',
              '', '| Candidate | Val. acc. % | Per seed | Val. loss '
              '| s per fit |', '|---|---|---|---|---|']
    for i, r in enumerate(s['rows']):
      mark = ' (then in config)' if r['shipped'] else ''
      mark += ' **chosen**' if i == s['chosen'] else ''
      lines.append(
          f'| {r["recipe"]}{mark} | '
          f'{_pct(r["val_accuracy_mean"])} ± {_pct(r["val_accuracy_std"])} | '
          f'{", ".join(_pct(a) for a in r["val_accuracies"])} | '
          f'{r["val_loss_mean"]:.4f} | {r["seconds_per_fit"]:.0f} |')
    chosen = s['rows'][s['chosen']]['values']
    lines += ['', f'Chosen: `{json.dumps(chosen)}`.', '']
  return '\n'.join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--only', nargs='*', choices=list(GRID),
                      default=list(GRID), help='configs to select for')
  parser.add_argument('--seeds', type=int, default=3)
  parser.add_argument('--markdown_only', action='store_true',
                      help='only rewrite the .md from the existing .json')
  args = parser.parse_args()
  command = 'python experiments/timeseries_selection.py' + (
      '' if args.only == list(GRID) else f' --only {" ".join(args.only)}') + (
      '' if args.seeds == 3 else f' --seeds {args.seeds}')
  path = OUT.with_suffix('.json')
  before = json.loads(path.read_text()) if path.exists() else {}
  selected = {name: {**select(name, args.seeds, before.get(name)),
                     'command': command}
              for name in ([] if args.markdown_only else args.only)}
  # Read once the selection is done: a run for other configs may have
  # written meanwhile.
  selections = json.loads(path.read_text()) if path.exists() else {}
  selections.update(selected)
  selections = {name: selections[name] for name in GRID if name in selections}
  OUT.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(selections, indent=2))
  OUT.with_suffix('.md').write_text(markdown(selections))
  print(f'Wrote {OUT.with_suffix(".md")}')


if __name__ == '__main__':
  main()
