"""Many independent models in one jitted step: seeds (and learning rates) by vmap.

Small recurrent models leave most of a device idle; ``jax.vmap`` over a
stack of K train states turns K small matmuls per time step into one batched
matmul, so K runs cost far less than K times one. Model k is the single run
``seqclf train`` would do with seed ``seeds[k]`` (same initial parameters,
same batches, same noise keys), only computed side by side, so the sweep's
mean ± std is a statement about the recipe, not about one lucky seed.
With ``learning_rates`` the sweep is the grid learning rate × seed; each
model's rate lives in its optimizer state (``optax.inject_hyperparams``).

The sweep keeps no checkpoints: it is for measuring, and reruns from scratch.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from seqclf import errors
from seqclf.config import validate
from seqclf.data import normalization, registry, views
from seqclf.data.splits import Split
from seqclf.errors import ConfigError
from seqclf.training import autotune, loop, steps
from seqclf.training.state import TrainState, create_train_state


def grid(config: ml_collections.ConfigDict, num_seeds: int,
         learning_rates: Sequence[float] | None = None
         ) -> tuple[list[int], list[float]]:
  """(seed, learning rate) of every model of a sweep.

  Args:
    config: the sweep's config (its ``seed`` and ``learning_rate``).
    num_seeds: models per learning rate, seeds ``config.seed + k``.
    learning_rates: rates to cross with the seeds; None: the config's.

  Returns:
    ``(seeds, rates)``, one entry per model, rate-major.
  """
  if num_seeds < 1:
    raise ConfigError(f'num_seeds must be >= 1, got {num_seeds}.',
                      arg='num_seeds')
  rates = [config.learning_rate] if learning_rates is None else list(
      learning_rates)
  bad = [r for r in rates if not (np.isfinite(r) and r > 0)]
  if not rates or bad:
    raise ConfigError(f'learning_rates must be numbers > 0, got {rates}.',
                      arg='learning_rates')
  seeds = [config.seed + k for k in range(num_seeds)]
  return [s for _ in rates for s in seeds], [r for r in rates for _ in seeds]


def init_states(config: ml_collections.ConfigDict, seeds: Sequence[int],
                learning_rates: Sequence[float] | None = None, *,
                impl: str | None = None,
                sequence_shape: Sequence[int] | None = None
                ) -> TrainState:
  """The stacked initial states; leaf k is ``create_train_state(config, key(seeds[k]))``.

  Args:
    config: the models' config.
    seeds: one model per seed.
    learning_rates: each model's peak rate, injected into its optimizer
      state; None: the optimizer is exactly the single run's.
    impl: the path the recurrent layers run (default: ``config.impl``, as
      ``create_train_state`` resolves it).
    sequence_shape: as in ``create_train_state`` (the same default).

  Returns:
    The states stacked on a leading axis.
  """
  inject = learning_rates is not None
  rates = jnp.asarray(learning_rates if inject else [0.0] * len(seeds),
                      jnp.float32)

  def init(seed, rate):
    state = create_train_state(config, jax.random.key(seed),
                               inject_learning_rate=inject, impl=impl,
                               sequence_shape=sequence_shape)
    if inject:
      state.opt_state.hyperparams['learning_rate'] = rate
    return state

  # One model at a time, not vmapped: a batch of orthogonal initializers is a
  # batched LAPACK QR, which deadlocked XLA's CPU threads for five or more
  # bidirectional models (each waiting for work queued on the other). One
  # compiled init serves every seed, and its outputs share one tree.
  init = jax.jit(init)
  states = [init(jnp.uint32(seed), rate) for seed, rate in zip(seeds, rates)]
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)


def sweep_steps_fn(noise: bool = False, hflip: bool = False,
                   lengths: bool = False):
  """``steps.train_steps`` vmapped over (state, noise key, indices), jitted.

  Args:
    noise: pass each model its key (for dropout or ``hflip`` flips).
    hflip: mirror a random half of each batch's images.
    lengths: the data has lengths (a positional argument before the keys).

  Returns:
    ``fn(states, images, labels, rngs, indices)`` (with ``lengths``:
    ``fn(states, images, labels, lengths, rngs, indices)``), the calling
    convention of ``loop.Chunks`` (indices last), states donated.
  """
  run = steps.steps_fn(lengths)

  def every_model(states, *args):
    *data, rngs, indices = args
    def one(state, rng, idx):
      return run(state, *data, idx, rng=rng if noise else None, hflip=hflip)
    return jax.vmap(one)(states, rngs, indices)

  return jax.jit(every_model, donate_argnums=0)


def _std(values: np.ndarray) -> float:
  """Sample standard deviation (ddof=1); 0 for a single model."""
  return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def machine() -> str:
  """One line naming the hardware the figures were measured on."""
  device = jax.devices()[0]
  cpu = platform.processor() or platform.machine()
  return (f'{device.platform}:{device.device_kind} x{jax.device_count()}, '
          f'{os.cpu_count()} CPU cores ({cpu})')


def train_models(config: ml_collections.ConfigDict, seeds: Sequence[int],
                 learning_rates: Sequence[float] | None, train_split: Split,
                 *, impl: str | None = None, quiet: bool = False
                 ) -> tuple[TrainState, dict[str, Any]]:
  """Trains one model per seed (per rate, if given) side by side.

  The single run's loop over a stacked state: the same chunk boundaries and
  runner (``seqclf.training.loop``), model k's batches those of seed
  ``seeds[k]``.

  Args:
    config: the models' config.
    seeds: one model per seed (per rate).
    learning_rates: each model's peak rate, or None (the config's).
    train_split: the training data, as the models read it.
    impl: the path the recurrent layers run; default: ``config.impl``
      resolved here (``autotune.resolve_impl``).
    quiet: print nothing.

  Returns:
    The stacked final states and ``{'chunks': loop.Chunks}`` (its timing)
    with per-model ``diverged`` flags.
  """
  shape = train_split['image'].shape[1:]
  if impl is None:
    impl = autotune.resolve_impl(config, sequence_shape=shape)
  states = init_states(config, seeds, learning_rates, impl=impl,
                       sequence_shape=shape)
  rngs = jax.vmap(steps.train_key)(jnp.asarray(seeds, jnp.uint32))
  arrays = steps.data_args(train_split)
  run = sweep_steps_fn(bool(steps.noise_kwargs(config)), config.augment_hflip,
                       lengths=len(arrays) == 3)
  chunks = loop.Chunks(
      run, (*jax.device_put(arrays), rngs), list(seeds),
      len(train_split['label']), config.batch_size)
  diverged = np.zeros(len(seeds), bool)
  for start, step in loop.boundaries(0, config):
    states, metrics = chunks(states, start, step)
    loss = metrics['loss']  # (models, steps)
    diverged |= ~np.isfinite(loss).all(axis=1)
    if not quiet:
      print(f'step {step}/{config.num_train_steps}: loss over {len(seeds)} '
            f'models mean={np.nanmean(loss[:, -1]):.4f} '
            f'min={np.nanmin(loss[:, -1]):.4f} '
            f'max={np.nanmax(loss[:, -1]):.4f} | '
            f'{chunks.examples_per_second:,.0f} ex/s', flush=True)
  return states, {'chunks': chunks, 'diverged': diverged}


def run_sweep(config: ml_collections.ConfigDict, workdir: str | Path,
              num_seeds: int, learning_rates: Sequence[float] | None = None, *,
              quiet: bool = False,
              datasets: dict[str, Split] | None = None) -> dict[str, Any]:
  """Trains the grid side by side; writes ``workdir/results.json``.

  Args:
    config: the models' config (validated here).
    workdir: where ``results.json`` goes (no checkpoints).
    num_seeds: models per learning rate, seeds ``config.seed + k``.
    learning_rates: rates to cross with the seeds; None: the config's.
    quiet: print nothing.
    datasets: the splits, as ``train.train_and_evaluate`` takes them.

  Returns:
    The results: per-model and summary test accuracies, timing, config.
  """
  wall_start = time.perf_counter()
  config = validate(config)
  seeds, rates = grid(config, num_seeds, learning_rates)
  workdir = errors.writable_dir(workdir)
  data = views.view_splits(config, datasets or registry.load(config))
  config = normalization.fit(config, data['train'])  # `normalize`, as train
  impl = autotune.resolve_impl(
      config, sequence_shape=data['train']['image'].shape[1:])
  states, timing = train_models(
      config, seeds, None if learning_rates is None else rates, data['train'],
      impl=impl, quiet=quiet)
  total, batch_size = config.num_train_steps, config.batch_size
  val = steps.evaluate(states, data['validation'], config.eval_batch_size,
                       stacked=True)
  test = steps.evaluate(states, data['test'], config.eval_batch_size,
                        stacked=True)
  acc = np.asarray(test['accuracy'], np.float64)
  results: dict[str, Any] = {
      'test_accuracies': acc.tolist(),
      'test_accuracy_mean': float(acc.mean()),
      'test_accuracy_std': _std(acc),
      'test_accuracy_min': float(acc.min()),
      'test_losses': np.asarray(test['loss']).tolist(),
      'val_accuracies': np.asarray(val['accuracy']).tolist(),
      'seeds': seeds, 'learning_rates': rates,
      'diverged': timing['diverged'].tolist(),
      'num_models': len(seeds),
      'examples_seen_per_model': total * batch_size,
      'machine': machine(),
      **loop.results(timing['chunks'], config, step=total, impl=impl,
                     wall_start=wall_start),
  }
  if learning_rates is not None:
    results['by_learning_rate'] = {
        repr(r): {'test_accuracies': acc[mask].tolist(),
                  'test_accuracy_mean': float(acc[mask].mean()),
                  'test_accuracy_std': _std(acc[mask])}
        for r in dict.fromkeys(rates)
        for mask in [np.asarray(rates) == r]}
  loop.write_results(workdir, results)
  return results
