"""Muting absl logging (orbax's, tfds') where seqclf reports the problem itself.

Libraries log a failure (often with a traceback or a TensorStore spec) and
then raise it; where seqclf turns the raised error into one line, their log
records would only bury that line.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import sys
from collections.abc import Callable, Iterator

from absl import logging as absl_logging

from seqclf.errors import disk_full


@contextlib.contextmanager
def absl_silenced() -> Iterator[None]:
  """No absl log records inside the block (the previous level after it)."""
  logger = absl_logging.get_absl_logger()
  level = logger.level
  logger.setLevel(logging.CRITICAL + 1)
  try:
    yield
  finally:
    logger.setLevel(level)


def _from_orbax(unraisable: 'sys.UnraisableHookArgs') -> bool:
  """An abandoned orbax read coroutine, or TensorStore completing one of its
  reads into the event loop orbax already closed."""
  code = getattr(unraisable.object, 'cr_code', None)
  if code is not None:
    return '/orbax/' in code.co_filename
  return (isinstance(unraisable.exc_value, RuntimeError)
          and str(unraisable.exc_value) == 'Event loop is closed')


def drop_orbax_unraisable(previous: Callable[..., None]
                          ) -> Callable[..., None]:
  """A ``sys.unraisablehook`` that drops the errors of orbax's abandoned reads
  after a damaged checkpoint failed to restore (each coroutine's a TensorStore
  spec when it is collected; a closed event loop for each read that completes
  later) and passes the rest to ``previous``."""
  def hook(unraisable):
    if not _from_orbax(unraisable):
      previous(unraisable)
  return hook


def not_abandoned_read(record: logging.LogRecord) -> bool:
  """A logging filter for asyncio's logger: False for its "Task exception was
  never retrieved" of a TensorStore read that orbax abandoned when another
  read of the same damaged checkpoint failed first (logged, with a
  TensorStore spec, whenever the task is collected)."""
  error = record.exc_info[1] if record.exc_info else None
  return not ('exception was never retrieved' in str(record.msg)
              and 'tensorstore' in str(error).lower())


def drop_abandoned_reads() -> None:
  """For the process (the CLI): orbax's abandoned reads never say anything,
  whenever they are collected."""
  sys.unraisablehook = drop_orbax_unraisable(sys.unraisablehook)
  logging.getLogger('asyncio').addFilter(not_abandoned_read)


@contextlib.contextmanager
def abandoned_reads_silenced() -> Iterator[None]:
  """Inside the block, and for what it leaves to collect, orbax's abandoned
  reads say nothing: neither their coroutines (``drop_orbax_unraisable``)
  nor their tasks (``not_abandoned_read``)."""
  previous = sys.unraisablehook
  sys.unraisablehook = drop_orbax_unraisable(previous)
  asyncio_logger = logging.getLogger('asyncio')
  asyncio_logger.addFilter(not_abandoned_read)
  try:
    yield
  except BaseException:
    gc.collect()  # Only a failed read abandons others: collected silenced.
    raise
  finally:
    asyncio_logger.removeFilter(not_abandoned_read)
    sys.unraisablehook = previous


def not_disk_full(record: logging.LogRecord) -> bool:
  """A logging filter: False for orbax's own reports of a full disk (a
  traceback from each background thread), which
  ``seqclf.training.checkpoint``'s ``save`` and ``wait`` turn into one
  ``DiskFullError``; the CLI installs it on absl's logger."""
  return not (disk_full(record.exc_info[1]) if record.exc_info
              else 'No space left on device' in str(record.msg))


def not_unfinished_step(record: logging.LogRecord) -> bool:
  """A logging filter: False for orbax's warning that it removes a step
  directory a kill -9 left unfinished, which a resume expects (it never
  lists such a step); the CLI installs it on absl's logger."""
  return not str(record.msg).startswith(
      'Attempted to create temporary directory')
