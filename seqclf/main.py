"""The ``seqclf`` command line (``seqclf --help``, ``seqclf COMMAND --help``).

  seqclf prepare-data [--data_dir DIR] [--dataset NAME] [--force]
  seqclf train --config default --workdir runs/default [--config.KEY=VALUE …]
  seqclf evaluate --workdir runs/default
  seqclf predict --workdir runs/default FILE …   # images, or .npy/.npz/.csv series
  seqclf report --workdir runs/default          # plots + report.md (train does it too)
  seqclf inspect-data [--dataset NAME|npz:PATH] [--split test --indices 1 2 3] [--out DIR]
  seqclf sweep --config default --workdir runs/sweep --seeds 5 [--learning_rates 1e-3,3e-3]

``--config`` is a packaged config's name (``seqclf/configs/NAME.py``) or a
path to a config file. Config files are Python and are executed when loaded:
only name files you trust.

Exit status: 0 done; 2 bad input (a ``seqclf.errors.SeqclfError``: one line
on stderr naming the fix, a full disk included); 3 a diverged run; 75
stopped by a first SIGTERM or Ctrl-C after saving a checkpoint (resume by
running the same command); 130 (143 for SIGTERM) a second Ctrl-C, which
stops at once, the newest complete checkpoint kept. Any other exception is a
bug in seqclf and is shown with its traceback (exit 1).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import sys
import traceback
from pathlib import Path

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from seqclf import datasets
from seqclf.errors import SeqclfError, UsageError, writable_dir

CONFIG_DIR = Path(__file__).resolve().parent / 'configs'  # packaged configs


def config_names() -> list[str]:
  """Names ``--config`` takes for the packaged configs (``seqclf/configs``)."""
  return sorted(p.stem for p in CONFIG_DIR.glob('*.py')
                if not p.stem.startswith('_'))


def resolve_config(value: str) -> str:
  """``--config``'s file: a bare name (no ``/``, no ``.py``) is a packaged
  config, anything else a path; either way a ``UsageError`` unless it exists."""
  if '/' not in value and not value.endswith('.py'):
    path = CONFIG_DIR / f'{value}.py'
    if value not in config_names():
      raise UsageError(f'Unknown config {value!r}: use one of '
                       f'{", ".join(config_names())}, or a path to a .py file.')
    return str(path)
  if not Path(value).expanduser().is_file():
    raise UsageError(f'Config file {value} does not exist: give a path to a '
                     f'.py file, or one of {", ".join(config_names())}.')
  return str(Path(value).expanduser())


def load_config_file(value: str):
  """``get_config(*args)`` of ``--config``'s ``FILE[:ARGS]``, with a bad file
  (missing, no ``get_config``, an error running it) as one ``UsageError``."""
  name, *args = value.split(':', 1)
  path = resolve_config(name)
  try:
    spec = importlib.util.spec_from_file_location(
        f'seqclf_config_{Path(path).stem}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not callable(getattr(module, 'get_config', None)):
      raise UsageError(f'Config file {path} must define get_config().')
    return module.get_config(*args)
  except SeqclfError:
    raise
  except SyntaxError as e:
    raise UsageError(f'Config file {path}, line {e.lineno}: {e.msg}.') from e
  except Exception as e:  # pylint: disable=broad-except
    lines = [f.lineno for f in traceback.extract_tb(e.__traceback__)
             if Path(f.filename).resolve() == Path(path).resolve()]
    where = f', line {lines[-1]}' if lines else ''
    raise UsageError(f'Config file {path}{where}: {type(e).__name__}: {e}'
                     ) from e


class _ConfigParser(flags.ArgumentParser):
  """Replaces config_flags' file parser: ``--config NAME`` and one-line errors
  (config_flags' own show its internal module name and defer the failure)."""

  def parse(self, argument):
    config = load_config_file(argument)
    if callable(getattr(config, 'lock', None)):
      config.lock()
    return config

  def flag_type(self):
    return 'config object'


_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'A packaged config\'s name (`configs:` below) or '
    'a path to a config file defining get_config(); --config.KEY=VALUE '
    'overrides one key.', lock_config=True)
flags.FLAGS['config'].parser = _ConfigParser()
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory.')
_DATA_DIR = flags.DEFINE_string(
    'data_dir', None, 'tfds data dir for prepare-data/evaluate/inspect-data '
    '(default: '
    "the config's, else $TFDS_DATA_DIR or ~/tensorflow_datasets).")
_DATASET = flags.DEFINE_string(
    'dataset', 'mnist', f'prepare-data: which dataset to fetch, verify and '
    f'prepare, one of {", ".join(datasets.TFDS)}; inspect-data: which to '
    "describe, one of those (prepared) or 'npz:PATH' (your own arrays).")
_FORCE = flags.DEFINE_bool(
    'force', False, 'prepare-data: build the prepared files again from the '
    'verified source files (after a damaged or truncated one).')
_SEEDS = flags.DEFINE_integer(
    'seeds', 5, 'sweep: models per learning rate, seeds config.seed + 0..N-1.')
_LEARNING_RATES = flags.DEFINE_list(
    'learning_rates', None, 'sweep: learning rates to cross with the seeds '
    '(default: the config\'s), e.g. --learning_rates=1e-3,3e-3.')
_QUIET = flags.DEFINE_bool('quiet', False, 'Print only the final results.')
_REPORT = flags.DEFINE_bool(
    'report', True, 'After train, write WORKDIR/plots/*.png and '
    'WORKDIR/report.md (--noreport to skip).')
_SPLIT = flags.DEFINE_string('split', 'test', 'inspect-data: split to sample.')
_INDICES = flags.DEFINE_list(
    'indices', ['100', '101', '102'], 'inspect-data: sample indices in the '
    'split (`--indices 100 101 102` or `--indices=100,101,102`).')
_OUT = flags.DEFINE_string('out', 'runs/inspect-data',
                           'inspect-data: directory for the PNGs; export: '
                           'directory for the exported model (required).')
_COMPILATION_CACHE = flags.DEFINE_string(
    'compilation_cache', '~/.cache/seqclf/jax', "JAX's persistent compilation "
    'cache: a repeated run (another seed, a resume, a sweep) loads its XLA '
    "programs instead of compiling them again; '' turns it off. "
    '$JAX_COMPILATION_CACHE_DIR, if set, wins.')
_COORDINATOR = flags.DEFINE_string(
    'coordinator', None, 'Multi-process training: HOST:PORT of process 0 '
    '(default: $JAX_COORDINATOR_ADDRESS or a detected cluster).')
_NUM_PROCESSES = flags.DEFINE_integer(
    'num_processes', None, 'Multi-process training: number of processes.')
_PROCESS_ID = flags.DEFINE_integer(
    'process_id', None, 'Multi-process training: this process, 0..N-1.')

# Each command: (what it does, its arguments, the flags it reads).
_RUN_FLAGS = ('quiet', 'compilation_cache')
_MULTI_PROCESS = ('coordinator', 'num_processes', 'process_id')
COMMAND_HELP = {
    'prepare-data': ('Fetch, verify (SHA-256) and prepare a dataset once.',
                     '[--data_dir DIR] [--dataset NAME] '
                     '[--force]', ('data_dir', 'dataset', 'force')),
    'train': ('Train a config in a workdir; resumes from its latest '
              'checkpoint, prints the saved result of a finished run.',
              '--config NAME|FILE --workdir DIR [--config.KEY=VALUE ...]',
              ('config', 'workdir', 'report', *_RUN_FLAGS, *_MULTI_PROCESS)),
    'evaluate': ("Validation and test metrics of a workdir's latest "
                 'checkpoint, as JSON.', '--workdir DIR',
                 ('workdir', 'data_dir', 'compilation_cache')),
    'predict': ("Classify files with a workdir's latest checkpoint: "
                '.npy/.npz/.csv sequences of the width it reads (docs/cli.md)'
                '; for models of images also 28x28 grayscale images (others '
                'are converted).', '--workdir DIR FILE ...',
                ('workdir', 'compilation_cache')),
    'export': ("Write a workdir's latest checkpoint as a jax.export "
               'artifact (symbolic batch, CPU/GPU/TPU; models of series '
               'also take seq_lengths) and its JSON (input shape, scaling, '
               'classes), to serve with jax alone.', '--workdir DIR --out DIR',
               ('workdir', 'out')),
    'report': ('(Re)write WORKDIR/report.md and WORKDIR/plots/.',
               '--workdir DIR', ('workdir',)),
    'inspect-data': ('Describe a dataset (shapes, lengths, channel '
                     'statistics, classes) and plot samples as PNGs.',
                     '[--dataset NAME|npz:PATH] [--split test] '
                     '[--indices 100 101 102] [--out DIR]',
                     ('dataset', 'split', 'indices', 'out', 'data_dir')),
    'sweep': ('Train models for several seeds (and learning rates) at once '
              'under jax.vmap; mean and std of their test accuracy.',
              '--config NAME|FILE --workdir DIR [--seeds N] '
              '[--learning_rates A,B]',
              ('config', 'workdir', 'seeds', 'learning_rates',
               *_RUN_FLAGS)),
}
COMMANDS = tuple(COMMAND_HELP)
HELP_FLAGS = ('-h', '--help', '-help', '--helpshort', '-helpshort')
EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3  # non-finite loss; the last good checkpoint is kept


def _require(flag: flags.FlagHolder, command: str):
  if flag.value is None:
    raise UsageError(f'`seqclf {command}` needs --{flag.name}.')
  return flag.value


def _prepare_data() -> None:
  from seqclf import input_pipeline  # pylint: disable=g-import-not-at-top
  if _DATASET.value not in datasets.TFDS:
    raise UsageError(f'--dataset must be one of {", ".join(datasets.TFDS)} '
                     f'to prepare, got {_DATASET.value!r} (npz files need no '
                     'preparing).')
  builder = input_pipeline.prepare(_DATA_DIR.value, _DATASET.value,
                                   force=_FORCE.value)
  splits = {k: v.num_examples for k, v in builder.info.splits.items()}
  print(f'{_DATASET.value} ready in {builder.data_dir}: {splits}')


def _init_distributed() -> bool:
  """Joins a multi-process job when asked to, before JAX touches a device."""
  import os  # pylint: disable=g-import-not-at-top
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
  from seqclf import parallel  # pylint: disable=g-import-not-at-top
  parallel.initialize_distributed(coordinator, n, i)
  return True


def _enable_compilation_cache() -> None:
  """Points JAX's persistent cache at --compilation_cache.

  Entries are keyed by program, devices, XLA flags and versions, so a stale
  one is never loaded; a hit gives the same executable, so the same numbers.
  """
  import os  # pylint: disable=g-import-not-at-top
  if not _COMPILATION_CACHE.value or os.environ.get('JAX_COMPILATION_CACHE_DIR'):
    return
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update('jax_compilation_cache_dir',
                    os.path.expanduser(_COMPILATION_CACHE.value))
  # Every program: the many small ones add up to seconds on a CPU.
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)


def _load_config(command: str):
  """The --config file's config (a bad file already failed while parsing)."""
  config = _require(_CONFIG, command)
  if not hasattr(config, 'keys'):
    where = flags.FLAGS['config'].config_filename
    raise UsageError(f'get_config() of --config={where} returned '
                     f'{type(config).__name__}, not a ConfigDict.')
  return config


def _train() -> None:
  from seqclf import config as config_lib  # pylint: disable=g-import-not-at-top
  config = config_lib.validate(_load_config('train'))
  if not _init_distributed():  # Multi-process jobs set their own topology.
    from seqclf import parallel  # pylint: disable=g-import-not-at-top
    parallel.configure_cpu_devices(config.cpu_devices, config.batch_size)
  import jax  # pylint: disable=g-import-not-at-top
  from seqclf import train  # pylint: disable=g-import-not-at-top
  results = train.train_and_evaluate(config, _require(_WORKDIR, 'train'),
                                     quiet=_QUIET.value)
  if jax.process_index() != 0:
    return
  if _REPORT.value and not results.get('already_finished'):
    _report(quiet=_QUIET.value)  # A finished run's report stays as it was.
  print(f'Test accuracy: {results["test_accuracy"]:.4f} '
        f'(validation {results["val_accuracy"]:.4f}, step {results["step"]}, '
        f'{results["wall_seconds"]:.1f} s)')


def _sweep() -> None:
  from seqclf import sweep  # pylint: disable=g-import-not-at-top
  config = _load_config('sweep')
  rates = None
  if _LEARNING_RATES.value:
    try:
      rates = [float(r) for r in _LEARNING_RATES.value]
    except ValueError as e:
      raise UsageError(f'--learning_rates takes numbers, e.g. '
                       f'--learning_rates=1e-3,3e-3 ({e}).') from e
  results = sweep.run_sweep(config, _require(_WORKDIR, 'sweep'), _SEEDS.value,
                            rates, quiet=_QUIET.value)
  accs = ' '.join(f'{a:.4f}' for a in results['test_accuracies'])
  print(f'Test accuracy over {results["num_models"]} models: '
        f'{results["test_accuracy_mean"]:.4f} ± {results["test_accuracy_std"]:.4f}'
        f' ({accs}; step {results["step"]}, {results["wall_seconds"]:.1f} s)')


def _evaluate() -> None:
  from seqclf import datasets, inference, train  # pylint: disable=g-import-not-at-top
  from flax.training import train_state  # pylint: disable=g-import-not-at-top
  model, params, config = inference.load_model(_require(_WORKDIR, 'evaluate'))
  config.data_dir = _DATA_DIR.value or config.data_dir
  data = datasets.view_splits(config, datasets.load(config, ('validation',
                                                            'test')))
  state = train_state.TrainState(step=0, apply_fn=model.apply, params=params,
                                 tx=None, opt_state=None)
  results = {split: train.evaluate(state, data[split], config.eval_batch_size)
             for split in data}
  print(json.dumps(results, indent=2))


def _predict(paths: list[str]) -> None:
  import numpy as np  # pylint: disable=g-import-not-at-top
  from seqclf import inference, sequence_files  # pylint: disable=g-import-not-at-top
  if not paths:
    raise UsageError('`seqclf predict` needs one or more files to classify '
                     '(images, or .npy/.npz/.csv sequences).')
  model, params, config = inference.load_model(_require(_WORKDIR, 'predict'))
  names, inputs, lengths, notes = sequence_files.predict_inputs(
      paths, params, config)
  for note in notes:
    print(f'note: {note}', file=sys.stderr)
  probs = inference.predict_probabilities(
      model, params, datasets.view(config, inputs), lengths=lengths)
  for name, p in zip(names, probs):
    top = ' '.join(f'{c}:{p[c]:.3f}' for c in np.argsort(-p)[:3])
    print(f'{name}: class {int(np.argmax(p))} (p={p.max():.3f}; top-3 {top})')


def _export() -> None:
  from seqclf import export  # pylint: disable=g-import-not-at-top
  workdir = _require(_WORKDIR, 'export')
  if not _OUT.present:
    raise UsageError('`seqclf export` needs --out DIR (where to write '
                     f'{export.ARTIFACT} and {export.METADATA}).')
  writable_dir(_OUT.value, '--out')
  export.export_model(workdir, _OUT.value)
  print(f'Exported {Path(_OUT.value) / export.ARTIFACT} and '
        f'{Path(_OUT.value) / export.METADATA}')


def _report(quiet: bool = False) -> None:
  from seqclf import report  # pylint: disable=g-import-not-at-top
  workdir = _require(_WORKDIR, 'report')
  written = report.write_report(workdir)
  if not quiet:
    print(f'Report: {written.path} (plots in {written.path.parent / "plots"})')


def _inspect_data(extra: list[str]) -> None:
  from seqclf import report  # pylint: disable=g-import-not-at-top
  from seqclf.config import base_config  # pylint: disable=g-import-not-at-top
  try:
    indices = [int(i) for i in [*_INDICES.value, *extra]]
  except ValueError as e:
    raise UsageError(f'--indices takes whole numbers, e.g. --indices 100 101 '
                     f'102 ({e}).') from e
  name = _DATASET.value
  try:
    datasets.check_name(name)
  except SeqclfError:
    raise UsageError(f'--dataset must be one of {", ".join(datasets.TFDS)} '
                     f"or 'npz:PATH', got {name!r}.") from None
  data = datasets.read(name, _DATA_DIR.value,
                       base_config().validation_fraction)
  report.check_indices(data, _SPLIT.value, indices)
  writable_dir(_OUT.value, '--out')
  if name in datasets.IMAGES:
    print(report.describe_data(data, _SPLIT.value, indices))
    paths = report.write_data_figures(data, _SPLIT.value, indices, _OUT.value)
  else:
    print(report.describe_series(data, name, _SPLIT.value, indices))
    paths = report.write_series_figures(data, _SPLIT.value, indices,
                                        _OUT.value)
  print('Wrote ' + ', '.join(str(p) for p in paths.values()))


def main(argv: list[str]) -> None:
  if len(argv) < 2 or argv[1] not in COMMANDS:
    given = f'unknown command {argv[1]!r}; ' if len(argv) > 1 else ''
    print(f'seqclf: error: {given}give a command: {", ".join(COMMANDS)} '
          '(`seqclf --help` says what each does).', file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)
  command, rest = argv[1], argv[2:]
  if rest and command not in ('predict', 'inspect-data'):
    print(f'seqclf {command}: error: unexpected arguments {rest} (`seqclf '
          f'{command} --help` lists its flags).', file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)
  from seqclf.preemption import EXIT_PREEMPTED, Preempted  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)
  from seqclf import logs  # pylint: disable=g-import-not-at-top
  # Damaged checkpoints and full disks are one line (seqclf.checkpoint);
  # orbax's own reports of them, at any time, would bury it.
  logs.drop_abandoned_reads()
  if command in ('train', 'sweep'):
    from seqclf import checkpoint  # pylint: disable=g-import-not-at-top
    logging.get_absl_logger().addFilter(checkpoint.not_disk_full)
  if command in ('train', 'sweep', 'evaluate', 'predict'):
    _enable_compilation_cache()
  try:
    if command == 'prepare-data':
      _prepare_data()
    elif command == 'train':
      _train()
    elif command == 'evaluate':
      _evaluate()
    elif command == 'report':
      _report()
    elif command == 'inspect-data':
      _inspect_data(rest)
    elif command == 'sweep':
      _sweep()
    elif command == 'export':
      _export()
    else:
      _predict(rest)
  except Preempted as e:
    print(f'seqclf {command}: {e}', file=sys.stderr)
    sys.exit(EXIT_PREEMPTED)
  except FloatingPointError as e:
    print(f'seqclf {command}: error: {_one_line(e)}', file=sys.stderr)
    sys.exit(EXIT_DIVERGED)
  except SeqclfError as e:  # Bad input; anything else is a bug.
    print(f'seqclf {command}: error: {_one_line(e)}', file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)


def _one_line(error: BaseException) -> str:
  text = ' '.join(str(error).replace('\\n', ' ').replace("\\'", "'").split())
  if len(text) > 1 and text[0] == text[-1] and text[0] in '\'"':
    text = text[1:-1]  # str(KeyError) quotes its message
  return text


def version() -> str:
  try:
    return importlib.metadata.version('seqclf')
  except importlib.metadata.PackageNotFoundError:
    return 'unknown (not installed)'


def _flag_line(name: str) -> str:
  flag = flags.FLAGS[name]
  shown = f'--[no]{name}' if flag.boolean else f'--{name}'
  text = ' '.join(flag.help.split())
  default = flag.default
  if isinstance(default, list):
    default = ','.join(default)
  if name != 'config' and default not in (None, '') or flag.boolean:
    text += f' (default: {str(default).lower() if flag.boolean else default})'
  return f'  {shown:<22} {text}'


def help_text(command: str | None = None) -> str:
  """``seqclf --help`` (the commands), or ``seqclf COMMAND --help`` (its flags)."""
  if command is None:
    lines = ['usage: seqclf COMMAND [flags]   (`seqclf COMMAND --help`: its '
             'flags)', '', 'commands:']
    lines += [f'  {name:<14} {what}' for name, (what, _, _) in
              COMMAND_HELP.items()]
    lines += ['', 'flags: -h/--help, --version.', '',
              'exit status: 0 done; 2 bad input (one line on stderr); 3 a '
              'diverged run; 75 stopped by SIGTERM or Ctrl-C after a '
              'checkpoint (run the same command to resume); 130 a second '
              'Ctrl-C (stops at once); 1 a bug in seqclf (with its '
              'traceback).']
    return '\n'.join(lines)
  what, usage, names = COMMAND_HELP[command]
  lines = [f'usage: seqclf {command} {usage}', '', what, '', 'flags:']
  lines += [_flag_line(name) for name in names]
  if 'config' in names:
    lines += ['', f'configs: {", ".join(config_names())} (in '
              f'{CONFIG_DIR}); config keys and their checks: seqclf/config.py.']
  return '\n'.join(lines)


def _help_or_version(argv: list[str]) -> None:
  """Prints --help/-h (of the tool, or of the command given) or --version
  and exits 0; returns if neither is asked for."""
  args = argv[1:argv.index('--')] if '--' in argv else argv[1:]
  if '--version' in args:
    print(f'seqclf {version()}')
    sys.exit(0)
  if any(a in HELP_FLAGS for a in args):
    command = next((a for a in args if a in COMMANDS), None)
    try:
      print(help_text(command), flush=True)
    except BrokenPipeError:  # `seqclf --help | head`: not an error.
      sys.stdout = None
    sys.exit(0)


def _parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing, with bad flags and config overrides as one-line errors."""
  _help_or_version(argv)
  try:
    return flags.FLAGS(argv)
  except Exception as e:  # pylint: disable=broad-except
    if isinstance(e.__context__, SeqclfError):  # Raised by _ConfigParser.
      e = e.__context__
    # config_flags raises AttributeError/KeyError/ValueError for bad overrides
    # and missing config files; all of them are bad input, not crashes.
    print(f'seqclf: error: {_one_line(e)}', file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)


def run() -> None:
  """Console-script entry point."""
  app.run(main, flags_parser=_parse_flags)


if __name__ == '__main__':
  run()
