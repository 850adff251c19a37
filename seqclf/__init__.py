"""seqclf: recurrent sequence classifiers in JAX/Flax, trained fast.

The layers are imported from ``seqclf.nn`` on first use, not with the
package, so that the command line (``seqclf.cli``) holds its Ctrl-C handler
before Flax and JAX load.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
  from seqclf.nn import GRU, LSTM, RNN, Elman, LSTMCell, LSTMClassifier

__all__ = ['Elman', 'GRU', 'LSTM', 'LSTMCell', 'LSTMClassifier', 'RNN']
__version__ = '0.2.0'


def __getattr__(name: str) -> Any:
  """``seqclf.LSTM`` and the others from ``seqclf.nn``; ``seqclf.X`` the
  subpackage or module X."""
  if name in __all__:
    return getattr(importlib.import_module('seqclf.nn'), name)
  try:
    return importlib.import_module(f'{__name__}.{name}')
  except ModuleNotFoundError as e:
    if e.name != f'{__name__}.{name}':
      raise
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
