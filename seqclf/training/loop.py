"""What every training loop shares: chunk boundaries, the chunk runner, results.

A run is a sequence of chunks; each is one compiled call of ``train_steps``
(a ``lax.scan`` over its batches), so the host dispatches once per chunk.
``boundaries`` cuts the steps at absolute multiples of the intervals, and
``Chunks`` computes each chunk's batches from (seed, step) alone
(``order.train_indices``), so a run resumed at a boundary trains on
exactly the batches, in exactly the calls, of an uninterrupted one. The same
runner drives one model (``seqclf.train``) and a stack of them
(``seqclf.sweep``: one index array per seed). ``results`` and
``write_results`` make the part of ``results.json`` both share.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from seqclf.data import order

PyTree = Any
PHASES = ('indices', 'put_indices', 'to_run', 'compute', 'from_run')


def next_boundary(step: int, config: ml_collections.ConfigDict) -> int:
  """End of the chunk starting at ``step``: the next multiple of any interval.

  Boundaries are absolute, so a run resumed from a checkpoint (always taken
  at a boundary) splits the remaining steps exactly as an uninterrupted run.
  """
  periods = (config.steps_per_call, config.eval_every, config.checkpoint_every)
  nxt = min((step // p + 1) * p for p in periods)
  return min(nxt, config.num_train_steps)


def boundaries(step: int, config: ml_collections.ConfigDict
               ) -> Iterator[tuple[int, int]]:
  """``(start, end)`` of each chunk from ``step`` to ``num_train_steps``."""
  while step < config.num_train_steps:
    end = next_boundary(step, config)
    yield step, end
    step = end


def _same(tree: PyTree) -> PyTree:
  return tree


class Chunks:
  """Runs steps ``[step, end)`` of one model, or of a stack of models, in one call.

  ``fn(state, *args, indices)`` is the jitted chunk function (e.g.
  ``DataParallel.chunk_fn(train_steps)``) and ``args`` its arguments that
  stay the same every chunk (the device-resident training set). The batch
  indices are ``order.train_indices(seed, ...)``: for one ``seed``
  an array (steps, batch); for a sequence of seeds (a stacked state) one
  such array per model, stacked (models, steps, batch). ``put_indices``,
  ``to_run``, ``from_run`` and ``metrics`` place them and convert the state
  and metrics between the canonical layout and the one ``fn`` runs in
  (``seqclf.training.parallel.DataParallel``'s methods; identities by default, with
  ``metrics`` fetching to host numpy).

  Each chunk shape compiles once (``compile_seconds``); ``train_seconds``
  times the calls and the way back to the host, ``phase_seconds`` each part
  of a chunk (``PHASES``); ``examples`` counts the training examples seen by
  all models together.
  """

  def __init__(self, fn: Any, args: Sequence[Any], seed: int | Sequence[int],
               num_examples: int, batch_size: int, *,
               put_indices: Callable[[np.ndarray], Any] = _same,
               to_run: Callable[[PyTree], PyTree] = _same,
               from_run: Callable[[PyTree], PyTree] = _same,
               metrics: Callable[[PyTree], PyTree] = jax.device_get):
    self.fn, self.args = fn, tuple(args)
    self.seeds = seed if isinstance(seed, Sequence) else None
    self.seed = seed
    self.num_examples, self.batch_size = num_examples, batch_size
    self.put_indices, self.to_run = put_indices, to_run
    self.from_run, self.fetch_metrics = from_run, metrics
    self.num_models = 1 if self.seeds is None else len(self.seeds)
    self.compiled: dict[tuple[int, ...], Any] = {}
    self.compile_seconds = self.train_seconds = 0.0
    self.phase_seconds = dict.fromkeys(PHASES, 0.0)
    self.examples = 0

  def indices(self, step: int, num_steps: int) -> np.ndarray:
    """The host batch indices of steps ``[step, step + num_steps)``."""
    one = lambda seed: order.train_indices(
        seed, self.num_examples, self.batch_size, step, num_steps)
    if self.seeds is None:
      return one(self.seed)
    return np.stack([one(s) for s in self.seeds])

  def compile(self, state: PyTree, indices: Any) -> Any:
    """The compiled chunk function for placed ``indices``' shape (cached)."""
    if indices.shape not in self.compiled:
      t = time.perf_counter()
      self.compiled[indices.shape] = self.fn.lower(
          self.to_run(state), *self.args, indices).compile()
      self.compile_seconds += time.perf_counter() - t
    return self.compiled[indices.shape]

  def run(self, state: PyTree, indices: np.ndarray) -> tuple[PyTree, PyTree]:
    """Trains ``state`` on host ``indices``; returns it and host metrics."""
    marks = [time.perf_counter()]
    placed = self.put_indices(indices)
    marks.append(time.perf_counter())
    compiled = self.compile(state, placed)
    t = time.perf_counter()
    state = self.to_run(state)
    marks.append(time.perf_counter())
    state, metrics = compiled(state, *self.args, placed)
    jax.block_until_ready((state, metrics))
    marks.append(time.perf_counter())
    state, metrics = self.from_run(state), self.fetch_metrics(metrics)
    marks.append(time.perf_counter())
    self.train_seconds += marks[-1] - t
    for name, a, b in zip(PHASES[1:], marks, marks[1:]):
      self.phase_seconds[name] += b - a
    # Placed as the host indices are (the last axis): one per model's step.
    self.examples += int(np.prod(indices.shape))
    return state, metrics

  def __call__(self, state: PyTree, step: int,
               end: int) -> tuple[PyTree, PyTree]:
    """Trains steps ``[step, end)``; per-step metrics stacked on the steps axis."""
    t = time.perf_counter()
    indices = self.indices(step, end - step)
    self.phase_seconds['indices'] += time.perf_counter() - t
    return self.run(state, indices)

  @property
  def examples_per_second(self) -> float | None:
    """Training throughput over the chunks run so far (None before any)."""
    return self.examples / self.train_seconds if self.examples else None


def _whole(rows: list[Any]) -> list[list[Any]]:
  return [rows]


def _pieces(rows: list[Any]) -> list[list[Any]]:
  """``rows`` (one per step) cut where the batch's shape changes, each run
  into power-of-two lengths, largest first: few distinct call shapes."""
  out, start = [], 0
  while start < len(rows):
    end = start
    while end < len(rows) and rows[end][0].shape == rows[start][0].shape:
      end += 1
    while start < end:
      size = 1 << ((end - start).bit_length() - 1)
      out.append(rows[start:start + size])
      start += size
  return out


class StreamChunks(Chunks):
  """``Chunks`` whose batches are read from disk (``data_placement='stream'``).

  A background thread reads each chunk's batches with ``stream``
  (``seqclf.data.stream.TrainStream``: ``order.train_indices``' batches,
  this process's part of each) and places them on the devices with
  ``put_batches`` while the previous chunk trains. ``fn(state, *batches)``
  is the chunk function (``steps.train_steps_streamed`` under
  ``DataParallel.chunk_fn(streamed=True)``). ``bounds``: every chunk's
  ``(start, end)`` in the order they will be asked for (``boundaries``).
  The ``indices`` phase is the time spent waiting for data.
  """

  def __init__(self, fn: Any, stream: Any, put_batches: Callable[..., Any],
               bounds: Sequence[tuple[int, int]], seed: int,
               num_examples: int, batch_size: int, **kwargs: Any):
    super().__init__(fn, (), seed, num_examples, batch_size, **kwargs)
    # Bucketed batches differ in length: a chunk runs as calls of
    # consecutive steps of one length, each a power of two steps long.
    self.pieces = _pieces if getattr(stream, 'bucket', False) else _whole
    self.stream, self.put_batches = stream, put_batches
    self.bounds = list(bounds)
    self._ready: queue.Queue = queue.Queue(maxsize=1)
    self._closed = threading.Event()
    self._thread: threading.Thread | None = None
    self.examples_read = 0  # training examples this process read

  def _read(self) -> None:
    steps = None
    try:
      steps = self.stream.steps(self.bounds[0][0]) if self.bounds else None
      for start, end in self.bounds:
        rows = []
        for _ in range(end - start):
          if self._closed.is_set():
            return
          rows.append(next(steps))
        placed = []
        for piece in self.pieces(rows):
          if self._closed.is_set():
            return
          arrays = tuple(np.stack(col) for col in zip(*piece))
          self.examples_read += int(np.prod(arrays[0].shape[:2]))
          placed.append(self.put_batches(arrays))
        del rows, arrays
        if not self._offer((start, end, placed)):
          return
    except BaseException as e:  # pylint: disable=broad-except
      self._offer(e)  # Raised where the chunk is asked for.
    finally:
      if hasattr(steps, 'close'):  # grain's worker processes and buffers
        steps.close()

  def _offer(self, item: Any) -> bool:
    """Hands ``item`` to the trainer once it has taken the previous one;
    False if reading was stopped first (never blocks ``close``)."""
    while not self._closed.is_set():
      try:
        self._ready.put(item, timeout=0.1)
        return True
      except queue.Full:
        continue
    return False

  def close(self) -> None:
    """Stops reading ahead and waits for the reader to end at its next
    example: a reader still placing arrays on the devices while the
    interpreter exits (a run that stopped early, before its last chunk)
    aborts the process."""
    self._closed.set()
    if self._thread is not None:
      self._thread.join()

  def __call__(self, state: PyTree, step: int,
               end: int) -> tuple[PyTree, PyTree]:
    t = time.perf_counter()
    if self._thread is None:
      self._thread = threading.Thread(target=self._read, daemon=True,
                                      name='seqclf-stream')
      self._thread.start()
    item = self._ready.get()
    if isinstance(item, BaseException):
      raise item
    if item[:2] != (step, end):
      raise RuntimeError(f'streamed chunk {item[:2]} read for {(step, end)}')
    wait = time.perf_counter() - t  # Reading not hidden behind compute.
    self.phase_seconds['indices'] += wait
    self.train_seconds += wait
    parts = []
    for placed in item[2]:
      key = tuple(a.shape for a in placed)
      if key not in self.compiled:
        t = time.perf_counter()
        self.compiled[key] = self.fn.lower(self.to_run(state),
                                           *placed).compile()
        self.compile_seconds += time.perf_counter() - t
      marks = [time.perf_counter()]
      state = self.to_run(state)
      marks.append(time.perf_counter())
      state, metrics = self.compiled[key](state, *placed)
      jax.block_until_ready((state, metrics))
      marks.append(time.perf_counter())
      state, metrics = self.from_run(state), self.fetch_metrics(metrics)
      marks.append(time.perf_counter())
      parts.append(metrics)
      self.train_seconds += marks[-1] - marks[0]
      for name, a, b in zip(PHASES[2:], marks, marks[1:]):
        self.phase_seconds[name] += b - a
    self.examples += (end - step) * self.batch_size
    if len(parts) == 1:
      return state, parts[0]
    return state, jax.tree.map(lambda *m: np.concatenate(m), *parts)


def results(chunks: Chunks, config: ml_collections.ConfigDict, *, step: int,
            impl: str, wall_start: float) -> dict[str, Any]:
  """The ``results.json`` keys a single run and a sweep share."""
  return {
      'step': step,
      'train_examples_per_second': chunks.examples_per_second,
      'compile_seconds': chunks.compile_seconds,
      'train_seconds': chunks.train_seconds,
      'wall_seconds': time.perf_counter() - wall_start,
      'devices': [str(d) for d in jax.devices()],
      'impl': impl,
      'jax_version': jax.__version__,
      'config': config.to_dict(),
  }


def write_json(path: Path, data: dict[str, Any]) -> None:
  """Writes ``data`` atomically: a kill never leaves a half-written file."""
  tmp = path.with_name(path.name + '.tmp')
  tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + '\n')
  os.replace(tmp, path)


def write_results(workdir: Path, data: dict[str, Any]) -> None:
  """``workdir/results.json``, written by process 0 of a job only."""
  if jax.process_index() == 0:
    write_json(workdir / 'results.json', data)
