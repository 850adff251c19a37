"""Ctrl-C outside training, which ``seqclf.training.preemption.StopRequest``
answers: one line and the shell's status for it, not a traceback."""

from __future__ import annotations

import os
import signal
import sys

EXIT_CTRL_C = 128 + signal.SIGINT  # the shell's status for a Ctrl-C
_STOPPED = f'\nseqclf{{command}}: stopped by Ctrl-C (exit status {EXIT_CTRL_C}).'


def stopped(command: str | None = None) -> None:
  """Exits ``EXIT_CTRL_C`` with one line naming ``command`` (if known)."""
  print(_STOPPED.format(command=f' {command}' if command else ''),
        file=sys.stderr)
  sys.exit(EXIT_CTRL_C)


def _exit_at_once(signum: int, frame: object) -> None:
  """Unwinding a half-initialized extension module can crash: exit now."""
  del signum, frame
  print(_STOPPED.format(command=''), file=sys.stderr, flush=True)
  os._exit(EXIT_CTRL_C)  # pylint: disable=protected-access


def exit_at_once() -> signal.Handlers | None:
  """Makes Ctrl-C exit at once; returns the handler to put back (None where
  Ctrl-C is ignored, as in a background job: it stays ignored)."""
  if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    return None
  return signal.signal(signal.SIGINT, _exit_at_once)
