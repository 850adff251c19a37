"""Turn SIGTERM/SIGINT into a clean stop at the next step boundary.

Schedulers preempt accelerator jobs with SIGTERM (and people press Ctrl-C).
Dying mid-step loses the work since the last checkpoint; instead the loop
finishes the current chunk, saves, and exits with ``EXIT_PREEMPTED`` so a
wrapper can tell "stopped, resume me" from "failed". A second signal means
"now": the process exits at once with ``128 + signum`` (130 for Ctrl-C), the
newest complete checkpoint as it was (orbax never lists a half-written one).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: temporary failure, run again to resume.


def exit_status(signum: int) -> int:
  """The shell's status for a process ended by ``signum`` (130 for SIGINT)."""
  return 128 + signum


def _name(signum: int) -> str:
  return 'Ctrl-C' if signum == signal.SIGINT else signal.Signals(signum).name


class Preempted(RuntimeError):
  """Training stopped on a signal after saving a checkpoint."""

  def __init__(self, signum: int, step: int | None, directory: str):
    """``step``: the step saved to ``directory``; None where the stop came
    between pieces of work (a sweep's units), all finished ones saved there."""
    self.step = step
    saved = (f'after saving step {step} to {directory}' if step is not None
             else f'with all finished work saved in {directory}')
    super().__init__(f'Stopped by {signal.Signals(signum).name} {saved}; '
                     'run the same command again to resume.')


class StopRequest:
  """Context manager recording SIGTERM/SIGINT instead of dying at once.

  The first signal is answered at once on stderr (the step the run stops
  after, ``stop_after``, which the training loop keeps current) and recorded
  in ``signum``; the loop stops at its next chunk boundary. A second one
  exits the process at once. Both are handled by a thread woken through
  ``signal.set_wakeup_fd``, which Python's C-level handler writes to as the
  signal arrives: the main thread may be inside a long XLA computation, where
  a Python handler would run only when it returns.

  Handlers are installed only in the main thread (Python's rule) and the
  previous ones (and wakeup fd) are restored on exit, so library users keep
  theirs.
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.signum: int | None = None
    self.stop_after: int | None = None  # step the running chunk ends at
    self._previous = {}
    self._previous_fd: int | None = None
    self._pipe: tuple[int, int] | None = None
    self._watcher: threading.Thread | None = None

  def _handle(self, signum: int, frame: FrameType | None) -> None:
    """The Python-level handler: only where no watcher thread runs."""
    del frame
    if self._watcher is None and self.signum is None:
      self.signum = signum

  def _on_signal(self, signum: int) -> None:
    if self.signum is None:
      self.signum = signum
      step = self.stop_after
      where = (f'after step {step}' if step is not None
               else 'after the first chunk of steps')
      print(f'\n{_name(signum)}: stopping {where} with a checkpoint; '
            f'{_name(signum)} again stops now.', file=sys.stderr, flush=True)
      return
    print(f'\n{_name(signum)} again: stopping now (exit status '
          f'{exit_status(signum)}); the newest complete checkpoint is kept.',
          file=sys.stderr, flush=True)
    os._exit(exit_status(signum))  # pylint: disable=protected-access

  def _watch(self, read_fd: int) -> None:
    while True:
      try:
        data = os.read(read_fd, 64)
      except OSError:
        return
      if not data:  # The write end was closed: the context has exited.
        return
      for signum in data:
        if signum in self.SIGNALS:
          self._on_signal(signum)

  def __enter__(self) -> StopRequest:
    if threading.current_thread() is threading.main_thread():
      read_fd, write_fd = os.pipe()
      os.set_blocking(write_fd, False)
      self._pipe = (read_fd, write_fd)
      self._previous_fd = signal.set_wakeup_fd(write_fd,
                                               warn_on_full_buffer=False)
      self._watcher = threading.Thread(target=self._watch, args=(read_fd,),
                                       name='seqclf-stop-request', daemon=True)
      self._watcher.start()
      for sig in self.SIGNALS:
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    if self._pipe is not None:
      signal.set_wakeup_fd(self._previous_fd)
      read_fd, write_fd = self._pipe
      os.close(write_fd)
      self._watcher.join(timeout=5)
      os.close(read_fd)
      self._pipe = self._watcher = None
