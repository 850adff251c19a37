"""Training and evaluation: pure jitted steps and the loop that drives them.

``train_step`` is one pure update; with ``axis_name`` set it averages
gradients and metrics with ``lax.pmean``, so the same function runs under
``jax.pmap``. ``train_steps`` scans it over a chunk of batches gathered from
the device-resident training set, so the host dispatches once per chunk, not
once per step (``seqclf.loop`` runs the chunks). ``evaluate`` sums one model's
(or a stacked sweep's) metrics over a split. ``train_and_evaluate`` is the
loop: logging, evaluation, checkpoints, resume and the final ``results.json``.
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
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax.training import train_state
from jax.sharding import NamedSharding, PartitionSpec as P

from seqclf import checkpoint
from seqclf import datasets as dataset_lib
from seqclf import errors
from seqclf import input_pipeline
from seqclf import loop
from seqclf import models
from seqclf import optim
from seqclf import parallel
from seqclf import preemption
from seqclf.config import check_resume, validate
from seqclf.metric_logging import MetricLogger
from seqclf.kernels import autotune
from seqclf.models import LSTMClassifier
from seqclf.workdir import WorkdirLock

TrainState = train_state.TrainState
Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


def train_key(seed: int) -> jax.Array:
  """Base key of a run's training noise (dropout, flips), not its ``key(seed)``."""
  return jax.random.fold_in(jax.random.key(seed), 1)


def noise_kwargs(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """``train_steps`` keyword arguments for the config's dropout and flips."""
  if not (config.dropout_rate or config.augment_hflip):
    return {}
  return {'rng': train_key(config.seed), 'hflip': config.augment_hflip}


def create_train_state(config: ml_collections.ConfigDict, rng: jax.Array, *,
                       inject_learning_rate: bool = False,
                       impl: str | None = None,
                       sequence_shape: Sequence[int] | None = None
                       ) -> TrainState:
  """Fresh parameters for ``config`` and an Adam optimizer state.

  ``sequence_shape`` is one example's (T, F) as the model reads it (the
  parameters depend on F only); the default is an MNIST image read as
  ``config.task`` says (``datasets.image_sequence_shape``).

  ``inject_learning_rate`` keeps the (peak) learning rate in the optimizer
  state (``optax.inject_hyperparams``) at ``opt_state.hyperparams
  ['learning_rate']``, so a vmapped sweep can give each model its own.
  ``impl`` runs the LSTM layers (default: ``autotune.resolve_impl``); every
  impl has the same parameters.
  """
  if sequence_shape is None:
    sequence_shape = dataset_lib.image_sequence_shape(config)
  model = models.from_config(config, impl or autotune.resolve_impl(
      config, sequence_shape=sequence_shape))
  # Jitted: run eagerly, nn.scan's init dispatches op by op (seconds on CPU).
  params = jax.jit(model.init)(rng, jnp.zeros((1, *sequence_shape)))['params']
  if inject_learning_rate:
    tx = optax.inject_hyperparams(lambda learning_rate: optim.optimizer(
        config, learning_rate))(learning_rate=config.learning_rate)
  else:
    tx = optim.optimizer(config)
  return TrainState.create(apply_fn=model.apply, params=params, tx=tx)


def _length_kwargs(batch: Batch) -> dict[str, jax.Array]:
  """``seq_lengths`` for the model when the batch has ``lengths``; else
  nothing, so data without lengths traces exactly the program it always did."""
  return {'seq_lengths': batch['lengths']} if 'lengths' in batch else {}


def train_step(state: TrainState, batch: Batch, *,
               axis_name: str | None = None,
               rng: jax.Array | None = None,
               hflip: bool = False) -> tuple[TrainState, Metrics]:
  """One Adam step on mean softmax cross-entropy; pmap-ready via ``axis_name``.

  ``rng`` (needed for dropout or ``hflip``) runs the model in training mode
  with a key folded from it, the step and the replica; ``hflip`` mirrors a
  random half of the batch's images left-right first (augmentation). A
  batch with ``lengths`` passes them as the model's ``seq_lengths``.
  """
  kwargs, images = _length_kwargs(batch), batch['image']
  if rng is not None:
    rng = jax.random.fold_in(rng, state.step)
    if axis_name is not None:
      rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
    if hflip:
      images = input_pipeline.random_hflip(images, jax.random.fold_in(rng, 1))
    kwargs = {**kwargs, 'train': True, 'rngs': {'dropout': rng}}
  elif hflip:
    raise ValueError('hflip=True needs an `rng` to draw the flips from.')

  def loss_fn(params):
    logits = state.apply_fn({'params': params}, images, **kwargs)
    loss = optax.softmax_cross_entropy_with_integer_labels(
        logits, batch['label']).mean()
    return loss, logits

  (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params)
  metrics = {'loss': loss,
             'accuracy': jnp.mean(jnp.argmax(logits, -1) == batch['label'])}
  if axis_name is not None:
    grads = jax.lax.pmean(grads, axis_name)
    metrics = jax.lax.pmean(metrics, axis_name)
  return state.apply_gradients(grads=grads), metrics


def train_steps(state: TrainState, images: jax.Array, labels: jax.Array,
                indices: jax.Array, *,
                axis_name: str | None = None,
                rng: jax.Array | None = None,
                hflip: bool = False,
                lengths: jax.Array | None = None
                ) -> tuple[TrainState, Metrics]:
  """``len(indices)`` steps in one ``lax.scan``; batch k is ``images[indices[k]]``.

  ``lengths`` (N,), the training set's valid steps per example, are gathered
  with the images (``train_steps_with_lengths`` takes them positionally, for
  the chunk runners). Returns the new state and per-step metrics stacked
  along axis 0.
  """

  def body(state, idx):
    batch = {'image': input_pipeline.to_float(images[idx]),
             'label': labels[idx]}
    if lengths is not None:
      batch['lengths'] = lengths[idx]
    return train_step(state, batch, axis_name=axis_name,
                      rng=rng, hflip=hflip)

  return jax.lax.scan(body, state, indices)


def train_steps_with_lengths(state: TrainState, images: jax.Array,
                             labels: jax.Array, lengths: jax.Array,
                             indices: jax.Array, **kwargs: Any
                             ) -> tuple[TrainState, Metrics]:
  """``train_steps`` with the lengths a positional (device-placed, sharded
  like the labels) argument before the indices, as ``loop.Chunks`` passes
  its data arguments."""
  return train_steps(state, images, labels, indices, lengths=lengths, **kwargs)


def data_args(split: input_pipeline.Split) -> tuple[np.ndarray, ...]:
  """The arrays a chunk function gathers batches from: images, labels and,
  when the split has them, lengths (then ``steps_fn(True)`` takes them)."""
  arrays = (split['image'], split['label'])
  return (*arrays, split['lengths']) if 'lengths' in split else arrays


def steps_fn(has_lengths: bool) -> Any:
  """The chunk function for data with or without ``lengths``."""
  return train_steps_with_lengths if has_lengths else train_steps


def eval_step(state: TrainState, batch: Batch) -> Metrics:
  """Summed loss, correct count and example count over the unmasked examples
  (each read up to its ``lengths`` when the batch has them)."""
  logits = state.apply_fn({'params': state.params}, batch['image'],
                          **_length_kwargs(batch))
  mask = batch.get('mask', jnp.ones(batch['label'].shape, bool))
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch['label'])
  correct = jnp.argmax(logits, -1) == batch['label']
  return {'loss': jnp.sum(jnp.where(mask, loss, 0.0)),
          'correct': jnp.sum(correct & mask),
          'count': jnp.sum(mask)}


_jit_eval_step = jax.jit(eval_step)
_jit_eval_stacked = jax.jit(jax.vmap(eval_step, in_axes=(0, None)))


def evaluate(state: TrainState, split: input_pipeline.Split, batch_size: int,
             devices: Sequence[jax.Device] | None = None, *,
             stacked: bool = False) -> dict[str, Any]:
  """Loss and accuracy over every example of ``split`` exactly once.

  With several ``devices`` (this process's own, e.g. the CPU split by
  ``parallel.configure_cpu_devices``) each batch is split across them and the
  parameters replicated, so evaluation uses every core as training does.
  ``stacked``: ``state`` is a stack of models (``seqclf.sweep``), each
  evaluated on the same batches by the same ``eval_step`` (vmapped); loss and
  accuracy are then arrays, one entry per model.
  """
  put = lambda batch: batch
  if devices is not None and len(devices) > 1 and batch_size % len(devices) == 0:
    mesh = parallel.make_mesh(list(devices))
    state = jax.device_put(state, NamedSharding(mesh, P()))
    put = functools.partial(jax.device_put,
                            device=NamedSharding(mesh, P(parallel.AXIS)))
  # Summed on the host: adding device arrays would compile a program per
  # sharding, which costs more than the whole evaluation on CPU.
  step = _jit_eval_stacked if stacked else _jit_eval_step
  sums = jax.device_get([step(state, put(batch)) for batch in
                         input_pipeline.eval_batches(split, batch_size)])
  totals = jax.tree.map(
      lambda *parts: np.sum(parts, axis=0, dtype=np.float64), *sums)
  count = int(np.ravel(totals['count'])[0])
  if stacked:
    return {'loss': totals['loss'] / count,
            'accuracy': totals['correct'] / count, 'count': count}
  return {'loss': float(totals['loss']) / count,
          'accuracy': float(totals['correct']) / count, 'count': count}


def _format_eta(seconds: float) -> str:
  return time.strftime('%H:%M:%S', time.gmtime(max(0.0, seconds)))


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str | Path, *,
    quiet: bool = False,
    datasets: dict[str, input_pipeline.Split] | None = None) -> dict[str, Any]:
  """Trains ``config`` in ``workdir`` (resuming if it holds a checkpoint).

  ``datasets`` (train/validation/test splits, ``seqclf.datasets``' contract)
  defaults to ``datasets.load(config)``, the data ``config.dataset`` names;
  either is read as ``config.task`` says (``datasets.view``).
  Returns the results also written to ``workdir/results.json``; for a run
  that had already finished, its saved results (and ``already_finished:
  True``), leaving every file as it was. On SIGTERM or SIGINT it finishes the
  current chunk of steps, saves a checkpoint and raises
  ``preemption.Preempted``; calling it again resumes. A second run on the same
  workdir while one runs raises ``errors.WorkdirError`` (``seqclf.workdir``).
  """
  config = validate(config)
  # Every check of the config against the data runs before anything is
  # written: bad input leaves no workdir behind.
  datasets = dataset_lib.view_splits(config,
                                    datasets or dataset_lib.load(config))
  input_pipeline.check_batch_size(config.batch_size,
                                  len(datasets['train']['label']))
  dp = parallel.setup(config.parallelism, config.batch_size)
  if config.matmul_precision != 'float32':  # float32 runs everywhere
    autotune.choose_impl(config, batch=config.batch_size // dp.num_devices,
                         sharded=dp.mode == 'sharded',
                         sequence_shape=datasets['train']['image'].shape[1:])
  fresh = not Path(workdir).expanduser().exists()
  workdir = errors.writable_dir(workdir)
  # Process 0 holds the lock for the whole multi-process job.
  try:
    with (WorkdirLock(workdir, enabled=jax.process_index() == 0),
          preemption.StopRequest() as stop):
      return _train_and_evaluate(config, workdir, stop, quiet=quiet,
                                 datasets=datasets)
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
        'free space there (or use another --workdir), then run the same '
        'command again to resume from the newest checkpoint.') from e


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
    config: ml_collections.ConfigDict, workdir: str | Path,
    stop: preemption.StopRequest, *, quiet: bool,
    datasets: dict[str, input_pipeline.Split]) -> dict[str, Any]:
  wall_start = time.perf_counter()
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
              '--config.num_train_steps to train on).', file=sys.stderr)
      return finished
  num_examples, batch_size = len(train['label']), config.batch_size
  total = config.num_train_steps

  dp = parallel.setup(config.parallelism, batch_size)
  choice = autotune.choose_impl(config, batch=batch_size // dp.num_devices,
                                sharded=dp.mode == 'sharded',
                                sequence_shape=shape)
  impl = parallel.agreed_choice(choice.impl, models.IMPLS)
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
  if first_step:
    logger.message(f'Resumed from {mngr.directory}/{first_step}.')
  if config.impl == 'auto':
    logger.message(choice.summary())
  arrays = data_args(train)
  chunks = loop.Chunks(
      dp.chunk_fn(functools.partial(steps_fn(len(arrays) == 3),
                                    **noise_kwargs(config)), len(arrays)),
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
          {'loss': f'{loss:.4f}', 'acc': f'{acc:.3f}', 'ex/s': f'{speed:,.0f}'})
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
      val = evaluate(dp.local(state), data['validation'],
                     config.eval_batch_size, eval_devices)
      logger.write(step, 'validation', val)
      logger.message(f'step {step}: validation loss={val["loss"]:.4f} '
                     f'accuracy={val["accuracy"]:.4f}')
    signum = parallel.agreed_signal(stop.signum)  # All processes stop together.
    stop.stop_after = loop.next_boundary(step, config)  # A signal from now on.
    if (step % config.checkpoint_every == 0 or step == total
        or signum is not None):
      checkpoint.save(mngr, state, config)
    eval_and_save_seconds += time.perf_counter() - t
    if signum is not None and step < total:
      checkpoint.wait(mngr)
      logger.close()
      raise preemption.Preempted(signum, step, str(mngr.directory))
  t = time.perf_counter()
  checkpoint.wait(mngr)
  if val is None:  # Resumed a finished run: nothing was trained this time.
    val = evaluate(dp.local(state), data['validation'], config.eval_batch_size,
                   eval_devices)
  test = evaluate(dp.local(state), data['test'], config.eval_batch_size,
                  eval_devices)
  eval_and_save_seconds += time.perf_counter() - t
  logger.write(int(state.step), 'test', test)
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
