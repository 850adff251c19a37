"""The ``seqclf`` command line (``main``), one module per command, and the
report and plots a person looks at (``report``, ``plots``)."""

from __future__ import annotations

import signal

from seqclf.cli import interrupt


def run() -> None:
  """Console-script entry point: ``seqclf.cli.main.run``, imported here.

  A ``KeyboardInterrupt`` raised inside an extension module's import (JAX,
  NumPy) comes out as an ``ImportError``, or aborts the process, so while
  the command line loads, a Ctrl-C exits at once with one line; nothing has
  been written yet.
  """
  previous = interrupt.exit_at_once()
  from seqclf.cli import main  # pylint: disable=g-import-not-at-top
  if previous is not None:
    signal.signal(signal.SIGINT, previous)
  main.run()
