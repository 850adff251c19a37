"""seqclf's layers as native Flax NNX modules.

Import it as ``from seqclf import nnx as seqnnx`` (beside ``flax.nnx``):

* ``recurrent``: ``LSTM``, ``GRU``, ``Elman``, called as ``nnx.RNN``;
* ``classifier``: ``LSTMClassifier``, the linen classifier's options;
* ``params``: ``to_linen_params`` and ``from_linen_params``, between an NNX
  module's ``nnx.Param`` state and the linen params dict (the same tree).

Each holds its linen twin's parameters in the linen layout and runs its
``apply`` (``seqclf.nnx.params``), so both APIs run one implementation of
every path and agree bitwise.
"""

from seqclf.nnx.classifier import LSTMClassifier
from seqclf.nnx.params import from_linen_params, to_linen_params
from seqclf.nnx.recurrent import GRU, LSTM, Elman

__all__ = ['Elman', 'GRU', 'LSTM', 'LSTMClassifier', 'from_linen_params',
           'to_linen_params']
