"""The best checkpoint of a run with a ``monitor``, and early stopping.

At each evaluation the monitored validation metric is compared with the best
so far; a strictly better score saves the state to ``checkpoints/best/STEP``
(its own orbax manager, ``checkpoint.manager(best=True)``), synchronously,
before any training checkpoint that names it. Every training checkpoint
carries the tracker's ``progress`` (best step, best score, evaluations since)
as a JSON item written atomically with the state, so a resumed run restores
the same best and patience counter as the one it continues and computes what
an uninterrupted run does.

``best/`` is pruned to the best steps the training checkpoints on disk name
and the current one: a step there is never deleted while a checkpoint a
resume could start from (the newest, or an older one past a damaged newest)
refers to it; once the newest ``max_to_keep`` checkpoints all name the same
best, it is the only one. Best steps a resume recomputes (after its
checkpoint's step) are deleted on resume, so they are saved again, bitwise
the same.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ml_collections

from seqclf.errors import CheckpointError
from seqclf.training import checkpoint, metrics


class Best:
  """Tracks ``config.monitor`` over a run's evaluations (a no-op for 'last')."""

  def __init__(self, workdir: Path, config: ml_collections.ConfigDict):
    self.enabled = config.monitor != 'last'
    self.monitor, self.patience = config.monitor, config.patience
    self.metric = config.monitor.removeprefix('val_')
    self.higher = metrics.MONITORED.get(self.metric, True)
    self.step: int | None = None
    self.score: float | None = None
    self.since = 0  # evaluations without improvement
    self.mngr = (checkpoint.manager(workdir, best=True) if self.enabled
                 else None)

  def resume(self, mngr: Any, step: int) -> None:
    """Takes the progress saved with training checkpoint ``step`` (0: a fresh
    start), deletes the best steps after it (the resumed run saves them
    again) and those no training checkpoint names."""
    if not self.enabled:
      return
    progress = checkpoint.saved_progress(mngr, step) if step else None
    if progress and progress.get('monitor') == self.monitor:
      self.step, self.score = progress['best_step'], progress['best_score']
      self.since = int(progress['evaluations_without_improvement'])
    keep = {s for s in self._named(mngr) if s <= step}
    checkpoint.prune(self.mngr, keep)
    if self.step is not None and self.step not in self.mngr.all_steps():
      raise CheckpointError(
          f'Checkpoint {mngr.directory}/{step} names best step {self.step}, '
          f'which {self.mngr.directory} lacks: restore it there, or use a '
          'fresh workdir.', arg='workdir')

  def _named(self, mngr: Any) -> set[int]:
    """The current best step and those the training checkpoints in
    ``mngr`` name (any a resume could start from, damage fallback too)."""
    named = {self.step} - {None}
    for step in mngr.all_steps():
      try:
        progress = checkpoint.saved_progress(mngr, step)
      except Exception:  # pylint: disable=broad-except
        continue  # being rotated away, or damaged: resumes skip it
      if progress and progress.get('best_step') is not None:
        named.add(int(progress['best_step']))
    return named

  def progress(self) -> dict[str, Any] | None:
    """The ``progress`` item of a training checkpoint (None: not tracking)."""
    if not self.enabled:
      return None
    return {'monitor': self.monitor, 'best_step': self.step,
            'best_score': self.score,
            'evaluations_without_improvement': self.since}

  def update(self, step: int, val: dict[str, Any], state: Any,
             config: ml_collections.ConfigDict) -> bool:
    """Scores evaluation ``val`` of ``state`` (at ``step``); saves a new best.

    Returns:
      Whether it is a new best.
    """
    if not self.enabled:
      return False
    score = float(val[self.metric])
    if not metrics.improved(score, self.score, self.higher):
      self.since += 1
      return False
    self.step, self.score, self.since = step, score, 0
    # Complete before any training checkpoint names it (kill -9).
    checkpoint.save(self.mngr, state, config)
    checkpoint.wait(self.mngr)
    return True

  @property
  def stop(self) -> bool:
    """Patience ran out: stop early."""
    return bool(self.enabled and self.patience
                and self.since >= self.patience)

  def saved(self, mngr: Any) -> None:
    """After a training checkpoint (naming ``self.step``) was saved: deletes
    the best steps no training checkpoint names any more."""
    if self.enabled and set(self.mngr.all_steps()) - {self.step}:
      checkpoint.prune(self.mngr, self._named(mngr))

  def restore(self, target: Any) -> Any:
    """The best state, restored into ``target``'s structure and layout."""
    return checkpoint.restore(self.mngr, target, self.step)[0]

  def note(self) -> str:
    """One line saying which checkpoint is the run's result."""
    return (f'best {self.monitor}={self.score:.4f} at step {self.step} '
            f'({self.mngr.directory}/{self.step})')

