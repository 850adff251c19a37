"""``seqclf train``: train a config in a workdir, resuming where it stopped."""

from __future__ import annotations

import os

import jax
from absl import flags

from seqclf import config as config_lib, train
from seqclf.cli import common
from seqclf.errors import UsageError
from seqclf.training import parallel

SUMMARY = ('Train a config in a workdir; resumes from its latest checkpoint, '
           'prints the saved result of a finished run.')
USAGE = '--config NAME|FILE --workdir DIR [--config.KEY=VALUE ...]'
FLAGS = flags.FlagValues()
CONFIG = common.define_config(FLAGS)
_WORKDIR = common.define_workdir(FLAGS)
_REPORT = flags.DEFINE_bool(
    'report', True, 'After training, write WORKDIR/plots/*.png and '
    'WORKDIR/report.md (--noreport to skip).', flag_values=FLAGS)
_QUIET = common.define_quiet(FLAGS)
COMPILATION_CACHE = common.define_compilation_cache(FLAGS)
_COORDINATOR = flags.DEFINE_string(
    'coordinator', None, 'Multi-process training: HOST:PORT of process 0 '
    '(default: $JAX_COORDINATOR_ADDRESS or a detected cluster).',
    flag_values=FLAGS)
_NUM_PROCESSES = flags.DEFINE_integer(
    'num_processes', None, 'Multi-process training: number of processes.',
    flag_values=FLAGS)
_PROCESS_ID = flags.DEFINE_integer(
    'process_id', None, 'Multi-process training: this process, 0..N-1.',
    flag_values=FLAGS)


def _init_distributed() -> bool:
  """Joins a multi-process job when asked to, before JAX touches a device."""
  given = (_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  if given == (None, None, None) and 'JAX_COORDINATOR_ADDRESS' not in os.environ:
    return False
  n, i = _NUM_PROCESSES.value, _PROCESS_ID.value
  if n is not None and n < 1:
    raise UsageError(f'--num_processes must be >= 1, got {n}.')
  if i is not None and n is not None and not 0 <= i < n:
    raise UsageError(f'--process_id must be in 0..{n - 1}, got {i}.')
  coordinator = _COORDINATOR.value
  if coordinator is not None and not coordinator.rpartition(':')[2].isdigit():
    raise UsageError(f'--coordinator must be HOST:PORT, got {coordinator!r}.')
  try:
    parallel.initialize_distributed(coordinator, n, i)
  except ValueError as e:  # jax's: what it could not find (no cluster here)
    raise UsageError(
        f'Cannot join a multi-process job: {str(e).rstrip(".")}: give '
        '--coordinator HOST:PORT of process 0 (or set $JAX_COORDINATOR_ADDRESS'
        '), --num_processes and --process_id.') from None
  return True


def main(args: list[str]) -> None:
  del args
  config = config_lib.validate(common.config_of(CONFIG, 'train'))
  if not _init_distributed():  # Multi-process jobs set their own topology.
    parallel.configure_cpu_devices(config.cpu_devices, config.batch_size)
  workdir = common.require(_WORKDIR, 'train')
  results = train.train_and_evaluate(config, workdir, quiet=_QUIET.value)
  if jax.process_index() != 0:
    return
  if _REPORT.value and not results.get('already_finished'):
    # Imported here: matplotlib is a third of the command's start-up, and
    # runs with --noreport never need it.
    from seqclf.cli import report  # pylint: disable=g-import-not-at-top
    report.write_and_say(workdir, quiet=_QUIET.value)  # A finished run's
  best = results.get('best_step')
  at = (f'best step {best} of {results["step"]} by {results["monitor"]}'
        if best is not None else f'step {results["step"]}')
  print(f'Test accuracy: {results["test_accuracy"]:.4f} '  # stays as it was.
        f'(validation {results["val_accuracy"]:.4f}, {at}, '
        f'{results["wall_seconds"]:.1f} s)')
