"""How seqclf's recurrent layers run: the recurrences and the choice among them.

* ``reference``: the portable path (``impl='scan'``), ``nn.scan`` of any
  cell's step; what every other path is tested against.
* ``fast_lstm``: the LSTM recurrence with a hand-written backward pass
  (``impl='fused'``).
* ``lstm_kernel`` and ``csrc/lstm_kernel.cc``: the same recurrence as a
  compiled CPU kernel called through the XLA FFI (``impl='kernel'``).
* ``autotune``: which of them runs (``impl='auto'`` times the eligible ones
  once per machine and shape), for the trainer, the sweep and inference.

The layers that call them are in ``seqclf.models``. Importing this package, or
asking ``lstm_kernel.available()``, never compiles C++.
"""
