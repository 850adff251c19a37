"""A training run: ``train_and_evaluate(config, workdir)``.

The loop around the pure steps (``seqclf.training.steps``): data, the one
``impl`` decision, chunks of steps (``seqclf.training.loop``), logging,
evaluation, checkpoints, resume, stop requests and the final
``results.json``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from seqclf import errors
from seqclf.config import check_resume, validate
from seqclf.data import (normalization, npz_shards, order, registry, stream,
                         views)
from seqclf.data.splits import Split
from seqclf.kernels import paths
from seqclf.training import (autotune, best as best_lib, checkpoint, loop,
                             optim, parallel, preemption, steps)
from seqclf.training.metric_logging import MetricLogger
from seqclf.training.state import create_train_state
from seqclf.training.workdir import WorkdirLock, refuse_sweep


def _format_eta(seconds: float) -> str:
  return time.strftime('%H:%M:%S', time.gmtime(max(0.0, seconds)))


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str | Path, *,
    quiet: bool = False,
    datasets: dict[str, Split] | None = None) -> dict[str, Any]:
  """Trains ``config`` in ``workdir`` (resuming if it holds a checkpoint).

  On SIGTERM or SIGINT it finishes the current chunk of steps, saves a
  checkpoint and raises ``preemption.Preempted``; calling it again resumes.
  A second run on the same workdir while one runs raises
  ``errors.WorkdirError`` (``seqclf.training.workdir``).

  Args:
    config: a ``seqclf.config`` config (validated here).
    workdir: the run's directory (created; checkpoints, metrics, results).
    quiet: print only warnings.
    datasets: train/validation/test splits (``seqclf.data.splits``);
      default: the data ``config.dataset`` names (``registry.load``). Either
      is read as ``config.task`` says (``views.view``).

  Returns:
    The results also written to ``workdir/results.json``; for a run that had
    already finished, its saved results (and ``already_finished: True``),
    leaving every file as it was.
  """
  wall_start = time.perf_counter()
  config = validate(config)
  # A shard directory's prepared copy is not prepared again while it is read.
  reading = (npz_shards.reading(config.dataset[len(registry.NPZ_PREFIX):])
             if datasets is None and registry.is_shard_dir(config.dataset)
             else contextlib.nullcontext())
  with reading:
    return _checked_and_trained(config, workdir, quiet, datasets, wall_start)


def _checked_and_trained(config: ml_collections.ConfigDict,
                         workdir: str | Path, quiet: bool,
                         datasets: dict[str, Split] | None,
                         wall_start: float) -> dict[str, Any]:
  # Every check of the config against the data, and the one decision of
  # `impl`, run before anything is written: bad input leaves no workdir.
  dp = parallel.setup(config.parallelism, config.batch_size)
  given = datasets is not None
  placement, datasets = _placed_data(config, datasets)
  config = registry.with_data_keys(
      config, datasets, [] if given else registry.label_names(config.dataset))
  if not quiet and jax.process_index() == 0:
    _note_unused_classes(config.num_classes, datasets)
  datasets = views.view_splits(config, datasets)
  # The model's per-channel statistics (`normalize`), fitted once, here.
  config = normalization.fit(config, datasets['train'])
  # Processes given other configs or data would each train their own model
  # (the data compared by its digest: each host may keep it elsewhere).
  parallel.check_same_config(config.to_dict(),
                             local=('dataset', 'data_dir', 'data_workers'))
  order.check_batch_size(config.batch_size, len(datasets['train']['label']))
  if config.bucket_by_length:
    stream.require_grain()
    if 'lengths' not in datasets['train']:
      raise errors.ConfigError(
          'Config key `bucket_by_length` groups examples by their lengths, '
          'but this data has none (every sequence is full length): set it '
          'to False.', arg='config.bucket_by_length')
  class_weight = steps.class_weights(config.class_weight,
                                     datasets['train']['label'],
                                     config.num_classes)
  choice = autotune.choose_impl(
      config, batch=config.batch_size // dp.num_devices,
      sharded=dp.mode == 'sharded',
      sequence_shape=datasets['train']['image'].shape[1:])
  # Every process runs process 0's choice (each timed on its own CPU).
  impl = parallel.agreed_choice(choice.impl, paths.IMPLS)
  refuse_sweep(workdir)
  fresh = not Path(workdir).expanduser().exists()
  workdir = errors.writable_dir(workdir)
  # Process 0 holds the lock for the whole multi-process job.
  try:
    with (WorkdirLock(workdir, enabled=jax.process_index() == 0),
          preemption.StopRequest() as stop):
      return _train_and_evaluate(config, workdir, stop, dp, choice, impl,
                                 wall_start, quiet=quiet, datasets=datasets,
                                 class_weight=class_weight,
                                 placement=placement)
  except errors.SeqclfError:
    if fresh:  # Bad input found later (a kernel that cannot be built):
      with contextlib.suppress(OSError):  # leave no empty workdir behind.
        workdir.rmdir()
    raise
  except OSError as e:  # metrics, TensorBoard, results.json (checkpoints:
    full = errors.disk_full(e)  # checkpoint.save and checkpoint.wait)
    if not full or isinstance(e, errors.SeqclfError):
      raise
    where = getattr(full, 'filename', None) or workdir
    raise errors.DiskFullError(
        f'No space left on the device writing {where}: '
        'free space there (or use another workdir), then run the same '
        'command again to resume from the newest checkpoint.',
        arg='workdir') from e


def _note_unused_classes(num_classes: int,
                         datasets: dict[str, Split]) -> None:
  """Notes a head wider than the labels: `num_classes` left at a config's
  10 on data of 3 classes trains, but with outputs no example teaches."""
  used = registry.classes_used(datasets)
  if used < num_classes:
    rest = (f'class {used}' if used == num_classes - 1
            else f'classes {used}..{num_classes - 1}')
    print(f'note: the labels use classes 0..{used - 1} of num_classes='
          f'{num_classes}: set --config.num_classes={used}, unless this data '
          f'merely lacks {rest}.', file=sys.stderr)


def _placed_data(config: ml_collections.ConfigDict,
                 datasets: dict[str, Split] | None
                 ) -> tuple[str, dict[str, Split]]:
  """``config.data_placement`` resolved (``stream.placement``) and the
  data: in memory for ``device``, a prepared dataset's sequences left on
  disk for ``stream``."""
  requested = config.data_placement
  if requested != 'device':
    stream.require_grain()
  nbytes = (datasets['train']['image'].nbytes if datasets is not None
            else registry.train_nbytes(config) if requested == 'auto' else 0)
  where = stream.placement(requested, nbytes, stream.device_memory_bytes())
  if datasets is None:
    datasets = registry.load(config, lazy=where == 'stream')
  return where, datasets


def _chunks(config: ml_collections.ConfigDict, dp: parallel.DataParallel,
            train: Split, first_step: int, placement: str,
            class_weight: np.ndarray | None) -> loop.Chunks:
  """The chunk runner: batches gathered from the device-resident training
  set, or assembled on the host (from disk when streaming, bucketed by
  length if asked) while the chunk before trains."""
  arrays = steps.data_args(train)
  # No class_weight keyword without weights: the same program as before.
  kwargs = {**steps.noise_kwargs(config),
            **({} if class_weight is None else {'class_weight': class_weight})}
  common = {'to_run': dp.to_run, 'from_run': dp.from_run,
            'metrics': dp.metrics}
  if placement == 'stream' or config.bucket_by_length:
    return loop.StreamChunks(
        dp.chunk_fn(functools.partial(steps.train_steps_streamed, **kwargs),
                    len(arrays), streamed=True),
        stream.TrainStream(train, config.seed, config.batch_size,
                           dp.local_part(config.batch_size),
                           config.data_workers, bucket=config.bucket_by_length),
        functools.partial(dp.put_batches, batch_size=config.batch_size),
        list(loop.boundaries(first_step, config)), config.seed,
        len(train['label']), config.batch_size, **common)
  fn = steps.steps_fn(len(arrays) == 3)
  if steps.uses_noise(config):  # Its key an argument, as a sweep's are.
    fn = steps.keyed(fn, kwargs.pop('hflip'))
    arrays = (*arrays, jax.random.key_data(kwargs.pop('rng')))
  return loop.Chunks(
      dp.chunk_fn(functools.partial(fn, **kwargs), len(arrays)),
      dp.put_data(*arrays), config.seed, len(train['label']),
      config.batch_size, put_indices=dp.put_indices, **common)


def _check_resume(mngr: Any, config: ml_collections.ConfigDict,
                  quiet: bool) -> None:
  """Refuses to resume the latest checkpoint with a config that changes the
  model, optimizer or data (a ``CheckpointError``); notes the accepted changes."""
  newest = checkpoint.newest_config(mngr)  # Past a damaged newest step.
  if newest is None:
    return
  step, saved = newest
  changes = check_resume(saved, config, step, f'{mngr.directory}/{step}')
  if changes and not quiet and jax.process_index() == 0:
    print(f'note: resuming {mngr.directory}/{step} with changed keys that '
          'keep the model, optimizer and data: ' + '; '.join(changes) + '.',
          file=sys.stderr)


def _finished_results(workdir: Path, mngr: Any,
                      config: ml_collections.ConfigDict,
                      sequence_shape: Sequence[int]) -> dict[str, Any] | None:
  """``results.json`` of a run that already finished ``config``'s steps on
  data of ``sequence_shape`` (None if its final checkpoint is damaged: the
  run then trains it again)."""
  try:
    saved = json.loads((workdir / 'results.json').read_text())
  except (OSError, ValueError):
    return None  # None yet (or killed while finishing): finish it now.
  if not isinstance(saved, dict):
    return None
  step = saved.get('step')
  # Stopped early, and the patience it ran out of is still the config's.
  stopped = (saved.get('stopped_early') and config.patience
             and saved.get('evaluations_without_improvement', 0)
             >= config.patience)
  if not ((step == config.num_train_steps or stopped)
          and mngr.latest_step() == step
          and saved.get('monitor', 'last') == config.monitor
          and checkpoint.readable(mngr, jax.eval_shape(
              lambda: create_train_state(
                  config, jax.random.key(0), impl='scan',
                  sequence_shape=sequence_shape)), step)):
    return None
  if (config.monitor != 'last'
      and checkpoint.best_step(workdir) != saved.get('best_step')):
    return None  # its best checkpoint is gone: finish it again
  return {**saved, 'already_finished': True}


def _metric_results(val: dict[str, Any], test: dict[str, Any],
                    prefix: str = '') -> dict[str, Any]:
  """results.json's metric keys: ``val_``/``test_`` + each scalar metric,
  and ``validation``/``test``: every metric (per-class lists, confusion)."""
  out = {}
  for name, split in (('val', val), ('test', test)):
    out.update({f'{prefix}{name}_{k}': split[k] for k in
                ('loss', 'accuracy', 'macro_f1', 'balanced_accuracy')})
  return {**out, f'{prefix}validation': val, f'{prefix}test': test}


def _best_results(best: best_lib.Best, last: dict[str, Any] | None,
                  class_weight: np.ndarray | None,
                  stopped_early: bool) -> dict[str, Any]:
  """results.json's keys of a monitored run (the last step's metrics under
  ``last_``) and of class weights."""
  out: dict[str, Any] = {'monitor': best.monitor}
  if class_weight is not None:
    out['class_weights'] = class_weight.tolist()
    out['loss_definition'] = ('loss: unweighted mean cross-entropy; '
                              'train weighted_loss (the objective): mean of '
                              'class_weights[label] * cross-entropy')
  if best.enabled:
    out.update({'best_step': best.step, 'best_score': best.score,
                'stopped_early': stopped_early,
                'evaluations_without_improvement': best.since,
                **_metric_results(last['val'], last['test'], 'last_')})
  return out


def _train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: Path,
    stop: preemption.StopRequest, dp: parallel.DataParallel,
    choice: autotune.Choice, impl: str, wall_start: float, *, quiet: bool,
    datasets: dict[str, Split], class_weight: np.ndarray | None,
    placement: str = 'device') -> dict[str, Any]:
  data, mngr = datasets, None
  train = data['train']
  shape = train['image'].shape[1:]  # (T, F): the data's, not a constant
  # Alone, a process leaves a fresh workdir without checkpoints/ on bad input;
  # processes of a job must not decide by a directory another may be making.
  if jax.process_count() > 1 or checkpoint.checkpoint_dir(workdir).is_dir():
    mngr = checkpoint.manager(workdir, config.max_to_keep)
    _check_resume(mngr, config, quiet)
    finished = _finished_results(workdir, mngr, config, shape)
    if finished is not None:
      if not quiet and jax.process_index() == 0:
        more = ('`patience`' if finished.get('stopped_early')
                else '`num_train_steps`')
        print(f'{workdir} holds a finished run of {finished["step"]} steps: '
              'its saved results follow, no file changed (raise '
              f'config key {more} to train on).', file=sys.stderr)
      return finished
  batch_size = config.batch_size
  total = config.num_train_steps
  # Placed for this topology first: its shardings are the restore target.
  state = dp.canonical(create_train_state(config, jax.random.key(config.seed),
                                          impl=impl, sequence_shape=shape))
  if mngr is None:
    mngr = checkpoint.manager(workdir, config.max_to_keep)
  if mngr.latest_step() is not None:
    state, _ = checkpoint.restore(mngr, state, move_damaged=True)
  first_step = int(state.step)
  best = best_lib.Best(workdir, config)
  best.resume(mngr, first_step)
  logger = MetricLogger(workdir, total, first_step, quiet=quiet,
                        enabled=jax.process_index() == 0,
                        class_names=tuple(registry.class_names(config)))
  chunks = None  # the chunk runner, built inside (a stream's is closed)
  # Closed however the run ends (its files and progress bar).
  try:
    if first_step:
      logger.message(f'Resumed from {mngr.directory}/{first_step}.')
    if config.impl == 'auto':
      logger.message(choice.summary())
    chunks = _chunks(config, dp, train, first_step, placement, class_weight)
    # Evaluation shards batches over the local devices with jax.jit, which
    # would replicate the CPU kernel's calls; the kernel spreads one device's
    # batch over the cores itself.
    eval_devices = jax.local_devices()
    if impl == 'kernel':
      eval_devices = eval_devices[:1]
    setup_seconds = time.perf_counter() - wall_start
    eval_and_save_seconds = 0.0
    val = None
    # What a first Ctrl-C says; updated once each chunk's signal check is done.
    stop.stop_after = loop.next_boundary(first_step, config)
    # A run whose patience ran out before its last save has nothing to train.
    for start, step in ([] if best.stop else
                        loop.boundaries(first_step, config)):
      state, metrics = chunks(state, start, step)
      speed = chunks.examples_per_second
      eta = (total - step) * batch_size / speed
      for k, s in enumerate(range(start + 1, step + 1)):
        if s % config.log_every and s != total:
          continue
        loss, acc = float(metrics['loss'][k]), float(metrics['accuracy'][k])
        weighted = ({'weighted_loss': float(metrics['weighted_loss'][k])}
                    if 'weighted_loss' in metrics else {})
        logger.write(s, 'train', {'loss': loss, 'accuracy': acc, **weighted,
                                  'examples_per_second': speed,
                                  'learning_rate': optim.learning_rate_at(
                                      config, s)})
        logger.progress(
            s, f'step {s} ({s * batch_size}/{total * batch_size}) '
            f'Minibatch loss={loss:.4f} Accuracy={acc:.4f} | '
            f'{speed:,.0f} ex/s, ETA {_format_eta(eta)}',
            {'loss': f'{loss:.4f}', 'acc': f'{acc:.3f}',
             'ex/s': f'{speed:,.0f}'})
      nonfinite = int(np.sum(~np.isfinite(metrics['loss'])))
      if nonfinite and config.skip_nonfinite_updates:
        logger.message(f'warning: skipped {nonfinite} non-finite update(s) '
                       f'in steps {start + 1}-{step}.')
      elif nonfinite:
        last = mngr.latest_step()
        kept = ('no checkpoint was saved before it' if last is None else
                f'the last good checkpoint (step {last}) in {mngr.directory} '
                'is untouched')
        raise FloatingPointError(
            f'Non-finite loss by step {step}; {kept}. Lower learning_rate.')
      t = time.perf_counter()
      if step % config.eval_every == 0 or step == total:
        val = steps.evaluate(dp.local(state), data['validation'],
                             config.eval_batch_size, eval_devices)
        logger.write(step, 'validation', val)
        new_best = best.update(step, val, state, config)
        logger.message(f'step {step}: validation loss={val["loss"]:.4f} '
                       f'accuracy={val["accuracy"]:.4f} macro_f1='
                       f'{val["macro_f1"]:.4f} balanced_accuracy='
                       f'{val["balanced_accuracy"]:.4f}'
                       + (' (new best)' if new_best else ''))
      # All processes stop together; stop_after: what a signal from now on says.
      signum = parallel.agreed_signal(stop.signum)
      stop.stop_after = loop.next_boundary(step, config)
      if (step % config.checkpoint_every == 0 or step == total
          or signum is not None or best.stop):
        checkpoint.save(mngr, state, config, best.progress())
        best.saved(mngr)
      eval_and_save_seconds += time.perf_counter() - t
      if best.stop:
        if step < total:  # Patience ran out at the last step: it just ends.
          logger.message(f'step {step}: stopping early, no better '
                         f'{config.monitor} in {best.since} evaluations '
                         f'(patience {config.patience}).')
        break
      if signum is not None and step < total:
        checkpoint.wait(mngr)
        raise preemption.Preempted(signum, step, str(mngr.directory))
    t = time.perf_counter()
    checkpoint.wait(mngr)
    if val is None:  # Resumed a finished run: nothing was trained this time.
      val = steps.evaluate(dp.local(state), data['validation'],
                           config.eval_batch_size, eval_devices)
    test = steps.evaluate(dp.local(state), data['test'], config.eval_batch_size,
                          eval_devices)
    last = None
    if best.enabled:  # The best checkpoint's metrics are the run's result.
      last, kept = {'val': val, 'test': test}, best.restore(state)
      val = steps.evaluate(dp.local(kept), data['validation'],
                           config.eval_batch_size, eval_devices)
      test = steps.evaluate(dp.local(kept), data['test'],
                            config.eval_batch_size, eval_devices)
      logger.message(f'Result: the {best.note()}.')
    eval_and_save_seconds += time.perf_counter() - t
    # At the step of the parameters it scores (the best, where monitored).
    logger.write(best.step if best.enabled else int(state.step), 'test', test)
  except Exception:
    # Out of memory, a full disk or a bug: a checkpoint still being written
    # is finished first, so nothing saved is lost (a failed write stays
    # incomplete, and a resume skips it).
    with contextlib.suppress(Exception):
      checkpoint.wait(mngr)
    raise
  finally:
    logger.close()
    if isinstance(chunks, loop.StreamChunks):
      chunks.close()
  results = {
      **_metric_results(val, test),
      **_best_results(best, last, class_weight,
                      stopped_early=best.stop and int(state.step) < total),
      'examples_seen': int(state.step) * batch_size,
      # Where the rest went: data, model init and restore before the loop;
      # evaluations and checkpoint writes during and after it.
      'setup_seconds': setup_seconds,
      'eval_and_save_seconds': eval_and_save_seconds,
      'resumed_from_step': first_step or None,
      'parallelism': dp.mode, 'impl_choice': choice.to_json(),
      'data_placement': placement,
      **({'examples_read_by_process': chunks.examples_read}
         if isinstance(chunks, loop.StreamChunks) else {}),
      'process_count': jax.process_count(),
      **loop.results(chunks, config, step=int(state.step), impl=impl,
                     wall_start=wall_start),
  }
  loop.write_results(workdir, results)
  return results
