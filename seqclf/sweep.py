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
from seqclf import input_pipeline
from seqclf import train
from seqclf.kernels import autotune
from seqclf.config import ConfigError, validate

TrainState = train.TrainState


def grid(config: ml_collections.ConfigDict, num_seeds: int,
         learning_rates: Sequence[float] | None = None
         ) -> tuple[list[int], list[float]]:
  """(seed, learning rate) of every model: seeds ``config.seed + k``, per rate."""
  if num_seeds < 1:
    raise ConfigError(f'--seeds must be >= 1, got {num_seeds}.')
  rates = [config.learning_rate] if learning_rates is None else list(
      learning_rates)
  bad = [r for r in rates if not (np.isfinite(r) and r > 0)]
  if not rates or bad:
    raise ConfigError(f'--learning_rates must be numbers > 0, got {rates}.')
  seeds = [config.seed + k for k in range(num_seeds)]
  return [s for _ in rates for s in seeds], [r for r in rates for _ in seeds]


def init_states(config: ml_collections.ConfigDict, seeds: Sequence[int],
                learning_rates: Sequence[float] | None = None) -> TrainState:
  """The stacked initial states; leaf k is ``create_train_state(config, key(seeds[k]))``.

  With ``learning_rates`` each model's peak rate is injected into its
  optimizer state; without, the optimizer is exactly the single run's.
  """
  inject = learning_rates is not None
  rates = jnp.asarray(learning_rates if inject else [0.0] * len(seeds),
                      jnp.float32)
  impl = autotune.resolve_impl(config)  # Timed (once), so not under vmap.

  def init(seed, rate):
    state = train.create_train_state(config, jax.random.key(seed),
                                     inject_learning_rate=inject, impl=impl)
    if inject:
      state.opt_state.hyperparams['learning_rate'] = rate
    return state

  return jax.jit(jax.vmap(init))(jnp.asarray(seeds, jnp.uint32), rates)


def sweep_steps_fn(noise: bool = False, hflip: bool = False):
  """``train.train_steps`` vmapped over (state, indices[, noise key]), jitted.

  ``noise`` passes each model its key (for dropout or ``hflip`` flips).
  """

  def steps(states, images, labels, indices, rngs):
    def one(state, idx, rng):
      return train.train_steps(state, images, labels, idx,
                               rng=rng if noise else None, hflip=hflip)
    return jax.vmap(one)(states, indices, rngs)

  return jax.jit(steps, donate_argnums=0)


_eval_all = jax.jit(jax.vmap(train.eval_step, in_axes=(0, None)))


def evaluate_all(states: TrainState, split: input_pipeline.Split,
                 batch_size: int) -> dict[str, np.ndarray]:
  """Per-model loss and accuracy over every example of ``split`` once."""
  totals = None
  for batch in input_pipeline.eval_batches(split, batch_size):
    sums = _eval_all(states, batch)
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  totals = jax.device_get(totals)
  count = totals['count'].astype(np.float64)
  return {'loss': totals['loss'] / count, 'accuracy': totals['correct'] / count}


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
                 learning_rates: Sequence[float] | None,
                 train_split: input_pipeline.Split, *, quiet: bool = False
                 ) -> tuple[TrainState, dict[str, Any]]:
  """Trains one model per seed (per rate, if given) side by side.

  Returns the stacked final states and timing: ``train_seconds`` (the jitted
  chunks alone), ``compile_seconds`` and per-model ``diverged`` flags.
  """
  num_examples, batch_size = len(train_split['label']), config.batch_size
  total = config.num_train_steps

  states = init_states(config, seeds, learning_rates)
  images, labels = jax.device_put((train_split['image'], train_split['label']))
  rngs = jax.vmap(train.train_key)(jnp.asarray(seeds, jnp.uint32))
  run = sweep_steps_fn(bool(train.noise_kwargs(config)), config.augment_hflip)
  compiled: dict[tuple[int, ...], Any] = {}
  compile_seconds = train_seconds = 0.0
  diverged = np.zeros(len(seeds), bool)
  step = 0
  while step < total:
    end = min(step + config.steps_per_call, total)
    indices = np.stack([input_pipeline.train_indices(
        s, num_examples, batch_size, step, end - step) for s in seeds])
    if indices.shape not in compiled:
      t = time.perf_counter()
      compiled[indices.shape] = run.lower(states, images, labels, indices,
                                          rngs).compile()
      compile_seconds += time.perf_counter() - t
    t = time.perf_counter()
    states, metrics = compiled[indices.shape](states, images, labels, indices,
                                              rngs)
    loss = np.asarray(metrics['loss'])  # (models, steps); waits for the chunk
    train_seconds += time.perf_counter() - t
    diverged |= ~np.isfinite(loss).all(axis=1)
    step = end
    if not quiet:
      speed = step * batch_size * len(seeds) / train_seconds
      print(f'step {step}/{total}: loss over {len(seeds)} models '
            f'mean={np.nanmean(loss[:, -1]):.4f} min={np.nanmin(loss[:, -1]):.4f}'
            f' max={np.nanmax(loss[:, -1]):.4f} | {speed:,.0f} ex/s', flush=True)
  return states, {'train_seconds': train_seconds,
                  'compile_seconds': compile_seconds, 'diverged': diverged}


def run_sweep(config: ml_collections.ConfigDict, workdir: str | Path,
              num_seeds: int, learning_rates: Sequence[float] | None = None, *,
              quiet: bool = False,
              datasets: dict[str, input_pipeline.Split] | None = None
              ) -> dict[str, Any]:
  """Trains the grid side by side; writes and returns ``workdir/results.json``."""
  wall_start = time.perf_counter()
  config = validate(config)
  seeds, rates = grid(config, num_seeds, learning_rates)
  workdir = errors.writable_dir(workdir)
  data = datasets or input_pipeline.load_datasets(config.data_dir,
                                                  dataset=config.dataset)
  states, timing = train_models(
      config, seeds, None if learning_rates is None else rates, data['train'],
      quiet=quiet)
  train_seconds, diverged = timing['train_seconds'], timing['diverged']
  total, batch_size = config.num_train_steps, config.batch_size
  val = evaluate_all(states, data['validation'], config.eval_batch_size)
  test = evaluate_all(states, data['test'], config.eval_batch_size)
  acc = np.asarray(test['accuracy'], np.float64)
  results: dict[str, Any] = {
      'test_accuracies': acc.tolist(),
      'test_accuracy_mean': float(acc.mean()),
      'test_accuracy_std': _std(acc),
      'test_accuracy_min': float(acc.min()),
      'test_losses': np.asarray(test['loss']).tolist(),
      'val_accuracies': np.asarray(val['accuracy']).tolist(),
      'seeds': seeds, 'learning_rates': rates,
      'diverged': diverged.tolist(),
      'num_models': len(seeds), 'step': total,
      'examples_seen_per_model': total * batch_size,
      'train_examples_per_second': total * batch_size * len(seeds) / train_seconds,
      'compile_seconds': timing['compile_seconds'],
      'train_seconds': train_seconds,
      'wall_seconds': time.perf_counter() - wall_start,
      'machine': machine(), 'devices': [str(d) for d in jax.devices()],
      'impl': autotune.resolve_impl(config),
      'jax_version': jax.__version__, 'config': config.to_dict(),
  }
  if learning_rates is not None:
    results['by_learning_rate'] = {
        repr(r): {'test_accuracies': acc[mask].tolist(),
                  'test_accuracy_mean': float(acc[mask].mean()),
                  'test_accuracy_std': _std(acc[mask])}
        for r in dict.fromkeys(rates)
        for mask in [np.asarray(rates) == r]}
  train.write_json(workdir / 'results.json', results)
  return results
