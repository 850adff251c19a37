"""The recurrences: how a recurrent layer's time loop runs (``impl``).

* ``reference``: the portable path (``impl='scan'``), ``nn.scan`` of any
  cell's step; what every other path is tested against.
* ``fast_lstm``: the LSTM recurrence with a hand-written backward pass
  (``impl='fused'``).
* ``lstm_kernel`` and ``csrc/lstm_kernel.cc``: the same recurrence as a
  compiled CPU kernel called through the XLA FFI (``impl='kernel'``).
* ``gpu_lstm`` and ``gpu_lstm_pallas``: the same recurrence as two Pallas
  kernels for the GPU with the time loop inside (``impl='gpu'``).
* ``paths``: which of them can run a given layer on a given backend, each
  path's limits stated once.

These modules are leaves: they import nothing of seqclf but its errors. The
layers that call them are in ``seqclf.nn``; which path ``impl='auto'`` runs
is timed by ``seqclf.training.autotune``. Importing this package, or asking
``lstm_kernel.available()``, never compiles C++.
"""
