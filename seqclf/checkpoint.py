"""Orbax checkpoints: resume a run, or restore a model for inference.

Each checkpoint step holds two items: ``state`` (the TrainState pytree: step,
params, optimizer state) and ``config`` (JSON). Orbax writes each step into a
temporary directory and renames it when complete, so a half-written step is
never listed. The data position needs no saving: batches are a pure function
of (seed, step).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
from absl import logging
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from flax import traverse_util

from seqclf.errors import CheckpointError


def checkpoint_dir(workdir: str | Path) -> Path:
  return Path(workdir).expanduser().resolve() / 'checkpoints'


def manager(workdir: str | Path, max_to_keep: int | None = None,
            create: bool = True,
            process_local: bool = False) -> ocp.CheckpointManager:
  """``process_local``: this process reads alone (inference in a multi-process
  job); otherwise every process must make the same calls (orbax syncs them)."""
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                         create=create)
  if process_local:
    me = jax.process_index()
    options.multiprocessing_options = ocp.options.MultiprocessingOptions(
        primary_host=me, active_processes={me})
  return ocp.CheckpointManager(
      checkpoint_dir(workdir), options=options,
      item_handlers={'state': ocp.StandardCheckpointHandler(),
                     'config': ocp.JsonCheckpointHandler()})


def save(mngr: ocp.CheckpointManager, state: Any,
         config: ml_collections.ConfigDict) -> None:
  """Saves asynchronously; call ``mngr.wait_until_finished()`` before exit."""
  mngr.save(int(state.step), args=ocp.args.Composite(
      state=ocp.args.StandardSave(state),
      config=ocp.args.JsonSave(config.to_dict())))


def saved_param_shapes(mngr: ocp.CheckpointManager,
                       step: int) -> dict[str, tuple[int, ...]]:
  """Shapes of the saved params, keyed 'layer.sublayer.name', from metadata."""
  tree = mngr.item_metadata(step)['state'].tree['params']
  leaves = jax.tree.leaves(tree, is_leaf=lambda m: hasattr(m, 'shape'))
  return {m.name.removeprefix('params.'): tuple(m.shape) for m in leaves}


def check_compatible(saved: dict[str, tuple[int, ...]], params: Any,
                     where: str) -> None:
  """Raises naming each parameter whose saved shape differs from the model's."""
  model = {k: tuple(np.shape(v)) for k, v in
           traverse_util.flatten_dict(params, sep='.').items()}
  problems = [f'{k}: checkpoint {saved.get(k, "absent")} vs model '
              f'{model.get(k, "absent")}'
              for k in sorted(set(saved) | set(model))
              if saved.get(k) != model.get(k)]
  if problems:
    raise CheckpointError(
        f'Checkpoint {where} was written by a different model: '
        + '; '.join(problems[:6]) + ('; …' if len(problems) > 6 else '')
        + '. Use the config it was trained with, or a fresh workdir.')


def _abstract_with_sharding(leaf: Any) -> Any:
  """``leaf`` as a ShapeDtypeStruct; unsharded ones go to the first local device."""
  struct = ocp.utils.to_shape_dtype_struct(leaf)
  if isinstance(struct, jax.ShapeDtypeStruct) and struct.sharding is None:
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    struct = jax.ShapeDtypeStruct(struct.shape, struct.dtype, sharding=device)
  return struct


def _params_target(mngr: ocp.CheckpointManager, params: Any, step: int
                   ) -> dict[str, Any]:
  """The saved state's tree (a dict) with ``params`` as its params and every
  other leaf (step, optimizer state) as its metadata describes it: a target
  that needs no optimizer, so inference restores without the trainer."""
  tree = mngr.item_metadata(step)['state'].tree
  rest = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), tree,
                      is_leaf=lambda m: hasattr(m, 'shape'))
  return {**rest, 'params': params}


def restore_params(mngr: ocp.CheckpointManager, params: Any,
                   step: int | None = None) -> Any:
  """The params of the checkpoint at ``step`` (default: latest, falling back
  as ``restore`` does), restored into ``params`` (concrete or abstract)."""
  state, _ = restore(mngr, None, step, params=params)
  return state['params']


def restore(mngr: ocp.CheckpointManager, target: Any,
            step: int | None = None, *, params: Any = None
            ) -> tuple[Any, dict[str, Any]]:
  """Restores (state, config dict) at ``step`` (default: latest) into ``target``.

  With ``params`` (and ``target`` None), the state is restored as a dict
  shaped by the checkpoint's metadata around ``params`` (``restore_params``).

  ``target`` is a concrete or abstract state; shapes are checked against the
  checkpoint's metadata first, so a foreign checkpoint fails with a readable
  message instead of an orbax traceback. Without an explicit ``step``, an
  unreadable newest checkpoint is skipped with a warning naming it, and the
  next older one is used: a damaged file must not cost the whole run.
  """
  steps = [step] if step is not None else sorted(mngr.all_steps(), reverse=True)
  if not steps:
    raise CheckpointError(f'No checkpoint in {mngr.directory}: train first '
                          '(`seqclf train --workdir …`).')
  failures = []
  for candidate in steps:
    where = f'{mngr.directory}/{candidate}'
    try:
      check_compatible(saved_param_shapes(mngr, candidate),
                       target.params if params is None else params, where)
      item = target if params is None else _params_target(mngr, params,
                                                         candidate)
      # Always give orbax target shardings: without one it reuses the saved
      # topology, and a checkpoint from N devices fails on M (orbax #648,
      # #683).
      abstract = jax.tree.map(_abstract_with_sharding, item)
      restored = mngr.restore(candidate, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract),
          config=ocp.args.JsonRestore()))
    except CheckpointError:
      raise  # Another model's checkpoint is not damage: never skip it.
    except Exception as e:  # pylint: disable=broad-except
      failures.append(f'{where}: {type(e).__name__}: {e}')
      logging.warning('Checkpoint %s is unreadable (%s); trying an older one.',
                      where, e)
      continue
    return restored['state'], restored['config']
  raise CheckpointError(
      'No readable checkpoint: ' + ' | '.join(f[:300] for f in failures)
      + '. Delete the damaged step directories or use a fresh workdir.')


def saved_config(mngr: ocp.CheckpointManager, step: int) -> dict[str, Any] | None:
  """The config saved with checkpoint ``step``; None if it cannot be read
  (``restore`` then deals with the damage)."""
  try:
    restored = mngr.restore(step, args=ocp.args.Composite(
        config=ocp.args.JsonRestore()))
  except Exception as e:  # pylint: disable=broad-except
    logging.warning('Cannot read the config of checkpoint %s/%s (%s).',
                    mngr.directory, step, e)
    return None
  config = restored['config']
  return config if isinstance(config, dict) else None
