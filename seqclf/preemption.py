"""Turn SIGTERM/SIGINT into a clean stop at the next step boundary.

Schedulers preempt accelerator jobs with SIGTERM (and people press Ctrl-C).
Dying mid-step loses the work since the last checkpoint; instead the loop
finishes the current chunk, saves, and exits with ``EXIT_PREEMPTED`` so a
wrapper can tell "stopped, resume me" from "failed".
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: temporary failure, run again to resume.


class Preempted(RuntimeError):
  """Training stopped on a signal after saving a checkpoint."""

  def __init__(self, signum: int, step: int, directory: str):
    self.step = step
    super().__init__(
        f'Stopped by {signal.Signals(signum).name} after saving step {step} '
        f'to {directory}; run the same command again to resume.')


class StopRequest:
  """Context manager recording SIGTERM/SIGINT instead of dying at once.

  Handlers are installed only in the main thread (Python's rule) and the
  previous ones are restored on exit, so library users keep theirs.
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.signum: int | None = None
    self._previous = {}

  def _handle(self, signum: int, frame: FrameType | None) -> None:
    del frame
    self.signum = signum

  def __enter__(self) -> StopRequest:
    if threading.current_thread() is threading.main_thread():
      for sig in self.SIGNALS:
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
