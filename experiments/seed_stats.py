"""Per-seed figures as the experiments' tables print them."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def mean_std(values: Sequence[float], scale: float = 100.0,
             digits: int = 2) -> str:
  """``mean ± sample std`` of ``values`` times ``scale`` (default: fractions
  as percent); one value has no spread, shown as 0."""
  values = [scale * v for v in values]
  std = statistics.stdev(values) if len(values) > 1 else 0.0
  return f'{statistics.mean(values):.{digits}f} ± {std:.{digits}f}'
