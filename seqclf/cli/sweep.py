"""``seqclf sweep``: a grid over config keys × seeds, one program per group,
resumable, chosen on validation and compared in one table."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

from absl import flags

from seqclf import sweep
from seqclf.cli import common, plots
from seqclf.errors import UsageError
from seqclf.training import parallel

SUMMARY = ('Train a grid of settings (any config keys) x seeds, same-shape '
           'settings in one program, each model as `seqclf train` trains it; '
           'resumable; one table and a plot, the setting chosen on validation '
           '(or K folds), its models kept as runs in WORKDIR/chosen/seedS.')
USAGE = ('--config NAME|FILE --workdir DIR [--seeds N] '
         '[--grid KEY=V1,V2 ...] [--samples N] [--cv K] [--learning_rates A,B]')
FLAGS = flags.FlagValues()
CONFIG = common.define_config(FLAGS)
_WORKDIR = common.define_workdir(FLAGS)
_SEEDS = flags.DEFINE_integer(
    'seeds', 5, 'Models per setting, seeds config.seed + 0..N-1.',
    flag_values=FLAGS)
_GRID = flags.DEFINE_multi_string(
    'grid', [], 'KEY=V1,V2: values of a config key to cross with the others '
    '(repeat the flag per key), e.g. --grid hidden_size=64,128 --grid '
    "dropout_rate=0,0.2. A config file's get_grid() gives keys too.",
    flag_values=FLAGS)
_CV = flags.DEFINE_integer(
    'cv', 0, 'Score settings by stratified K-fold cross-validation over the '
    'training split (0: on the validation split); the chosen setting then '
    'trains on the whole training split for the test figures.',
    flag_values=FLAGS)
_SAMPLES = flags.DEFINE_integer(
    'samples', 0, 'Train N settings of the grid drawn at random (random '
    'search, from config.seed), for a grid too large to train whole; 0: '
    'every setting.', flag_values=FLAGS)
_LEARNING_RATES = flags.DEFINE_list(
    'learning_rates', None, 'Shorthand for --grid learning_rate=A,B.',
    flag_values=FLAGS)
_QUIET = common.define_quiet(FLAGS)
COMPILATION_CACHE = common.define_compilation_cache(FLAGS)
# The library's argument names that are spelled otherwise here.
ARG_FLAGS = {'num_seeds': 'seeds'}
PLOT_FILE = 'sweep.png'  # W/sweep.png: the settings on the metric that chose


def _file_grid() -> dict:
  """The ``--config`` file's ``get_grid()`` (if it defines one)."""
  name = FLAGS['config'].config_filename.split(':', 1)[0]
  path = common.resolve_config(name)
  spec = importlib.util.spec_from_file_location('seqclf_sweep_grid', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  get_grid = getattr(module, 'get_grid', None)
  if get_grid is None:
    return {}
  grid = get_grid()
  if not isinstance(grid, dict):
    raise UsageError(f'get_grid() of {path} must return a dict of key -> '
                     f'values, got {type(grid).__name__}.')
  return grid


def main(args: list[str]) -> None:
  del args
  rates = None
  if _LEARNING_RATES.value:
    try:
      rates = [float(r) for r in _LEARNING_RATES.value]
    except ValueError as e:
      raise UsageError(f'--learning_rates takes numbers, e.g. '
                       f'--learning_rates=1e-3,3e-3 ({e}).') from e
  config = common.config_of(CONFIG, 'sweep')
  grid = {**_file_grid(), **sweep.parse_grid(_GRID.value)}
  # One CPU device per core, as `seqclf train` has, with a batch that every
  # batch size of the grid splits into; a bad grid is refused before.
  sweep.settings_of(config, grid)
  batch = math.gcd(config.batch_size, *grid.get('batch_size', []))
  parallel.configure_cpu_devices(config.cpu_devices, batch)
  workdir = Path(common.require(_WORKDIR, 'sweep')).expanduser()
  results = sweep.run_sweep(config, workdir, _SEEDS.value, rates, grid=grid,
                            cv=_CV.value, samples=_SAMPLES.value,
                            quiet=_QUIET.value)
  plot = plots.save(plots.sweep_settings(results['rows'], results['monitor']),
                    workdir / PLOT_FILE)
  print(results['table'])
  row = next(r for r in results['rows'] if r['chosen'])
  figures = lambda split: ', '.join(
      f'{m} {sweep.figure(row[split][m])}'
      for m in sweep.metric_order(row[split]))
  folds = (f' (each on {results["cv"]} folds, then the chosen setting\'s '
           'on the whole training split)' if results['cv'] else '')
  print(f'Chosen: {row["name"]} (validation: {figures("validation")}; '
        f'test: {figures("test") or "none"}). {results["num_models"]} models '
        f'in {results["num_groups"]} groups{folds}, '
        f'{results["wall_seconds"]:.1f} s.')
  diverged = sum(results.get('diverged', []))
  if diverged:
    print(f'note: {diverged} model(s) diverged (non-finite parameters): '
          'their settings rank last; lower their learning_rate.')
  if results.get('chosen_models'):
    print(f'Its models, one workdir per seed for seqclf evaluate, predict, '
          f'export and report: {", ".join(results["chosen_models"])}.')
  print(f'Plot: {plot}')
