"""``seqclf sweep``: several seeds (and learning rates) at once, by vmap."""

from __future__ import annotations

from absl import flags

from seqclf import sweep
from seqclf.cli import common
from seqclf.errors import UsageError

SUMMARY = ('Train models for several seeds (and learning rates) at once under '
           'jax.vmap; mean and std of their test accuracy.')
USAGE = ('--config NAME|FILE --workdir DIR [--seeds N] '
         '[--learning_rates A,B]')
FLAGS = flags.FlagValues()
CONFIG = common.define_config(FLAGS)
_WORKDIR = common.define_workdir(FLAGS)
_SEEDS = flags.DEFINE_integer(
    'seeds', 5, 'Models per learning rate, seeds config.seed + 0..N-1.',
    flag_values=FLAGS)
_LEARNING_RATES = flags.DEFINE_list(
    'learning_rates', None, "Learning rates to cross with the seeds (default: "
    "the config's), e.g. --learning_rates=1e-3,3e-3.", flag_values=FLAGS)
_QUIET = common.define_quiet(FLAGS)
COMPILATION_CACHE = common.define_compilation_cache(FLAGS)
# The library's argument names that are spelled otherwise here.
ARG_FLAGS = {'num_seeds': 'seeds'}


def main(args: list[str]) -> None:
  del args
  rates = None
  if _LEARNING_RATES.value:
    try:
      rates = [float(r) for r in _LEARNING_RATES.value]
    except ValueError as e:
      raise UsageError(f'--learning_rates takes numbers, e.g. '
                       f'--learning_rates=1e-3,3e-3 ({e}).') from e
  results = sweep.run_sweep(common.config_of(CONFIG, 'sweep'),
                            common.require(_WORKDIR, 'sweep'), _SEEDS.value,
                            rates, quiet=_QUIET.value)
  accs = ' '.join(f'{a:.4f}' for a in results['test_accuracies'])
  print(f'Test accuracy over {results["num_models"]} models: '
        f'{results["test_accuracy_mean"]:.4f} ± '
        f'{results["test_accuracy_std"]:.4f} ({accs}; step {results["step"]}, '
        f'{results["wall_seconds"]:.1f} s)')
