"""seqclf: recurrent sequence classifiers in JAX/Flax, trained fast."""

from seqclf.nn import GRU, LSTM, RNN, Elman, LSTMCell, LSTMClassifier

__all__ = ['Elman', 'GRU', 'LSTM', 'LSTMCell', 'LSTMClassifier', 'RNN']
__version__ = '0.2.0'
