"""seqclf's own error types: bad input that the message explains, not a bug.

The command line (``seqclf.cli``) turns each ``SeqclfError`` into one line
on stderr and exit status 2; any other exception is a bug and keeps its
traceback. So raise one of these only for a mistake the user can fix (a
config value, a missing or corrupt file, a foreign checkpoint, an unreadable
image, a workdir that cannot be written), with a message naming the fix in
the library's terms (argument names, config keys); ``arg`` names the
argument at fault, so the command line can add its flag.

Each subclass also derives from the built-in type it replaced, so code that
caught ``ValueError``, ``RuntimeError`` or ``OSError`` still catches it.
``seqclf.kernels.lstm_kernel.KernelError`` (the CPU kernel cannot be built
or run here) is one too.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path


class SeqclfError(Exception):
  """Bad input to seqclf; the message says what is wrong and how to fix it.

  Args:
    message: one line naming the problem and the fix, in API terms.
    arg: the argument or config key at fault, as the API names it
      (``'num_seeds'``, ``'workdir'``, ``'config.batch_size'``), or None.
  """

  def __init__(self, message: str = '', *, arg: str | None = None):
    super().__init__(message)
    self.arg = arg


class UsageError(SeqclfError, ValueError):
  """The command line (or an API call's arguments) is incomplete or contradictory."""


class ConfigError(SeqclfError, ValueError):
  """A config key or value is invalid; the message names it and the fix."""


class DataError(SeqclfError, RuntimeError):
  """Missing, corrupt or unexpected data; the message says how to fix it."""


class CheckpointError(SeqclfError, RuntimeError):
  """No checkpoint, or one that does not fit the model being restored."""


class ImageError(SeqclfError, ValueError):
  """An image to classify is missing or unreadable."""


class SequenceError(SeqclfError, ValueError):
  """A sequence file to classify is missing, unreadable or of the wrong shape."""


class WorkdirError(SeqclfError, OSError):
  """A run directory cannot be created or written, or lacks a finished run."""


class DiskFullError(WorkdirError):
  """No space left (or over quota) while writing a run's files."""


_FULL = (errno.ENOSPC, errno.EDQUOT)


def disk_full(error: BaseException) -> OSError | bool:
  """The disk-full ``OSError`` in ``error``'s chain (True if only its text
  says so: TensorStore reports ENOSPC in a message); False if none."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno in _FULL:
      return error
    if 'No space left on device' in str(error) or 'Disk quota exceeded' in str(error):
      return True
    error = error.__cause__ or error.__context__
  return False


def out_of_memory(error: BaseException) -> str | None:
  """XLA's report that a device ran out of memory (``RESOURCE_EXHAUSTED``)
  in ``error``'s chain, as its first line; None if there is none."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    for line in str(error).splitlines():
      if 'RESOURCE_EXHAUSTED' in line:
        return line.strip()
    error = error.__cause__ or error.__context__
  return None


def writable_dir(path: str | Path, arg: str = 'workdir') -> Path:
  """``path`` resolved and created if needed; ``WorkdirError`` unless writable.

  Args:
    path: the directory.
    arg: the argument that named it, for the error.

  Returns:
    The resolved path.
  """
  path = Path(path).expanduser().resolve()
  try:
    path.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise WorkdirError(f'Cannot create {path} ({e.strerror or e}): choose '
                       f'another {arg}.', arg=arg) from e
  if not os.access(path, os.W_OK):
    raise WorkdirError(f'{path} is not writable: choose another {arg}.',
                       arg=arg)
  return path
