"""What the per-seed experiments share: their arguments, one `seqclf train`
per setting and seed, and their tables' ``mean ± std``."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def arguments(doc: str, name: str,
              argv: Sequence[str] | None = None) -> argparse.Namespace:
  """``--seeds`` (default 5) and ``--out`` (default ``runs/NAME``, resolved)."""
  parser = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
  parser.add_argument('--seeds', type=int, default=5)
  parser.add_argument('--out', type=Path, default=REPO / 'runs' / name)
  args = parser.parse_args(argv)
  args.out = args.out.resolve()
  return args


def train(settings: Iterable[str], seeds: int, out: Path,
          command: Callable[[str, Path, int], list[str]]
          ) -> dict[str, list[dict[str, Any]]]:
  """Runs ``command(setting, OUT/SETTING/seedK, K)`` for every setting and
  seed K < ``seeds`` (a finished `seqclf train` run is read, not trained
  again) and returns each setting's ``results.json`` by seed."""
  runs = {}
  for setting in settings:
    runs[setting] = []
    for seed in range(seeds):
      workdir = out / setting / f'seed{seed}'
      subprocess.run(command(setting, workdir, seed), check=True, cwd=REPO)
      runs[setting].append(json.loads((workdir / 'results.json').read_text()))
  return runs


def mean_std(values: Sequence[float], scale: float = 100.0,
             digits: int = 2) -> str:
  """``mean ± sample std`` of ``values`` times ``scale`` (default: fractions
  as percent); one value has no spread, shown as 0."""
  values = [scale * v for v in values]
  std = statistics.stdev(values) if len(values) > 1 else 0.0
  return f'{statistics.mean(values):.{digits}f} ± {std:.{digits}f}'
