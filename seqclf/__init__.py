"""seqclf: recurrent sequence classifiers in JAX/Flax, trained fast."""

from seqclf.models import LSTM, LSTMCell, LSTMClassifier

__all__ = ['LSTM', 'LSTMCell', 'LSTMClassifier']
__version__ = '0.1.0'
