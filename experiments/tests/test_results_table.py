"""experiments/results_table.py gathers per-seed `seqclf train` runs like a sweep."""

import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # experiments/
import results_table  # pylint: disable=g-import-not-at-top,wrong-import-position


def test_per_seed_runs_gather_into_sweep_keys(tmp_path, monkeypatch):
  monkeypatch.setattr(results_table, 'RUNS', tmp_path)
  monkeypatch.setattr(results_table, 'OUT', tmp_path / 'results.md')
  accs = [0.9918, 0.9927, 0.992]
  for k, acc in enumerate(accs):
    seed_dir = tmp_path / 'row_best' / f'seed{k}'
    seed_dir.mkdir(parents=True)
    (seed_dir / 'results.json').write_text(json.dumps({
        'test_accuracy': acc, 'test_loss': 0.03, 'val_accuracy': acc,
        'step': 10000, 'config': {'seed': k, 'batch_size': 100},
        'wall_seconds': 100.0 + k, 'train_examples_per_second': 3000.0 + k,
        'devices': ['cpu:0', 'cpu:1'], 'parallelism': 'pmap',
        'impl': 'kernel'}))
  text = results_table.write_table()
  gathered = json.loads((tmp_path / 'row_best' / 'results.json').read_text())
  assert gathered['test_accuracies'] == accs
  assert gathered['seeds'] == [0, 1, 2]
  assert abs(gathered['test_accuracy_mean'] - statistics.mean(accs)) < 1e-12
  assert abs(gathered['test_accuracy_std'] - statistics.stdev(accs)) < 1e-12
  assert gathered['wall_seconds'] == 303.0
  row = next(line for line in text.splitlines()
             if line.startswith('| row_best |'))
  assert '99.22 ± 0.05' in row and '(met)' in row
  assert '(pmap), ' in row and '`kernel`' in row  # The LSTM impl that ran.
  assert 'for K in 0 1 2; do seqclf train' in row and 'seed$K' in row
  # A config with a missing seed is not gathered: its row stays "not run".
  assert '| gru_row |' in text and 'not run yet' in text
