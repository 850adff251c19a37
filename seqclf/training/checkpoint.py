"""Orbax checkpoints: resume a run, or restore a model for inference.

Each checkpoint step holds two items: ``state`` (the TrainState pytree: step,
params, optimizer state) and ``config`` (JSON). Orbax writes each step into a
temporary directory and renames it when complete, so a half-written step is
never listed. The data position needs no saving: batches are a pure function
of (seed, step).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from flax import traverse_util

from seqclf import errors
from seqclf.errors import CheckpointError
from seqclf.logs import abandoned_reads_silenced, absl_silenced
from seqclf.nn import classifier

DAMAGED_DIR = 'damaged'  # checkpoints/damaged/STEP: steps moved aside
BEST_DIR = 'best'  # checkpoints/best/STEP: the best-scoring step (`monitor`)


def checkpoint_dir(workdir: str | Path) -> Path:
  return Path(workdir).expanduser().resolve() / 'checkpoints'


def manager(workdir: str | Path, max_to_keep: int | None = None,
            create: bool = True,
            process_local: bool = False, *,
            best: bool = False) -> ocp.CheckpointManager:
  """``process_local``: this process reads alone (inference in a multi-process
  job); otherwise every process must make the same calls (orbax syncs them).
  ``best``: the manager of ``checkpoints/best/`` (the best-scoring step of a
  run with a ``monitor``; its own manager, so the training manager's
  rotation never sees it and it never deletes a newer step, as orbax's
  ``best_fn`` can: orbax issue 526)."""
  directory = checkpoint_dir(workdir)
  if best:
    directory, max_to_keep = directory / BEST_DIR, None  # pruned by train
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                         create=create)
  if process_local:
    me = jax.process_index()
    options.multiprocessing_options = ocp.options.MultiprocessingOptions(
        primary_host=me, active_processes={me})
  return ocp.CheckpointManager(
      directory, options=options,
      item_handlers={'state': ocp.StandardCheckpointHandler(),
                     'config': ocp.JsonCheckpointHandler(),
                     'progress': ocp.JsonCheckpointHandler()})


TMP_GLOB = '*.orbax-checkpoint-tmp*'  # orbax's name for a step being written


def save(mngr: ocp.CheckpointManager, state: Any,
         config: ml_collections.ConfigDict,
         progress: dict[str, Any] | None = None) -> None:
  """Saves asynchronously; call ``wait(mngr)`` before exit. A full disk (here
  or in the previous save, which orbax reports now) is a ``DiskFullError``.
  ``progress``: JSON saved as a third item (a monitored run's best step,
  score and evaluations since: ``saved_progress``), atomic with the state."""
  items = {'state': ocp.args.StandardSave(state),
           'config': ocp.args.JsonSave(config.to_dict())}
  if progress is not None:
    items['progress'] = ocp.args.JsonSave(progress)
  with _disk_full_is_one_error(mngr, int(state.step)):
    mngr.save(int(state.step), args=ocp.args.Composite(**items))


def saved_progress(mngr: ocp.CheckpointManager,
                   step: int) -> dict[str, Any] | None:
  """The ``progress`` item of checkpoint ``step`` (None: it has none, as
  with ``monitor='last'`` or a checkpoint older than the item)."""
  if not (Path(mngr.directory) / str(step) / 'progress').is_dir():
    return None
  with absl_silenced():
    restored = mngr.restore(step, args=ocp.args.Composite(
        progress=ocp.args.JsonRestore()))
  progress = restored['progress']
  return progress if isinstance(progress, dict) else None


def prune(mngr: ocp.CheckpointManager, keep: set[int]) -> None:
  """Deletes every step of ``mngr`` not in ``keep`` (process 0's files;
  every process calls it, as orbax's ``delete`` syncs them)."""
  for step in sorted(set(mngr.all_steps()) - keep):
    mngr.delete(step)


def best_step(workdir: str | Path) -> int | None:
  """The step of the run's best checkpoint (``checkpoints/best/``), or None.

  The newest training checkpoint's ``progress`` names it; while a run is
  saving a newer best, ``best/`` can briefly hold two steps.
  """
  if not (checkpoint_dir(workdir) / BEST_DIR).is_dir():
    return None
  best = manager(workdir, create=False, process_local=True, best=True)
  steps = set(best.all_steps())
  if not steps:
    return None
  mngr = manager(workdir, create=False, process_local=True)
  for step in sorted(mngr.all_steps(), reverse=True):
    try:
      progress = saved_progress(mngr, step)
    except Exception:  # pylint: disable=broad-except
      continue  # damaged: an older step's progress says
    if progress and progress.get('best_step') in steps:
      return int(progress['best_step'])
  return max(steps)


def wait(mngr: ocp.CheckpointManager) -> None:
  """``mngr.wait_until_finished()``, with a full disk as a ``DiskFullError``."""
  with _disk_full_is_one_error(mngr, None):
    mngr.wait_until_finished()


@contextlib.contextmanager
def _disk_full_is_one_error(mngr: ocp.CheckpointManager,
                            step: int | None) -> Iterator[None]:
  """On a full disk: lets orbax's threads end, removes its temporary step
  directories (they hold the space, and are never a complete step), and
  raises one ``DiskFullError`` naming the path; older steps stay intact."""
  try:
    yield
  except Exception as e:  # pylint: disable=broad-except
    full = errors.disk_full(e)
    if not full:
      raise
    # orbax's commit threads go on after the first failure and would write
    # the temporary directory again: let them end first.
    for thread in threading.enumerate():
      if (type(thread).__module__.startswith('orbax') and thread.is_alive()
          and thread is not threading.current_thread()):
        thread.join(timeout=60)
    directory = Path(mngr.directory)
    tmps = sorted(directory.glob(TMP_GLOB))
    for tmp in tmps:
      shutil.rmtree(tmp, ignore_errors=True)
    steps = [t.name.split('.')[0] for t in tmps] or [step]
    path = (f'checkpoint {directory}/{steps[0]}' if steps[0] is not None
            else getattr(full, 'filename', None) or str(directory))
    with contextlib.suppress(Exception):
      mngr.reload()  # Forget the step that failed.
    kept = sorted(mngr.all_steps())
    keep = (f'checkpoint {directory}/{kept[-1]} is intact' if kept
            else 'no checkpoint was saved yet')
    raise errors.DiskFullError(
        f'No space left on the device writing {path}: free space there (or '
        f'use another workdir); {keep}, so run the same command again to '
        'resume.', arg='workdir') from e


def saved_param_shapes(mngr: ocp.CheckpointManager,
                       step: int) -> dict[str, tuple[int, ...]]:
  """Shapes of the saved params, keyed 'layer.sublayer.name', from metadata."""
  metadata = mngr.item_metadata(step)['state']
  if metadata is None:
    raise ValueError('no state metadata (state/_METADATA)')
  tree = metadata.tree['params']
  leaves = jax.tree.leaves(tree, is_leaf=lambda m: hasattr(m, 'shape'))
  return {m.name.removeprefix('params.'): tuple(m.shape) for m in leaves}


def shape_differences(saved: dict[str, tuple[int, ...]], params: Any) -> str:
  """The parameters whose saved shape differs from ``params``', for one
  line: ``NAME: checkpoint SHAPE vs model SHAPE; …`` (the first six), or
  '' where none does."""
  model = {k: tuple(np.shape(v)) for k, v in
           traverse_util.flatten_dict(params, sep='.').items()}
  differ = [f'{k}: checkpoint {saved.get(k, "absent")} vs model '
            f'{model.get(k, "absent")}'
            for k in sorted(set(saved) | set(model))
            if saved.get(k) != model.get(k)]
  return '; '.join(differ[:6]) + ('; …' if len(differ) > 6 else '')


def check_compatible(saved: dict[str, tuple[int, ...]], params: Any,
                     where: str) -> None:
  """Raises naming each parameter whose saved shape differs from the model's."""
  if problems := shape_differences(saved, params):
    raise CheckpointError(
        f'Checkpoint {where} was written by a different model: {problems}. '
        'Use the config it was trained with, or a fresh workdir.')


def _abstract_with_sharding(leaf: Any) -> Any:
  """``leaf`` as a ShapeDtypeStruct; unsharded ones go to the first local device."""
  struct = ocp.utils.to_shape_dtype_struct(leaf)
  if isinstance(struct, jax.ShapeDtypeStruct) and struct.sharding is None:
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    struct = jax.ShapeDtypeStruct(struct.shape, struct.dtype, sharding=device)
  return struct


def damage_reason(error: BaseException, step_dir: str | Path) -> str:
  """A short why for an unreadable checkpoint: orbax's and TensorStore's own
  messages run to hundreds of lines (a TensorStore spec per array)."""
  text = str(error)
  missing = re.search(r'File (\S+) not found', text)
  if isinstance(error, FileNotFoundError) or missing:
    name = missing.group(1) if missing else (error.filename or text)
    return f'missing {os.path.relpath(str(name), str(step_dir))}'
  item = re.search(r'Item "(\w+)" was not found', text)
  if item:
    return f'missing {item.group(1)}/'
  array = (re.search(r"'path': '((?:params|opt_state|step)[^']*?)/?'", text)
           or re.search(r'"((?:params|opt_state|step)[^"/]*)/', text))
  if array:
    return f'cannot read array {array.group(1)}'
  first = text.split('See full TensorStore details')[0].strip().splitlines()
  first = first[0] if first else ''
  reason = f'{type(error).__name__}: {first}'.rstrip(': ')
  return reason if len(reason) <= 160 else reason[:157] + '...'


def move_aside(directory: Path, step: int) -> Path:
  """Renames the step directory to ``directory/damaged/STEP`` (``STEP.1``, …
  if that exists): out of orbax's sight, so the step can be saved again, and
  kept for inspection rather than deleted. A rename is atomic: a kill leaves
  the step either listed or moved."""
  aside = directory / DAMAGED_DIR
  aside.mkdir(exist_ok=True)
  target, n = aside / str(step), 0
  while target.exists():
    n += 1
    target = aside / f'{step}.{n}'
  os.rename(directory / str(step), target)
  return target


def _params_target(mngr: ocp.CheckpointManager, params: Any, step: int
                   ) -> dict[str, Any]:
  """The saved state's tree (a dict) with ``params`` as its params and every
  other leaf (step, optimizer state) as its metadata describes it: a target
  that needs no optimizer, so inference restores without the trainer."""
  tree = mngr.item_metadata(step)['state'].tree
  rest = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), tree,
                      is_leaf=lambda m: hasattr(m, 'shape'))
  return {**rest, 'params': params}


Target = Any  # a state, or a function of the saved config dict returning one


def _restore_step(mngr: ocp.CheckpointManager, target: Target, params: Target,
                  step: int) -> tuple[Any, dict[str, Any]]:
  where = f'{mngr.directory}/{step}'
  config = mngr.restore(step, args=ocp.args.Composite(
      config=ocp.args.JsonRestore()))['config']
  if not isinstance(config, dict):
    raise ValueError(f'config/metadata holds {type(config).__name__}, '
                     'not a dict')
  shapes = saved_param_shapes(mngr, step)
  if callable(target):
    target = target(config)
  if callable(params):
    params = params(config, shapes)
  check_compatible(shapes, target.params if params is None else params, where)
  item = target if params is None else _params_target(mngr, params, step)
  # Always give orbax target shardings: without one it reuses the saved
  # topology, and a checkpoint from N devices fails on M (orbax #648, #683).
  abstract = jax.tree.map(_abstract_with_sharding, item)
  state = mngr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract)))['state']
  return state, config


def restore_params(mngr: ocp.CheckpointManager, params: Target,
                   step: int | None = None) -> Any:
  """The params of the checkpoint at ``step`` (default: latest, falling back
  as ``restore`` does), restored into ``params`` (concrete or abstract)."""
  state, _ = restore(mngr, None, step, params=params)
  return state['params']


def restore(mngr: ocp.CheckpointManager, target: Target,
            step: int | None = None, *, params: Target = None,
            move_damaged: bool = False) -> tuple[Any, dict[str, Any]]:
  """Restores (state, config dict) at ``step`` (default: latest) into ``target``.

  ``target`` is a concrete or abstract state, or a function of the saved
  config dict returning one. With ``params`` instead (and ``target`` None),
  the state is restored as a dict shaped by the checkpoint's metadata around
  ``params`` (a pytree, or a function of the saved config and the saved
  params' shapes, ``saved_param_shapes``): inference
  rebuilds the model from the saved config and needs no optimizer. Shapes
  are checked against the checkpoint's metadata first, so a foreign
  checkpoint fails with a readable message instead of an orbax traceback.

  Without an explicit ``step``, a damaged step (any part missing or
  unreadable) is skipped for the next older one, and one line on stderr says
  which and why: a damaged file must not cost the whole run. With
  ``move_damaged`` (the trainer, which holds the workdir lock) the damaged
  steps newer than the one restored are moved to ``checkpoints/damaged/``
  (by process 0), so training saves those steps again; readers leave the
  workdir as it is. Nothing is moved when no step is readable.
  """
  steps = [step] if step is not None else sorted(mngr.all_steps(), reverse=True)
  if not steps:
    raise CheckpointError(f'No checkpoint in {mngr.directory}: train a model '
                          'in this workdir first.', arg='workdir')
  damaged: list[tuple[int, str]] = []
  for candidate in steps:
    step_dir = mngr.directory / str(candidate)
    try:
      with abandoned_reads_silenced(), absl_silenced():
        state, config = _restore_step(mngr, target, params, candidate)
    except CheckpointError:
      raise  # Another model's checkpoint is not damage: never skip it.
    except Exception as e:  # pylint: disable=broad-except
      # Damage: orbax and TensorStore raise many types for it.
      damaged.append((candidate, damage_reason(e, step_dir)))
      continue
    if damaged:
      _report_damage(mngr, damaged, candidate, move_damaged)
    return state, config
  raise CheckpointError(
      'No readable checkpoint in ' f'{mngr.directory}: '
      + '; '.join(f'{s}: {why}' for s, why in damaged)
      + '. Move or delete the damaged step directories, or use a fresh '
      'workdir.')


def _report_damage(mngr: ocp.CheckpointManager,
                   damaged: list[tuple[int, str]], good: int,
                   move: bool) -> None:
  what = ', '.join(f'{mngr.directory}/{s} ({why})' for s, why in damaged)
  noun = 'checkpoint' if len(damaged) == 1 else 'checkpoints'
  primary = jax.process_index() == 0
  if move:
    if primary:
      moved = [move_aside(Path(mngr.directory), s) for s, _ in damaged]
    mngr.reload()
    if primary:
      steps = ', '.join(str(s) for s, _ in damaged)
      print(f'warning: damaged {noun} {what}: moved to '
            f'{", ".join(str(m) for m in moved)}; resuming from '
            f'{mngr.directory}/{good}, which saves step {steps} again.',
            file=sys.stderr, flush=True)
  elif primary:
    print(f'warning: damaged {noun} {what}: using {mngr.directory}/{good} '
          '(`seqclf train` on this workdir moves damaged steps aside and '
          'trains them again).', file=sys.stderr, flush=True)


def readable(mngr: ocp.CheckpointManager, target: Target, step: int) -> bool:
  """Whether step ``step`` restores into ``target`` (as in ``restore``)."""
  try:
    with abandoned_reads_silenced(), absl_silenced():
      _restore_step(mngr, target, None, step)
  except Exception:  # pylint: disable=broad-except
    return False
  return True


def input_shape_from(shapes: dict[str, tuple[int, ...]],
                     config: ml_collections.ConfigDict) -> tuple[int, int]:
  """One example's (T, F) that rebuilds parameters saved with ``shapes``:
  (1, F), F the inputs' width the saved first layer reads (the parameters
  do not depend on T). A KeyError if ``shapes`` lacks it."""
  width = shapes[f'{config.cell}_0.cell.input.kernel'][0]
  return (1, classifier.features_of(width, config.get('missing', 'refuse')))


def saved_config(mngr: ocp.CheckpointManager, step: int) -> dict[str, Any] | None:
  """The config saved with checkpoint ``step``; None if it cannot be read
  (``restore`` then reports the damage)."""
  try:
    with absl_silenced():
      restored = mngr.restore(step, args=ocp.args.Composite(
          config=ocp.args.JsonRestore()))
  except Exception:  # pylint: disable=broad-except
    return None
  config = restored['config']
  return config if isinstance(config, dict) else None


def newest_config(mngr: ocp.CheckpointManager
                  ) -> tuple[int, dict[str, Any]] | None:
  """(step, config) of the newest checkpoint whose config is readable: the
  one a resume compares against when the newest step is damaged."""
  for step in sorted(mngr.all_steps(), reverse=True):
    config = saved_config(mngr, step)
    if config is not None:
      return step, config
  return None
