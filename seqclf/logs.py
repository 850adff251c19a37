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


@contextlib.contextmanager
def orbax_unraisable_silenced() -> Iterator[None]:
  """Inside the block, and for what it leaves to collect, orbax's abandoned
  coroutines are dropped silently (``drop_orbax_unraisable``)."""
  previous = sys.unraisablehook
  sys.unraisablehook = drop_orbax_unraisable(previous)
  try:
    yield
  finally:
    gc.collect()
    sys.unraisablehook = previous
