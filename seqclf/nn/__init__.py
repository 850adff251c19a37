"""seqclf's Flax linen layers: cells, recurrent layers, the classifier.

* ``cells``: one time step (``LSTMCell``, ``GRUCell``, ``ElmanCell``);
* ``recurrent``: ``RNN`` (any cell over time, by any recurrence path of
  ``seqclf.kernels``), and ``LSTM``, ``GRU``, ``Elman``;
* ``classifier``: ``LSTMClassifier``, whose fields are the model's config
  keys;
* ``conv``: ``ConvBranch``, LSTM-FCN's convolutional branch beside the
  recurrence (``conv_features``);
* ``initializers``: the initializers a config names;
* ``convert``: LSTM parameters to and from flax's LSTM cells (linen, NNX).

The same layers as Flax NNX modules: ``seqclf.nnx``.
"""

from seqclf.nn.cells import ElmanCell, GRUCell, LSTMCell
from seqclf.nn.classifier import LSTMClassifier
from seqclf.nn.recurrent import GRU, LSTM, RNN, Elman

__all__ = ['Elman', 'ElmanCell', 'GRU', 'GRUCell', 'LSTM', 'LSTMCell',
           'LSTMClassifier', 'RNN']
