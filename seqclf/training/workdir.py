"""One training run per workdir at a time: ``WORKDIR/train.lock``.

``train_and_evaluate`` holds the lock for the whole run. It is an exclusive
``fcntl.flock`` on the file, which also records the holder (pid, host, start
time) as JSON. The kernel drops a ``flock`` when its process dies, however it
dies, so a lock is never left held by a process that is gone: a file whose
lock is free but which still names a holder was left by a run that did not
finish (kill -9, a crash), and the next run takes it over with a note. A run
that ends (finished, preempted, failed) removes the file.

In a multi-process job only process 0 takes the lock, for the whole job: the
other processes of that job share it. ``flock`` on a network filesystem is
only as reliable as that filesystem's locking (NFSv4 supports it).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from seqclf.errors import WorkdirError

LOCK_NAME = 'train.lock'


def _holder(text: str) -> dict:
  try:
    holder = json.loads(text)
  except ValueError:
    return {}
  return holder if isinstance(holder, dict) else {}


def _describe(holder: dict) -> str:
  pid, host = holder.get('pid', '?'), holder.get('host', '?')
  started = holder.get('started')
  since = (f', since {time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started))}'
           if isinstance(started, (int, float)) else '')
  return f'pid {pid} on {host}{since}'


def refuse_sweep(workdir: str | Path) -> None:
  """A ``WorkdirError`` for a workdir a sweep wrote: a sweep's own
  (``sweep.json``), or a chosen model's (``results.json`` names the sweep),
  whose state no single run reaches (early stopping, ``--cv``)."""
  workdir = Path(workdir).expanduser()
  if (workdir / 'sweep.json').exists():
    raise WorkdirError(f'{workdir} holds a sweep (sweep.json): train in '
                       'another workdir.', arg='workdir')
  try:
    chosen = json.loads((workdir / 'results.json').read_text()).get(
        'chosen_by_sweep')
  except (OSError, ValueError, AttributeError):
    return
  if chosen:
    raise WorkdirError(
        f'{workdir} holds a model that the sweep in {chosen["workdir"]} '
        'chose, for evaluate, predict, export and report: train its setting '
        'in another workdir.', arg='workdir')


def refuse_run(workdir: str | Path) -> None:
  """A ``WorkdirError`` for a workdir that holds what a sweep would
  overwrite: a run of ``seqclf train`` or a saved model (``checkpoints/``,
  ``metrics.jsonl``), unless the sweep wrote them (``sweep.json``)."""
  workdir = Path(workdir).expanduser()
  if (workdir / 'sweep.json').exists():
    return
  held = [name for name in ('checkpoints', 'metrics.jsonl')
          if (workdir / name).exists()]
  if held:
    raise WorkdirError(f'{workdir} holds a training run or saved model '
                       f'({", ".join(held)}): sweep in another workdir.',
                       arg='workdir')


class WorkdirLock:
  """Context manager: holds ``WORKDIR/train.lock`` or raises ``WorkdirError``."""

  def __init__(self, workdir: str | Path, enabled: bool = True):
    self.path = Path(workdir) / LOCK_NAME
    self.enabled = enabled
    self._fd: int | None = None

  def acquire(self) -> None:
    while True:
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except OSError as e:
        text = os.pread(fd, 4096, 0).decode('utf-8', 'replace')
        os.close(fd)
        if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
          print(f'note: cannot lock {self.path} ({e.strerror}); nothing '
                'stops a second run on this workdir.', file=sys.stderr)
          return
        raise WorkdirError(
            f'{self.path.parent} is in use by another `seqclf train` '
            f'({_describe(_holder(text))}): wait for it to finish or stop '
            'it, or use another workdir.', arg='workdir') from e
      # The holder may have removed the file between our open and flock:
      # then the lock is on a file nobody else will open, so start again.
      try:
        same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
      except FileNotFoundError:
        same = False
      if same:
        break
      os.close(fd)
    previous = _holder(os.pread(fd, 4096, 0).decode('utf-8', 'replace'))
    if previous:
      print(f'note: taking over {self.path} from a run that did not finish '
            f'({_describe(previous)}; no longer running).', file=sys.stderr)
    me = {'pid': os.getpid(), 'host': socket.gethostname(),
          'started': time.time()}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(me) + '\n').encode(), 0)
    self._fd = fd

  def release(self) -> None:
    if self._fd is None:
      return
    try:
      self.path.unlink()  # While still locked: no one can hold a stale inode.
    except FileNotFoundError:
      pass
    os.close(self._fd)  # Drops the flock.
    self._fd = None

  def __enter__(self) -> WorkdirLock:
    if self.enabled:
      self.acquire()
    return self

  def __exit__(self, *exc) -> None:
    self.release()
