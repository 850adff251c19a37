"""A grid of settings × seeds, trained group by group, chosen on validation.

Model k of a sweep is the single run ``seqclf train`` would do with its
setting and seed (same initial parameters, same batches, same noise keys),
so the sweep's mean ± std is a statement about the recipe, not about one
lucky seed. ``run_sweep`` trains a grid over any config keys (``--grid
KEY=V1,V2``): settings that differ only in numbers of the step
(``hyper.PER_MODEL``: learning rate, dropout, clipping, decay, warmup) train
together in one program, each model with its own values
(``seqclf.training.hyper``); keys that change the program (width, depth,
cell, task, clipping on or off, ...) make groups run one after the other.
A group trains on the devices as ``seqclf train`` would (on a CPU split
into one device per core, each model's batches split over them), its models
one after another inside the program on the CPU (bitwise their single runs)
and vmapped on an accelerator (one batched program). One program per group
means one compile, one dispatch per chunk and one host loop for all its
models. Each group (each fold, with ``cv``) checkpoints its stacked state,
so a killed sweep resumes where it was. Settings are compared in one table
(``results.json``, ``.md``, ``.csv``) and one is chosen on validation (or
k-fold cross-validation over the training split), never on test.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import platform
import re
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from seqclf import errors
from seqclf.config import base_config, same_dataset, validate
from seqclf.data import normalization, order, registry, splits as splits_lib, views
from seqclf.data.splits import Split
from seqclf.errors import ConfigError
from seqclf.training import (autotune, checkpoint, hyper, loop,
                             metric_logging, parallel, preemption, steps)
from seqclf.training import state as state_lib
from seqclf.training.workdir import WorkdirLock, refuse_run


def _std(values: np.ndarray) -> float:
  """Sample standard deviation (ddof=1); 0 for a single model."""
  return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def machine() -> str:
  """One line naming the hardware the figures were measured on."""
  device = jax.devices()[0]
  cpu = platform.processor() or platform.machine()
  return (f'{device.platform}:{device.device_kind} x{jax.device_count()}, '
          f'{os.cpu_count()} CPU cores ({cpu})')


# ---------------------------------------------------------------------------
# Grids over any config keys.

_NOT_A_HYPERPARAMETER = ('it changes how a run is carried out, not what the '
                         'models learn')
# Keys a grid may not vary, and why.
CANNOT_VARY = {
    'dataset': 'settings are compared on one validation split: sweep each '
               'dataset on its own',
    'data_dir': 'every setting must read the same data',
    'validation_fraction': 'it changes the validation split the settings '
                           'are compared on',
    'seed': "a sweep's seeds are config.seed + 0..N-1: use --seeds",
    **dict.fromkeys(('parallelism', 'cpu_devices'),
                    "every group trains on the process's devices, laid out "
                    'once'),
    **dict.fromkeys(('data_placement', 'data_workers', 'bucket_by_length'),
                    'a sweep keeps the training set on its device'),
    'monitor': 'it is what the settings are chosen by',
    **dict.fromkeys(('log_every', 'eval_every', 'checkpoint_every',
                     'max_to_keep', 'eval_batch_size', 'steps_per_call'),
                    _NOT_A_HYPERPARAMETER),
}

Setting = dict[str, Any]


def _unknown_key(key: str) -> ConfigError:
  """validate's message for an unknown key."""
  probe = base_config()
  probe[key] = 0
  try:
    validate(probe)
  except ConfigError as e:
    return ConfigError(f'--grid: {e}', arg='grid')
  return ConfigError(f'--grid: unknown config key `{key}`.', arg='grid')


def parse_value(key: str, text: str) -> Any:
  """``text`` as config key ``key``'s type (``base_config``'s default's)."""
  default = base_config()[key]
  text = text.strip()
  try:
    if text.startswith('[') and text.endswith(']'):  # a list (class_weight)
      return [float(v) for v in text[1:-1].split(',') if v.strip()]
    if isinstance(default, bool):
      if text.lower() not in ('true', 'false', '1', '0'):
        raise ValueError(text)
      return text.lower() in ('true', '1')
    if isinstance(default, int):
      return int(text)
    if isinstance(default, float):
      return float(text)
    if isinstance(default, str):
      return text
  except ValueError:
    pass
  raise ConfigError(f'--grid {key}={text}: config key `{key}` takes '
                    f'{type(default).__name__} values, got {text!r}.',
                    arg='grid')


def parse_grid(specs: Sequence[str]) -> dict[str, list[Any]]:
  """``KEY=V1,V2`` flags as ``{key: [values]}``, each value of the key's type.

  Args:
    specs: the ``--grid`` values (the flag may repeat; a key at most once).

  Returns:
    The grid, in the order given; a one-line ``ConfigError`` for bad input.
  """
  base, grid = base_config(), {}
  for spec in specs:
    key, sep, values = spec.partition('=')
    key = key.strip()
    if not sep or not key or not values.strip():
      raise ConfigError(f'--grid takes KEY=V1,V2 (e.g. --grid '
                        f'hidden_size=64,128), got {spec!r}.', arg='grid')
    if key not in base:
      raise _unknown_key(key)
    if key in grid:
      raise ConfigError(f'--grid names `{key}` twice: give its values once, '
                        f'comma-separated.', arg='grid')
    # Commas inside [...] belong to a list value: class_weight=none,[1,3].
    grid[key] = [parse_value(key, v)
                 for v in re.split(r',(?![^\[]*\])', values)]
  return grid


def settings_of(config: ml_collections.ConfigDict,
                grid: dict[str, Sequence[Any]]) -> list[Setting]:
  """Every setting of ``grid`` (its cartesian product), each checked.

  Args:
    config: the sweep's base config.
    grid: key -> values (``parse_grid``, or a config file's ``get_grid()``).

  Returns:
    One dict per setting, the first key varying slowest; a one-line
    ``ConfigError`` for an unknown key, a value of the wrong type, a key
    that cannot vary (``CANNOT_VARY``) or a setting ``validate`` refuses.
  """
  base = base_config()
  for key, values in grid.items():
    if key not in base:
      raise _unknown_key(key)
    if key in CANNOT_VARY:
      raise ConfigError(f'--grid {key}: `{key}` cannot vary in a sweep: '
                        f'{CANNOT_VARY[key]}.', arg='grid')
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) \
        or not values:
      raise ConfigError(f'--grid {key}: give a list of values, got '
                        f'{values!r}.', arg='grid')
  settings = [dict(zip(grid, values))
              for values in itertools.product(*grid.values())]
  if len({json.dumps(s, sort_keys=True) for s in settings}) < len(settings):
    raise ConfigError('--grid repeats a value: give each value once.',
                      arg='grid')
  for setting in settings:
    try:
      validate(configured(config, setting))
    except ConfigError as e:
      raise ConfigError(f'--grid setting {name_of(setting)}: {e}',
                        arg='grid') from None
  return settings


def sample(settings: Sequence[Setting], n: int, seed: int) -> list[Setting]:
  """``n`` of ``settings`` drawn without replacement (a permutation from
  ``seed``), in the grid's order: random search, for a grid too large to
  train whole (Bergstra & Bengio, 2012). ``n`` = 0 or at least the grid's
  size: all of them."""
  if not 0 < n < len(settings):
    return list(settings)
  picked = np.sort(np.random.default_rng(seed).permutation(len(settings))[:n])
  return [settings[i] for i in picked]


def configured(config: ml_collections.ConfigDict,
               setting: Setting) -> ml_collections.ConfigDict:
  """A copy of ``config`` with ``setting``'s values (of any type: a
  ``class_weight`` list where the config has a name, or the reverse)."""
  return ml_collections.ConfigDict({**config.to_dict(), **setting})


def name_of(setting: Setting) -> str:
  """``key=value ...``: a setting's name in the table and on disk."""
  return ' '.join(f'{k}={v}' for k, v in setting.items()) or 'config'


def varying_per_model(config: ml_collections.ConfigDict,
                      grid_keys: Sequence[str]) -> tuple[str, ...]:
  """The grid's keys that vary per model inside one program for ``config``."""
  return tuple(k for k in hyper.per_model_keys(config) if k in grid_keys)


def group_settings(config: ml_collections.ConfigDict,
                   settings: Sequence[Setting]) -> list[list[int]]:
  """Indices of the settings that train together, one list per program.

  Settings whose configs agree on every key but the per-model ones
  (``hyper.PER_MODEL``) share a program; groups keep the grid's order.
  """
  keys = list(settings[0]) if settings else []
  groups: dict[str, list[int]] = {}
  for i, setting in enumerate(settings):
    c = configured(config, setting)
    vary = varying_per_model(c, keys)
    signature = json.dumps({k: v for k, v in c.to_dict().items()
                            if k not in vary}, sort_keys=True, default=str)
    groups.setdefault(signature, []).append(i)
  return list(groups.values())


# ---------------------------------------------------------------------------
# Folds, metrics, selection and the table.


def stratified_folds(labels: np.ndarray, k: int,
                     seed: int = splits_lib.SPLIT_SEED,
                     names: Sequence[str] = ()) -> list[np.ndarray]:
  """``k`` disjoint index sets covering ``labels``, each class dealt
  round-robin over them in an order fixed by ``seed`` (every fold holds
  every class); a one-line ``ConfigError`` if a class has fewer than k,
  naming it by ``names`` (the labels' class names) where given."""
  classes, counts = np.unique(labels, return_counts=True)
  if k < 2:
    raise ConfigError(f'--cv must be >= 2 folds, got {k}.', arg='cv')
  if counts.min() < k:
    c, n = classes[counts.argmin()], int(counts.min())
    c = f'{c} ({names[c]})' if c < len(names) else c
    fix = f'use --cv {n} or fewer' if n >= 2 else 'drop --cv'
    raise ConfigError(f'--cv {k}: class {c} has only {n} training examples, '
                      f'fewer than {k} folds: {fix}.', arg='cv')
  rng = np.random.default_rng(seed)
  fold_of = np.empty(len(labels), int)
  for c in classes:
    members = rng.permutation(np.flatnonzero(labels == c))
    fold_of[members] = np.arange(len(members)) % k
  return [np.flatnonzero(fold_of == i) for i in range(k)]


def _take(split: Split, index: np.ndarray) -> Split:
  return {key: value[index] for key, value in split.items()}


def split_metrics(evaluated: dict[str, Any]) -> dict[str, np.ndarray]:
  """Per-model metrics of a stacked evaluation (``steps.evaluate``).

  The one place a sweep turns evaluation output into the table's metrics:
  whatever names evaluation returns (loss, accuracy, and more where it
  gives them) are compared, none assumed but ``loss``.
  """
  return {name: np.asarray(value, np.float64)
          for name, value in evaluated.items()
          if name != 'count' and np.ndim(value) == 1}


def monitor_of(config: ml_collections.ConfigDict) -> str:
  """The validation metric settings are chosen by: ``config.monitor`` where
  it names one; else (``'last'`` or no such key) ``'val_accuracy'``."""
  monitor = config.get('monitor', 'last')
  return 'val_accuracy' if monitor in (None, '', 'last') else monitor


def choose(rows: Sequence[dict[str, Any]], monitor: str) -> int:
  """Index of the row with the best mean validation ``monitor`` over seeds
  (lowest for a loss, else highest), ties to the lowest mean validation loss.
  Reads each row's ``validation`` figures only: never a test figure."""
  name = monitor.removeprefix('val_')
  sign = -1.0 if name == 'loss' else 1.0

  def key(i):
    val = rows[i]['validation']
    if name not in val:
      raise ConfigError(f'Config key `monitor`={monitor!r}: validation gives '
                        f'{", ".join("val_" + m for m in val)}.',
                        arg='config.monitor')
    # A diverged setting (NaN figures) ranks last, never first.
    return tuple(v if np.isfinite(v) else -np.inf
                 for v in (sign * val[name]['mean'], -val['loss']['mean']))

  return max(range(len(rows)), key=key)


def _summary(values: np.ndarray) -> dict[str, Any]:
  values = np.asarray(values, np.float64)
  return {'mean': float(values.mean()), 'std': _std(values),
          'values': values.tolist()}


def figure(summary: dict[str, Any]) -> str:
  """A metric over seeds as the table shows it: ``mean ± std``, or the one
  value (a single seed has no spread to show)."""
  if len(summary['values']) < 2:
    return f'{summary["mean"]:.4f}'
  return f'{summary["mean"]:.4f} ± {summary["std"]:.4f}'


def metric_order(names: Any) -> list[str]:
  """Loss first, then by name: the same order whichever units were trained
  now and which were read back from a sweep that was resumed."""
  return sorted(names, key=lambda m: (m != 'loss', m))


def markdown(results: dict[str, Any]) -> str:
  """The table: one row per setting, mean ± std over seeds, the chosen marked."""
  rows = results['rows']
  val, test = (metric_order({m for r in rows for m in r[split]})
               for split in ('validation', 'test'))
  head = (['setting'] + [f'val {m}' for m in val]
          + [f'test {m}' for m in test])
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for r in rows:
    name = f'**{r["name"]}** (chosen)' if r['chosen'] else r['name']
    cells = [name] + [figure(r['validation'][m]) for m in val] + [
        figure(r['test'][m]) if m in r['test'] else '–' for m in test]
    lines.append('| ' + ' | '.join(cells) + ' |')
  where = (f'{results["cv"]}-fold cross-validation over the training split'
           if results['cv'] else 'the validation split')
  spread = ('mean ± std over seeds' if results['num_seeds'] > 1
            else 'one seed each, so no spread')
  refit = (f' The chosen setting then trained on the whole training split '
           f'for {results["refit_steps"]} steps, its folds\' mean best step.'
           if results.get('refit_steps') else '')
  size = results.get('grid_size', len(rows))
  drawn = (f' (drawn at random from the grid\'s {size})'
           if size > len(rows) else '')
  return '\n'.join([
      f'Sweep of {len(rows)} settings{drawn} x {results["num_seeds"]} seeds: '
      f'{spread}; chosen by {results["monitor"]} on {where} (ties: '
      f'lower validation loss), never by test.{refit}', '', *lines, ''])


def _csv(results: dict[str, Any]) -> str:
  rows = results['rows']
  keys = list(results['grid'])
  metrics = [(split, m) for split in ('validation', 'test')
             for m in sorted({m for r in rows for m in r[split]})]
  out = io.StringIO()
  writer = csv.writer(out)
  writer.writerow(keys + [f'{"val" if s == "validation" else s}_{m}_{t}'
                          for s, m in metrics for t in ('mean', 'std')]
                  + ['chosen'])
  for r in rows:
    writer.writerow([r['setting'][k] for k in keys] + [
        r[s][m][t] if m in r[s] else '' for s, m in metrics
        for t in ('mean', 'std')] + [int(r['chosen'])])
  return out.getvalue()


# ---------------------------------------------------------------------------
# Units: one group's models trained on one split, checkpointed.


def _format_eta(seconds: float) -> str:
  return time.strftime('%H:%M:%S', time.gmtime(max(0.0, seconds)))


class Progress:
  """The whole sweep's progress: model-steps done of all, with an ETA."""

  def __init__(self, total: int, quiet: bool):
    self.total, self.quiet = total, quiet
    self.done = self.trained = 0
    self.start = time.perf_counter()

  def skip(self, model_steps: int) -> None:
    """Work found done on disk (a resumed sweep): counts, but sets no pace."""
    self.done += model_steps

  def advance(self, model_steps: int, line: str) -> None:
    self.done += model_steps
    self.trained += model_steps
    if self.quiet:
      return
    pace = (time.perf_counter() - self.start) / max(self.trained, 1)
    print(f'{line} | sweep {100 * self.done / max(self.total, 1):.0f}%, '
          f'ETA {_format_eta((self.total - self.done) * pace)}', flush=True)


def _save(mngr: Any, states: Any, config: ml_collections.ConfigDict,
          step: int) -> None:
  mngr.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(states),
      config=ocp.args.JsonSave(config.to_dict())))


def _tb_dir(workdir: Path, name: str, seed: int, unit: str) -> Path:
  safe = name.replace(' ', ',').replace('/', '_')
  return workdir / 'tensorboard' / safe / f'seed{seed}' / unit


def layout(config: ml_collections.ConfigDict) -> parallel.DataParallel:
  """Where a group trains: as ``seqclf train`` does on one process's CPU
  devices (``pmap``: each model's batches split over the cores and its
  gradients averaged, as its single run's are), else on one device."""
  dp = parallel.setup(config.parallelism, config.batch_size)
  if dp.mode == 'sharded':
    return parallel.DataParallel('single', jax.local_devices()[:1])
  return dp


def _unit_states(config: ml_collections.ConfigDict,
                 settings: Sequence[Setting], seeds: Sequence[int],
                 grid_keys: Sequence[str], train: Split, validation: bool
                 ) -> tuple[ml_collections.ConfigDict,
                            list[ml_collections.ConfigDict], str, bool,
                            hyper.HyperState]:
  """A unit's fitted config, its models' configs (setting by setting, seed
  within), the path it runs, whether models watch for early stopping, and
  the initial stacked state: what ``run_unit`` trains and ``write_chosen``
  restores into."""
  # The model's statistics (`normalize`) from the data it trains on (a
  # fold's training part under --cv), as `seqclf train` fits them.
  config = normalization.fit(config, train)
  shape = train['image'].shape[1:]
  impl = autotune.resolve_impl(config, sequence_shape=shape)
  models = [(i, s) for i in range(len(settings)) for s in seeds]
  configs = [configured(config, settings[i]) for i, _ in models]
  for c, (_, s) in zip(configs, models):
    c.seed = s
  keys = varying_per_model(config, grid_keys)
  # Early stopping (config key `patience`, where it exists): each model's
  # watch lives in the stacked state, so a resume continues it exactly.
  watch = bool(config.get('patience', 0)) and validation
  states = hyper.init_states(config, [s for _, s in models],
                             [hyper.hparams_of(c, keys) for c in configs],
                             impl=impl, sequence_shape=shape, watch=watch)
  return config, configs, impl, watch, states


def run_unit(workdir: Path, unit: str, config: ml_collections.ConfigDict,
             settings: Sequence[Setting], names: Sequence[str],
             seeds: Sequence[int], grid_keys: Sequence[str], train: Split,
             evals: dict[str, Split], progress: Progress,
             stop: preemption.StopRequest | None = None) -> dict[str, Any]:
  """Trains every (setting, seed) of one group on ``train`` in one program,
  checkpointing in ``workdir/units/UNIT``; evaluates on ``evals``.

  A unit with a ``results.json`` is done and is read, not trained; one with
  checkpoints resumes from the newest (each batch and noise key is a
  function of seed and step, so the result is the uninterrupted one's).

  Args:
    workdir: the sweep's directory.
    unit: the unit's name (its folder under ``units/``).
    config: the group's config (``configured`` with its first setting).
    settings: the group's settings (``group_settings``: one program).
    names: their names in the table (``name_of``).
    seeds: the seeds each setting trains with.
    grid_keys: the grid's keys (those of ``PER_MODEL`` vary per model).
    train: the split the models train on.
    evals: split name -> split to evaluate the final models on;
      ``validation`` is also evaluated every ``eval_every`` steps.
    progress: the sweep's progress line.
    stop: the sweep's stop request (None: none); a signal it records stops
      the unit at its next chunk boundary with a checkpoint, raising
      ``preemption.Preempted``.

  Returns:
    ``{'models': [[setting index, seed], ...], 'metrics': {split: {name:
    per-model list}}, ...}``.
  """
  udir = workdir / 'units' / unit
  done = udir / 'results.json'
  total = config.num_train_steps
  models = [(i, s) for i in range(len(settings)) for s in seeds]
  if done.exists():
    saved = json.loads(done.read_text())
    if saved.get('models') != [[i, s] for i, s in models]:
      raise ConfigError(
          f'{udir} holds other models than this sweep groups there (a sweep '
          'an older seqclf grouped otherwise): finish it with that version, '
          'or use a fresh workdir.', arg='workdir')
    progress.skip(len(models) * total)
    return saved
  stop = stop or preemption.StopRequest()  # never entered: records nothing
  if stop.signum is not None:  # It came as the last unit finished.
    raise preemption.Preempted(stop.signum, None, str(workdir))
  udir.mkdir(parents=True, exist_ok=True)
  wall_start = time.perf_counter()
  order.check_batch_size(config.batch_size, len(train['label']))
  config, configs, impl, watch, states = _unit_states(
      config, settings, seeds, grid_keys, train, 'validation' in evals)
  patience = int(config.get('patience', 0) or 0)
  model_seeds = [s for _, s in models]
  mngr = checkpoint.manager(udir, config.max_to_keep)
  first = 0
  if mngr.latest_step() is not None:
    states, _ = checkpoint.restore(mngr, states, move_damaged=True)
    first = int(np.asarray(states.step)[0])
  progress.skip(len(models) * first)
  noise = any(steps.uses_noise(c) for c in configs)
  arrays = steps.data_args(train)
  # On the CPU the models run one after another, each its single run's
  # program (bitwise its result); an accelerator runs them vmapped.
  sequential = jax.default_backend() == 'cpu'
  run = hyper.steps_fn(config, noise, lengths=len(arrays) == 3,
                       class_weight=steps.class_weights(
                           config.class_weight, train['label'],
                           config.num_classes),
                       sequential=sequential)
  rngs = jax.vmap(steps.train_key)(jnp.asarray(model_seeds, jnp.uint32))
  dp = layout(config)
  chunks = loop.Chunks(dp.chunk_fn(run, len(arrays) + 1),
                       dp.put_data(*arrays, rngs), model_seeds,
                       len(train['label']), config.batch_size,
                       put_indices=dp.put_indices, to_run=dp.to_run,
                       from_run=dp.from_run, metrics=dp.metrics)
  # As `seqclf train` evaluates: over the devices, but the kernel on one.
  eval_devices = dp.devices[:1] if impl == 'kernel' else dp.devices
  writers = [metric_logging.ScalarWriter(_tb_dir(workdir, names[i], s, unit),
                                         first)
             for i, s in models]
  val, val_step = None, None
  stop.stop_after = loop.next_boundary(first, config)
  try:
    for start, step in loop.boundaries(first, config):
      if watch and not np.asarray(states.watch['active']).any():
        progress.skip(len(models) * (total - start))
        break  # Every model stopped: the group ends.
      states, metrics = chunks(states, start, step)
      loss = metrics['loss'][:, -1]
      for w, value in zip(writers, loss):
        w.add_scalar('train/loss', float(value), step)
      progress.advance(len(models) * (step - start), (
          f'{unit}: step {step}/{total}, loss over {len(models)} models '
          f'mean={np.nanmean(loss):.4f} min={np.nanmin(loss):.4f} '
          f'max={np.nanmax(loss):.4f} | {chunks.examples_per_second:,.0f} '
          'ex/s'))
      if 'validation' in evals and (step % config.eval_every == 0
                                    or step == total):
        val, val_step = split_metrics(steps.evaluate(
            states, evals['validation'], config.eval_batch_size,
            eval_devices, stacked=True, sequential=sequential)), step
        for k, w in enumerate(writers):
          for name, values in val.items():
            w.add_scalar(f'validation/{name}', float(values[k]), step)
          w.flush()  # A kill -9 later keeps the curves so far.
        if watch:
          metric = monitor_of(config).removeprefix('val_')
          sign = -1.0 if metric == 'loss' else 1.0
          states = hyper.observe(
              states, jnp.asarray(sign * val[metric], jnp.float32),
              jnp.int32(patience), jnp.int32(step))
      signum = stop.signum
      stop.stop_after = loop.next_boundary(step, config)
      if (step % config.checkpoint_every == 0 or step == total
          or signum is not None):
        _save(mngr, states, config, step)
      if signum is not None and step < total:
        mngr.wait_until_finished()
        raise preemption.Preempted(signum, step, str(mngr.directory))
    # The state the results are of is saved (a group whose models all
    # stopped early ends between checkpoints): `write_chosen` reads it.
    reached = int(np.asarray(states.step)[0])
    if mngr.latest_step() != reached:
      _save(mngr, states, config, reached)
    mngr.wait_until_finished()
  finally:
    for w in writers:
      w.close()
  stopped = {}
  if watch:  # Each model's result is its best evaluation's parameters.
    best_step = np.asarray(states.watch['best_step'])
    # The evaluation that ran out of patience: at the last step it just ends.
    ran_out = (best_step // config.eval_every + patience) * config.eval_every
    stopped = {'best_step': best_step.tolist(),
               'stopped_early': (~np.asarray(states.watch['active'])
                                 & (ran_out < total)).tolist()}
    states = states.replace(params=states.best_params)
  finite = np.stack([np.isfinite(np.asarray(x)).reshape(len(models), -1).all(1)
                     for x in jax.tree.leaves(states.params)]).all(0)
  # The last step's validation figures are those of the final parameters
  # (unless the best ones replaced them): not evaluated twice.
  final = {'validation': val} if val_step == total and not watch else {}
  out = {
      'unit': unit, 'models': [[i, s] for i, s in models],
      'metrics': {name: {m: v.tolist() for m, v in (final.get(name) or (
          split_metrics(steps.evaluate(
              states, split, config.eval_batch_size, eval_devices,
              stacked=True, sequential=sequential)))).items()}
                  for name, split in evals.items()},
      'count': {name: len(split['label']) for name, split in evals.items()},
      'diverged': (~finite).tolist(), 'resumed_from_step': first or None,
      'saved_step': reached,
      **stopped,
      **loop.results(chunks, config, step=total, impl=impl,
                     wall_start=wall_start),
  }
  loop.write_json(done, out)
  return out


CHOSEN_DIR = 'chosen'  # W/chosen/seedS: the chosen setting's models


def write_chosen(workdir: Path, unit: dict[str, Any],
                 config: ml_collections.ConfigDict,
                 settings: Sequence[Setting], position: int,
                 grid_keys: Sequence[str], train: Split, row: dict[str, Any],
                 data_keys: Any) -> list[Path]:
  """Writes the chosen setting's models as run workdirs, ``W/chosen/seedS``.

  Each holds the trainer's checkpoint (``state``: step, params, optimizer
  state; ``config``: the model's config with its fitted statistics) and a
  ``results.json`` of its sweep figures, so ``seqclf evaluate``,
  ``predict``, ``export``, ``report`` and ``load_model`` read it as a run's;
  with early stopping its params are its best evaluation's (the checkpoint
  numbered by that step). ``seqclf train`` refuses to continue one
  (``results.json``'s ``chosen_by_sweep``): with early stopping or ``--cv``
  it is not a state a single run reaches.

  Args:
    workdir: the sweep's directory.
    unit: ``run_unit``'s results of the unit holding the models.
    config: that unit's config (as ``run_unit`` was given it).
    settings: that unit's settings; ``settings[position]`` is the chosen.
    grid_keys: the grid's keys.
    train: the split the unit trained on.
    row: the chosen setting's row of the table (its per-seed figures).
    data_keys: ``config -> config`` with the data's keys
      (``registry.with_data_keys`` of the data the models trained on).

  Returns:
    The workdirs written (none for a unit of an older seqclf that did not
    save the state of its results).
  """
  mngr = checkpoint.manager(workdir / 'units' / unit['unit'], create=False)
  step = unit.get('saved_step')
  if step is None or step not in mngr.all_steps():
    print(f'note: {mngr.directory} lacks the state its results are of (a '
          'sweep of an older seqclf, or deleted): no models written to '
          f'{workdir / CHOSEN_DIR}.', file=sys.stderr)
    return []
  seeds = row['seeds']
  _, configs, _, watch, target = _unit_states(
      config, settings, seeds, grid_keys, train, 'best_step' in unit)
  states, _ = checkpoint.restore(mngr, target, step)
  params = states.best_params if watch else states.params
  out = []
  for j, seed in enumerate(seeds):
    k = position * len(seeds) + j
    model = lambda tree: jax.tree.map(lambda x: np.asarray(x)[k], tree)
    run_config = data_keys(configs[k])
    run = workdir / CHOSEN_DIR / f'seed{seed}'
    shutil.rmtree(run, ignore_errors=True)  # Half written by a killed sweep.
    run = errors.writable_dir(run)
    run_mngr = checkpoint.manager(run)
    # With early stopping its params are its best evaluation's: numbered by
    # that step, as `seqclf train` numbers its best checkpoint.
    saved_at = int(unit['best_step'][k]) if watch else step
    checkpoint.save(run_mngr, state_lib.TrainState(
        step=np.int32(saved_at), apply_fn=None, params=model(params), tx=None,
        opt_state=model(states.opt_state)), run_config)
    checkpoint.wait(run_mngr)
    figures = {f'{prefix}_{m}': f['values'][j]
               for prefix, split in (('val', 'validation'), ('test', 'test'))
               for m, f in row[split].items()}
    loop.write_json(run / 'results.json', {
        **figures, 'step': step,
        'examples_seen': step * run_config.batch_size,
        'wall_seconds': unit['wall_seconds'], 'devices': unit['devices'],
        'impl': unit['impl'], 'config': run_config.to_dict(),
        **({'best_step': unit['best_step'][k], 'monitor': monitor_of(config),
            'stopped_early': unit['stopped_early'][k]} if watch else {}),
        'chosen_by_sweep': {'workdir': str(workdir), 'setting': row['setting'],
                            'seed': seed, 'unit': unit['unit']}})
    out.append(run)
  return out


# ---------------------------------------------------------------------------
# The sweep.


def _spec(config: ml_collections.ConfigDict, grid: dict[str, list[Any]],
          num_seeds: int, cv: int, data: str, samples: int) -> dict[str, Any]:
  """What makes a sweep this sweep; ``data``: ``splits.digest`` of its data."""
  return json.loads(json.dumps({'config': config.to_dict(), 'grid': grid,
                                'seeds': num_seeds, 'cv': cv, 'data': data,
                                'samples': samples}, default=str))


def _differ(saved: dict[str, Any], spec: dict[str, Any]) -> list[str]:
  """The parts of ``spec`` that a saved sweep's differ in. Keys absent from
  ``saved`` (added to seqclf after it was written) are not compared, and an
  ``npz:`` path to the same data (``same_dataset``) is the same,
  as ``check_resume`` does for a run."""
  out = [k for k in spec
         if k != 'config' and k in saved and saved[k] != spec[k]]
  config = saved.get('config', {})
  return out + [f'config.{k}' for k, v in spec['config'].items()
                if k in config and config[k] != v
                and not (k == 'dataset' and same_dataset(
                    config[k], v, saved.get('data'), spec['data']))]


def _check_spec(workdir: Path, spec: dict[str, Any]) -> None:
  """Writes ``workdir/sweep.json``, or checks the one there is this sweep's."""
  path = workdir / 'sweep.json'
  if path.exists():
    differ = _differ(json.loads(path.read_text()), spec)
    if differ:
      raise ConfigError(
          f'{workdir} holds another sweep (different {", ".join(differ)}): '
          'run its own command to resume it, or use a fresh workdir.',
          arg='workdir')
  else:
    loop.write_json(path, spec)


def check_settings(configs: Sequence[ml_collections.ConfigDict],
                   settings: Sequence[Setting], raw: dict[str, Split]) -> None:
  """Checks the data against every setting's config before anything
  trains, as ``seqclf train`` checks its one: labels within ``num_classes``,
  NaN only where ``missing='impute'``, channels ``normalize`` can scale,
  classes ``class_weight='balanced'`` can weigh, a batch that fits. A setting
  the data cannot serve is one ``ConfigError`` line naming it, not a model
  trained on NaN or a sweep stopped half-way."""
  labels_checked, fits_checked = set(), set()
  for c, setting in zip(configs, settings):
    fit = json.dumps([c[k] for k in ('num_classes', 'normalize', 'task',
                                     'input_mean', 'input_std', 'class_weight',
                                     'batch_size')], default=str)
    try:
      if (c.num_classes, c.missing) not in labels_checked:
        registry.check(raw, c.num_classes, c.dataset, c.missing)
        labels_checked.add((c.num_classes, c.missing))
      if fit not in fits_checked:
        train = views.view_splits(c, {'train': raw['train']})['train']
        normalization.fit(c, train)
        steps.class_weights(c.class_weight, train['label'], c.num_classes)
        order.check_batch_size(c.batch_size, len(train['label']))
        fits_checked.add(fit)
    except errors.SeqclfError as e:
      raise ConfigError(f'--grid setting {name_of(setting)}: {e}',
                        arg='grid') from None


def run_sweep(config: ml_collections.ConfigDict, workdir: str | Path,
              num_seeds: int, learning_rates: Sequence[float] | None = None,
              *, grid: dict[str, Sequence[Any]] | None = None, cv: int = 0,
              samples: int = 0, quiet: bool = False,
              datasets: dict[str, Split] | None = None) -> dict[str, Any]:
  """Trains every setting of ``grid`` × ``num_seeds`` seeds and compares them.

  Resumable: the same call on the same workdir continues a killed sweep (its
  groups' checkpoints) to the uninterrupted sweep's results, and returns a
  finished sweep's saved results (``already_finished: True``).

  Args:
    config: the base config (validated here); ``config.monitor`` (where the
      key exists and is not ``'last'``) names the validation metric that
      chooses, else ``val_accuracy``.
    workdir: the sweep's directory: ``results.json``, ``results.md``,
      ``results.csv``, ``units/`` (checkpoints), ``tensorboard/``,
      ``chosen/seedS`` (the chosen setting's models, ``write_chosen``).
    num_seeds: models per setting, seeds ``config.seed + k``.
    learning_rates: shorthand for ``grid={'learning_rate': ...}``.
    grid: config key -> values; the settings are their cartesian product
      (``settings_of``). None: the config alone.
    cv: 0: score on the validation split; K >= 2: stratified K-fold
      cross-validation over the training split (train and validation), then
      the chosen setting trains on all of it for the test figures.
    samples: N > 0: train N settings of the grid drawn at random
      (``sample``, from ``config.seed``); 0: all.
    quiet: print nothing.
    datasets: the splits, as ``train.train_and_evaluate`` takes them.

  Returns:
    The results written to ``workdir/results.json``: ``rows`` (one per
    setting: ``validation`` and ``test`` metrics as mean, std and per-seed
    values), ``chosen``, and per-model lists of the chosen or only setting.
  """
  wall_start = time.perf_counter()
  config = validate(config)
  for key, allowed in (('data_placement', ('device', 'auto')),
                       ('bucket_by_length', (False,))):
    if config[key] not in allowed:
      raise ConfigError(
          f'seqclf sweep keeps the training set on the device and gathers '
          f"every model's batches there: set config key `{key}` to "
          f'{allowed[0]!r} ({key}={config[key]!r} is for seqclf train).',
          arg=f'config.{key}')
  grid = dict(grid or {})
  if learning_rates is not None:
    if 'learning_rate' in grid:
      raise ConfigError('learning_rates is shorthand for a grid over '
                        '`learning_rate`, which the grid names too: give the '
                        'rates once.', arg='learning_rates')
    grid = {'learning_rate': [float(r) for r in learning_rates], **grid}
  if num_seeds < 1:
    raise ConfigError(f'num_seeds must be >= 1, got {num_seeds}.',
                      arg='num_seeds')
  if samples < 0:
    raise ConfigError(f'samples must be >= 0 (0: the whole grid), got '
                      f'{samples}.', arg='samples')
  every = settings_of(config, grid)
  settings = sample(every, samples, config.seed)
  if samples >= len(every) > 1 and not quiet:
    print(f"note: samples={samples} is not fewer than the grid's "
          f'{len(every)} settings: training them all.', file=sys.stderr)
  grid = {k: list(v) for k, v in grid.items()}
  seeds = [config.seed + k for k in range(num_seeds)]
  monitor = monitor_of(config)
  configs = [configured(config, s) for s in settings]
  raw = datasets or registry.load(configured(config, {
      # Read as the most lenient setting would; each is checked below.
      'num_classes': max(c.num_classes for c in configs),
      'missing': ('impute' if any(c.missing == 'impute' for c in configs)
                  else config.missing)}))
  check_settings(configs, settings, raw)
  label_names = [] if datasets else registry.label_names(config.dataset)
  # Class names that conflict with the labels fail before anything is written.
  digest = registry.with_data_keys(config, raw, label_names).data_digest
  if cv:  # Bad folds fail before anything is written.
    labels = np.concatenate([raw['train']['label'], raw['validation']['label']])
    stratified_folds(labels, cv, names=label_names)
  refuse_run(workdir)
  workdir = errors.writable_dir(workdir)
  spec = _spec(config, grid, num_seeds, cv, digest, samples)
  # SIGTERM or Ctrl-C: the running unit saves at its next chunk boundary
  # and `preemption.Preempted` is raised, as `seqclf train` stops.
  with WorkdirLock(workdir), preemption.StopRequest() as stop:
    _check_spec(workdir, spec)
    finished = workdir / 'results.json'
    if finished.exists():
      saved = json.loads(finished.read_text())
      if 'spec' in saved and not _differ(saved['spec'], spec):
        return {**saved, 'already_finished': True}
    results = _run(config, workdir, settings, grid, seeds, cv, monitor, raw,
                   label_names, quiet, stop)
    results.update(spec=spec, grid_size=len(every),
                   wall_seconds=time.perf_counter() - wall_start)
    _write(workdir, results)
  return results


def _run(config, workdir, settings, grid, seeds, cv, monitor, raw,
         label_names, quiet, stop):
  names = [name_of(s) for s in settings]
  groups = group_settings(config, settings)
  configs = [configured(config, settings[g[0]]) for g in groups]
  units_per_group = cv or 1
  total = sum(len(g) * len(seeds) * c.num_train_steps * units_per_group
              for g, c in zip(groups, configs))
  # The --cv refit, at most the longest setting's steps, counted from the
  # start: the percentage never goes back.
  refit_at_most = (len(seeds) * max(c.num_train_steps for c in configs)
                   if cv else 0)
  progress = Progress(total + refit_at_most, quiet)
  per_setting: list[dict[str, Any]] = [{} for _ in settings]
  outs = []
  for gi, (group, gconfig) in enumerate(zip(groups, configs)):
    data = views.view_splits(gconfig, raw)
    sub = [settings[i] for i in group]
    sub_names = [names[i] for i in group]
    if not cv:
      pairs = [(f'g{gi}', data['train'],
                {'validation': data['validation'], 'test': data['test']})]
    else:
      pool = splits_lib.training_split(data)
      parts = stratified_folds(pool['label'], cv)
      pairs = [(f'g{gi}-fold{f}',
                _take(pool, np.sort(np.concatenate(parts[:f] + parts[f + 1:]))),
                {'validation': _take(pool, part)})
               for f, part in enumerate(parts)]
    fold_outs = [run_unit(workdir, unit, gconfig, sub, sub_names, seeds,
                          list(grid), fit, evals, progress, stop)
                 for unit, fit, evals in pairs]
    outs += fold_outs
    for j, i in enumerate(group):
      rows_of = slice(j * len(seeds), (j + 1) * len(seeds))
      for split in ('validation', 'test'):
        parts = [(np.asarray(o['metrics'][split][m])[rows_of],
                  o['count'][split], m)
                 for o in fold_outs if split in o['metrics']
                 for m in o['metrics'][split]]
        if not parts:
          continue
        metrics = dict.fromkeys(m for _, _, m in parts)
        # Folds pooled by their sizes: each held-out example counts once.
        per_setting[i][split] = {m: _summary(
            sum(v * n for v, n, mm in parts if mm == m)
            / sum(n for _, n, mm in parts if mm == m)) for m in metrics}
      per_setting[i]['group'] = gi
      if cv and 'best_step' in fold_outs[0]:  # Early stopping in the folds.
        per_setting[i]['best_steps'] = [
            b for o in fold_outs for b in o['best_step'][rows_of]]
  rows = [{'name': names[i], 'setting': settings[i], 'group': p['group'],
           'seeds': seeds, 'validation': p['validation'],
           'test': p.get('test', {}), 'chosen': False}
          for i, p in enumerate(per_setting)]
  chosen = choose(rows, monitor)
  rows[chosen]['chosen'] = True
  refit_steps = None
  if cv:  # The chosen setting on the whole training split, for test.
    cconfig = configured(config, settings[chosen])
    unit = f'final-{chosen}'
    best_steps = per_setting[chosen].get('best_steps')
    if best_steps:  # No validation to stop on: as long as the folds ran.
      refit_steps = max(1, int(np.round(np.mean(best_steps))))
      cconfig.num_train_steps = refit_steps
      unit += f'-steps{refit_steps}'
    data = views.view_splits(cconfig, raw)
    pool = splits_lib.training_split(data)
    progress.total += len(seeds) * cconfig.num_train_steps - refit_at_most
    final = run_unit(workdir, unit, cconfig, [settings[chosen]],
                     [names[chosen]], seeds, list(grid), pool,
                     {'test': data['test']}, progress, stop)
    outs.append(final)
    rows[chosen]['test'] = {m: _summary(v) for m, v in
                            final['metrics']['test'].items()}
    trained_on = splits_lib.refit_splits(raw)
    chosen_dirs = write_chosen(workdir, final, cconfig, [settings[chosen]], 0,
                               list(grid), pool, rows[chosen], lambda c:
                               registry.with_data_keys(c, trained_on,
                                                       label_names))
  else:
    gi = rows[chosen]['group']
    chosen_dirs = write_chosen(
        workdir, outs[gi], configs[gi], [settings[i] for i in groups[gi]],
        groups[gi].index(chosen), list(grid),
        views.view_splits(configs[gi], raw)['train'], rows[chosen],
        lambda c: registry.with_data_keys(c, raw, label_names))
  chosen_row = rows[chosen]
  models = [(i, s) for i in range(len(settings)) for s in seeds]
  train_seconds = sum(o['train_seconds'] for o in outs)
  examples = sum(o['train_examples_per_second'] * o['train_seconds']
                 for o in outs if o['train_examples_per_second'])
  results: dict[str, Any] = {
      'rows': rows, 'chosen': chosen_row['name'],
      'chosen_setting': chosen_row['setting'], 'monitor': monitor,
      'selected_on': f'{cv}-fold cross-validation' if cv else 'validation',
      'refit_steps': refit_steps,
      'grid': grid, 'cv': cv, 'num_seeds': len(seeds),
      'num_groups': len(groups), 'num_models': len(models),
      'seeds': [s for _, s in models],
      'learning_rates': [configured(config, settings[i]).learning_rate
                         for i, _ in models],
      'diverged': [d for o in outs[:len(outs) - bool(cv)]
                   for d in o['diverged']],
      'examples_seen_per_model': config.num_train_steps * config.batch_size,
      'train_examples_per_second': examples / train_seconds if train_seconds
      else None,
      'train_seconds': train_seconds,
      'compile_seconds': sum(o['compile_seconds'] for o in outs),
      'step': outs[-1]['step'], 'impl': outs[-1]['impl'],
      'devices': outs[-1]['devices'], 'jax_version': jax.__version__,
      'machine': machine(), 'config': config.to_dict(),
      'chosen_models': [str(d) for d in chosen_dirs],
  }
  # Every model's test figures in one list (the chosen setting's under cv),
  # as `seqclf sweep` gave them before grids.
  acc = np.concatenate([r['test']['accuracy']['values'] for r in rows
                        if 'accuracy' in r.get('test', {})])
  if len(acc):
    results.update(
        test_accuracies=acc.tolist(), test_accuracy_mean=float(acc.mean()),
        test_accuracy_std=_std(acc), test_accuracy_min=float(acc.min()),
        test_losses=[v for r in rows if r['test']
                     for v in r['test']['loss']['values']])
  results['val_accuracies'] = [v for r in rows
                               for v in r['validation']['accuracy']['values']]
  if list(grid) == ['learning_rate']:
    results['by_learning_rate'] = {
        repr(r['setting']['learning_rate']): {
            'test_accuracies': r['test']['accuracy']['values'],
            'test_accuracy_mean': r['test']['accuracy']['mean'],
            'test_accuracy_std': r['test']['accuracy']['std']}
        for r in rows if r['test']}
  _hparams(workdir, rows)
  return results


def _hparams(workdir: Path, rows: Sequence[dict[str, Any]]) -> None:
  """TensorBoard's HParams table: one run per setting, its mean figures."""
  writer = metric_logging.tensorboardX.SummaryWriter(
      str(workdir / 'tensorboard' / 'hparams'))
  try:
    for r in rows:
      values = {k: v if isinstance(v, (int, float, str, bool)) else str(v)
                for k, v in r['setting'].items()} or {'config': 'base'}
      metrics = {f'hparam/{"val" if s == "validation" else s}_{m}': f['mean']
                 for s in ('validation', 'test') for m, f in r[s].items()}
      writer.add_hparams(values, metrics, name=r['name'].replace(' ', ','))
  finally:
    writer.close()


def _write(workdir: Path, results: dict[str, Any]) -> None:
  """The table as Markdown and CSV, then ``results.json`` (last: a sweep
  with it is finished)."""
  results['table'] = markdown(results)
  (workdir / 'results.md').write_text(results['table'])
  (workdir / 'results.csv').write_text(_csv(results))
  loop.write_results(workdir, results)
