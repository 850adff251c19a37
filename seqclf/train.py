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
from seqclf.data import normalization, order, registry, views
from seqclf.data.splits import Split
from seqclf.kernels import paths
from seqclf.training import autotune, checkpoint, loop, optim, parallel, preemption, steps
from seqclf.training.metric_logging import MetricLogger
from seqclf.training.state import create_train_state
from seqclf.training.workdir import WorkdirLock


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
  # Every check of the config against the data, and the one decision of
  # `impl`, run before anything is written: bad input leaves no workdir.
  datasets = views.view_splits(config, datasets or registry.load(config))
  # The model's per-channel statistics (`normalize`), fitted once, here.
  config = normalization.fit(config, datasets['train'])
  order.check_batch_size(config.batch_size, len(datasets['train']['label']))
  dp = parallel.setup(config.parallelism, config.batch_size)
  choice = autotune.choose_impl(
      config, batch=config.batch_size // dp.num_devices,
      sharded=dp.mode == 'sharded',
      sequence_shape=datasets['train']['image'].shape[1:])
  # Every process runs process 0's choice (each timed on its own CPU).
  impl = parallel.agreed_choice(choice.impl, paths.IMPLS)
  fresh = not Path(workdir).expanduser().exists()
  workdir = errors.writable_dir(workdir)
  # Process 0 holds the lock for the whole multi-process job.
  try:
    with (WorkdirLock(workdir, enabled=jax.process_index() == 0),
          preemption.StopRequest() as stop):
      return _train_and_evaluate(config, workdir, stop, dp, choice, impl,
                                 wall_start, quiet=quiet, datasets=datasets)
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
  total = config.num_train_steps
  if not (isinstance(saved, dict) and saved.get('step') == total
          and mngr.latest_step() == total
          and checkpoint.readable(mngr, jax.eval_shape(
              lambda: create_train_state(
                  config, jax.random.key(0), impl='scan',
                  sequence_shape=sequence_shape)), total)):
    return None
  return {**saved, 'already_finished': True}


def _train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: Path,
    stop: preemption.StopRequest, dp: parallel.DataParallel,
    choice: autotune.Choice, impl: str, wall_start: float, *, quiet: bool,
    datasets: dict[str, Split]) -> dict[str, Any]:
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
        print(f'{workdir} holds a finished run of {finished["step"]} steps: '
              'its saved results follow, no file changed (raise '
              'config key `num_train_steps` to train on).', file=sys.stderr)
      return finished
  num_examples, batch_size = len(train['label']), config.batch_size
  total = config.num_train_steps
  # Placed for this topology first: its shardings are the restore target.
  state = dp.canonical(create_train_state(config, jax.random.key(config.seed),
                                          impl=impl, sequence_shape=shape))
  if mngr is None:
    mngr = checkpoint.manager(workdir, config.max_to_keep)
  if mngr.latest_step() is not None:
    state, _ = checkpoint.restore(mngr, state, move_damaged=True)
  first_step = int(state.step)
  logger = MetricLogger(workdir, total, first_step, quiet=quiet,
                        enabled=jax.process_index() == 0)
  # Closed however the run ends: on Python >= 3.12 a writer left open makes
  # tensorboardX's exit hook start a thread at interpreter shutdown (an error).
  try:
    if first_step:
      logger.message(f'Resumed from {mngr.directory}/{first_step}.')
    if config.impl == 'auto':
      logger.message(choice.summary())
    arrays = steps.data_args(train)
    chunks = loop.Chunks(
        dp.chunk_fn(functools.partial(steps.steps_fn(len(arrays) == 3),
                                      **steps.noise_kwargs(config)),
                    len(arrays)),
        dp.put_data(*arrays), config.seed, num_examples,
        batch_size, put_indices=dp.put_indices, to_run=dp.to_run,
        from_run=dp.from_run, metrics=dp.metrics)
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
    for start, step in loop.boundaries(first_step, config):
      state, metrics = chunks(state, start, step)
      speed = chunks.examples_per_second
      eta = (total - step) * batch_size / speed
      for k, s in enumerate(range(start + 1, step + 1)):
        if s % config.log_every and s != total:
          continue
        loss, acc = float(metrics['loss'][k]), float(metrics['accuracy'][k])
        logger.write(s, 'train', {'loss': loss, 'accuracy': acc,
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
        raise FloatingPointError(
            f'Non-finite loss by step {step}; the last good checkpoint in '
            f'{mngr.directory} is untouched. Lower learning_rate.')
      t = time.perf_counter()
      if step % config.eval_every == 0 or step == total:
        val = steps.evaluate(dp.local(state), data['validation'],
                             config.eval_batch_size, eval_devices)
        logger.write(step, 'validation', val)
        logger.message(f'step {step}: validation loss={val["loss"]:.4f} '
                       f'accuracy={val["accuracy"]:.4f}')
      # All processes stop together; stop_after: what a signal from now on says.
      signum = parallel.agreed_signal(stop.signum)
      stop.stop_after = loop.next_boundary(step, config)
      if (step % config.checkpoint_every == 0 or step == total
          or signum is not None):
        checkpoint.save(mngr, state, config)
      eval_and_save_seconds += time.perf_counter() - t
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
    eval_and_save_seconds += time.perf_counter() - t
    logger.write(int(state.step), 'test', test)
  finally:
    logger.close()
  results = {
      'test_accuracy': test['accuracy'], 'test_loss': test['loss'],
      'val_accuracy': val['accuracy'], 'val_loss': val['loss'],
      'examples_seen': int(state.step) * batch_size,
      # Where the rest went: data, model init and restore before the loop;
      # evaluations and checkpoint writes during and after it.
      'setup_seconds': setup_seconds,
      'eval_and_save_seconds': eval_and_save_seconds,
      'resumed_from_step': first_step or None,
      'parallelism': dp.mode, 'impl_choice': choice.to_json(),
      'process_count': jax.process_count(),
      **loop.results(chunks, config, step=int(state.step), impl=impl,
                     wall_start=wall_start),
  }
  loop.write_results(workdir, results)
  return results
