"""Where training progress goes: terminal, TensorBoard and ``metrics.jsonl``.

A progress bar (tqdm) when stderr is a terminal, plain periodic lines
otherwise (CI, log files), so both people and tools can follow a run.
"""

from __future__ import annotations

import json
import os
import struct
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import tqdm


def _import_tensorboardx():
  """tensorboardX without the slow ``import torch`` it does where torch exists.

  It imports torch only to accept torch tensors, and seqclf logs floats; so
  torch is hidden for that one import unless something already loaded it.
  """
  hide = 'torch' not in sys.modules
  if hide:
    sys.modules['torch'] = None  # `import torch` raises ImportError
  try:
    import tensorboardX  # pylint: disable=g-import-not-at-top
  finally:
    if hide:
      del sys.modules['torch']
  return tensorboardX


tensorboardX = _import_tensorboardx()
from tensorboardX import event_file_writer  # pylint: disable=g-import-not-at-top,g-bad-import-order
from tensorboardX.proto import event_pb2, summary_pb2  # pylint: disable=g-import-not-at-top,g-bad-import-order


class ScalarWriter:
  """TensorBoard scalars written in the caller's thread: ``flush`` puts every
  scalar added so far on disk, so a kill -9 loses none before it.

  tensorboardX's ``SummaryWriter`` writes from a thread of its own, and its
  ``flush`` leaves the events still queued for it unwritten. Each writer
  opens a file of its own (named apart from another opened in the same
  second, which tensorboardX's names alone would overwrite).

  Args:
    logdir: the TensorBoard log directory.
    first_step: the step training starts (or resumes) from. The events past
      it already in ``logdir`` (and any test scalars) are dropped: the run
      logs those steps again, and TensorBoard would draw both.
  """

  def __init__(self, logdir: str | Path, first_step: int):
    os.makedirs(logdir, exist_ok=True)
    for path in Path(logdir).glob('events.out.tfevents.*'):
      if path.suffix == '.tmp':  # a rewrite a kill cut short
        path.unlink()
      else:
        _drop_events_after(path, first_step)
    self._events = event_file_writer.EventsWriter(
        os.path.join(logdir, 'events'), f'.{uuid.uuid4().hex[:8]}')

  def add_scalar(self, tag: str, value: float, step: int) -> None:
    """Writes ``value`` under ``tag`` as given: a NaN (a diverged step) or a
    class name with a space, without the warning line tensorboardX's
    ``summary.scalar`` prints for each."""
    self._events.write_event(event_pb2.Event(
        wall_time=time.time(), step=step,
        summary=summary_pb2.Summary(value=[summary_pb2.Summary.Value(
            tag=tag, simple_value=float(value))])))

  def flush(self) -> None:
    self._events.flush()

  def close(self) -> None:
    self._events.close()


class MetricLogger:
  """Writes scalars to TensorBoard and JSONL and reports progress."""

  def __init__(self, workdir: Path, total_steps: int, initial_step: int,
               quiet: bool = False, enabled: bool = True,
               class_names: tuple[str, ...] = ()):
    self.enabled = enabled
    self.class_names = class_names
    self.quiet = quiet or not enabled
    self.total_steps = total_steps
    self._bar = None
    if not enabled:
      return
    self._tb = ScalarWriter(workdir / 'tensorboard', initial_step)
    path = workdir / 'metrics.jsonl'
    _drop_records_after(path, initial_step)
    self._jsonl = open(path, 'a', encoding='utf-8')
    if not self.quiet and sys.stderr.isatty():
      self._bar = tqdm.tqdm(total=total_steps, initial=initial_step,
                            unit='step', dynamic_ncols=True)

  def write(self, step: int, kind: str, scalars: dict[str, Any]) -> None:
    """Logs ``scalars`` at ``step``: numbers, and per-class lists (TensorBoard
    ``KIND/NAME/CLASS``, by ``class_names`` where given); a ``confusion``
    matrix is left to ``results.json``."""
    if not self.enabled:
      return
    scalars = {k: v for k, v in scalars.items() if k != 'confusion'}
    for name, value in scalars.items():
      if isinstance(value, (list, tuple)):
        for c, v in enumerate(value):
          label = (self.class_names[c] if c < len(self.class_names)
                   else str(c))
          self._tb.add_scalar(f'{kind}/{name}/{label}', v, step)
      else:
        self._tb.add_scalar(f'{kind}/{name}', value, step)
    self._tb.flush()
    record = {'step': step, 'kind': kind, 'time': time.time(), **scalars}
    self._jsonl.write(json.dumps(record) + '\n')
    self._jsonl.flush()

  def progress(self, step: int, line: str, postfix: dict[str, Any]) -> None:
    """Reports one log point: bar update on a terminal, else a plain line."""
    if self.quiet:
      return
    if self._bar is not None:
      self._bar.update(step - self._bar.n)
      self._bar.set_postfix(postfix, refresh=False)
    else:
      print(line, flush=True)

  def message(self, line: str) -> None:
    if self.quiet:
      return
    (self._bar.write if self._bar is not None else print)(line)

  def close(self) -> None:
    if not self.enabled:
      return
    if self._bar is not None:
      self._bar.close()
    self._tb.close()
    self._jsonl.close()


def _drop_records_after(path: Path, step: int) -> None:
  """Forgets records past ``step``, and the test result: a resumed run logs
  those steps again, and its own result when it ends.

  Without this, a run killed after its last checkpoint would leave the
  re-trained steps twice in ``metrics.jsonl`` (and in its plots), and a
  finished run trained on would keep its old result beside the new one.
  """
  if not path.exists():
    return
  keep = []
  for line in path.read_text(encoding='utf-8').splitlines():
    try:
      record = json.loads(line)
      if record['step'] <= step and record.get('kind') != 'test':
        keep.append(line)
    except (ValueError, KeyError):
      pass  # A line cut short by a kill: drop it.
  tmp = path.with_name(path.name + '.tmp')
  tmp.write_text(''.join(f'{line}\n' for line in keep), encoding='utf-8')
  tmp.replace(path)


def event_records(data: bytes) -> Iterator[tuple[bytes, Any]]:
  """The records of an event file's bytes, each as its bytes and its
  ``Event``; a last record a kill cut short is left out. TFRecord framing:
  length (8 bytes), its CRC (4), the event, its CRC (4)."""
  pos = 0
  while pos + 12 <= len(data):
    (length,) = struct.unpack('<Q', data[pos:pos + 8])
    end = pos + 12 + length + 4
    if end > len(data):
      return
    yield data[pos:end], event_pb2.Event.FromString(data[pos + 12:end - 4])
    pos = end


def _drop_events_after(path: Path, step: int) -> None:
  """``_drop_records_after`` for one TensorBoard event file: rewrites it
  without the events past ``step`` and the ``test/`` scalars (and a record
  cut short by a kill), the kept records copied as they are.

  So TensorBoard, and any other reader of the files, sees each step once.
  """
  data = path.read_bytes()
  keep = [record for record, event in event_records(data)
          if event.step <= step and not any(v.tag.startswith('test/')
                                            for v in event.summary.value)]
  if sum(map(len, keep)) == len(data):
    return
  tmp = path.with_name(path.name + '.tmp')
  tmp.write_bytes(b''.join(keep))
  tmp.replace(path)
