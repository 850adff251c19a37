"""The ``seqclf`` command line: a table of commands, one module each.

  seqclf prepare-data [--data_dir DIR] [--dataset NAME] [--force]
  seqclf train --config default --workdir runs/default [--config.KEY=VALUE …]
  seqclf evaluate --workdir runs/default
  seqclf predict --workdir runs/default FILE …   # images, or .npy/.npz/.csv series
  seqclf report --workdir runs/default          # plots + report.md (train does it too)
  seqclf inspect-data [--dataset NAME|npz:PATH] [--split test --indices 1 2 3] [--out DIR]
  seqclf sweep --config default --workdir runs/sweep --seeds 3 [--grid KEY=V1,V2 ...] [--cv K]
  seqclf export --workdir runs/default --out runs/served

Each command is a module of ``seqclf.cli`` (``COMMANDS``) that defines its
own flags (``FLAGS``, an absl ``FlagValues``: no flag is shared between
commands), its ``SUMMARY`` and ``USAGE`` lines and ``main(args)``; help is
generated from them, and only the command run is imported. ``--config`` is a
packaged config's name (``seqclf/configs/NAME.py``) or a path to a config
file. Config files are Python and are executed when loaded: only name files
you trust.

Exit status: 0 done; 2 bad input (a ``seqclf.errors.SeqclfError``: one line
on stderr naming the fix, a full disk and a device out of memory
included); 3 a diverged run; 75
stopped by a first SIGTERM or Ctrl-C after saving a checkpoint (resume by
running the same command); 130 (143 for SIGTERM) a second Ctrl-C, which
stops at once, the newest complete checkpoint kept, or a Ctrl-C outside
training (loading data, timing paths, evaluating). Any other exception is a
bug in seqclf and is shown with its traceback (exit 1).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import re
import sys
from types import ModuleType

from absl import flags, logging

from seqclf import errors, logs
from seqclf.cli import common, interrupt
from seqclf.errors import SeqclfError
from seqclf.training.preemption import EXIT_PREEMPTED, Preempted

# Command -> its module in seqclf.cli.
COMMANDS = {
    'prepare-data': 'prepare_data',
    'train': 'train',
    'evaluate': 'evaluate',
    'predict': 'predict',
    'export': 'export',
    'report': 'report',
    'inspect-data': 'inspect_data',
    'sweep': 'sweep',
}
HELP_FLAGS = ('-h', '--help', '-help', '--helpshort', '-helpshort')
EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3  # non-finite loss; the last good checkpoint is kept
# What to lower when an accelerator runs out of memory (exit EXIT_BAD_INPUT).
OUT_OF_MEMORY_FIX = {
    'train': ('lower --config.batch_size (the examples of a training step) '
              'or --config.eval_batch_size (of an evaluation batch), then run '
              'the same command to resume'),
    'sweep': ('lower --config.batch_size or --config.eval_batch_size, or '
              'sweep fewer models at once (--seeds, grid values)'),
    None: ("the run's eval_batch_size sets the batches: free the device's "
           'memory, or run on the CPU (JAX_PLATFORMS=cpu)'),
}


def command_module(command: str) -> ModuleType:
  """The module of ``command`` (imported now)."""
  return importlib.import_module(f'seqclf.cli.{COMMANDS[command]}')


def version() -> str:
  try:
    return importlib.metadata.version('seqclf')
  except importlib.metadata.PackageNotFoundError:
    return 'unknown (not installed)'


def _flag_line(flag: flags.Flag) -> str:
  shown = f'--[no]{flag.name}' if flag.boolean else f'--{flag.name}'
  text = ' '.join(flag.help.split())
  default = flag.default
  if isinstance(default, list):
    default = ','.join(default)
  if flag.name != 'config' and default not in (None, '') or flag.boolean:
    text += f' (default: {str(default).lower() if flag.boolean else default})'
  return f'  {shown:<22} {text}'


def help_text(command: str | None = None) -> str:
  """``seqclf --help`` (the commands), or ``seqclf COMMAND --help`` (its flags)."""
  if command is None:
    lines = ['usage: seqclf COMMAND [flags]   (`seqclf COMMAND --help`: its '
             'flags)', '', 'commands:']
    lines += [f'  {name:<14} {command_module(name).SUMMARY}'
              for name in COMMANDS]
    lines += ['', 'flags: -h/--help, --version.', '',
              'exit status: 0 done; 2 bad input (one line on stderr); 3 a '
              'diverged run; 75 stopped by SIGTERM or Ctrl-C after a '
              'checkpoint (run the same command to resume); 130 a second '
              'Ctrl-C (stops at once) or one before training starts; 1 a '
              'bug in seqclf (with its traceback).']
    return '\n'.join(lines)
  module = command_module(command)
  lines = [f'usage: seqclf {command} {module.USAGE}', '', module.SUMMARY, '',
           'flags:']
  lines += [_flag_line(module.FLAGS[name]) for name in module.FLAGS
            if module.FLAGS[name].name == name]
  if 'config' in module.FLAGS:
    lines += ['', f'configs: {", ".join(common.config_names())} (in '
              f'{common.CONFIG_DIR}); config keys and their checks: '
              'seqclf/config.py.']
  return '\n'.join(lines)


def _fail(prefix: str, error: BaseException | str, status: int = EXIT_BAD_INPUT
          ) -> None:
  print(f'{prefix}: error: {one_line(error)}', file=sys.stderr)
  if 'jax' in sys.modules and sys.modules['jax'].distributed.is_initialized():
    # The other processes may wait for this one in a collective: leave now,
    # not after JAX's shutdown barrier (minutes), so that they fail fast.
    sys.stderr.flush()
    sys.stdout.flush()
    os._exit(status)  # pylint: disable=protected-access
  sys.exit(status)


def _peer_gone(error: BaseException) -> bool:
  """Whether ``error`` is a collective of a multi-process job failing because
  another process left it (stopped by its own error, or killed)."""
  return (type(error).__name__ == 'JaxRuntimeError'
          and sys.modules['jax'].distributed.is_initialized()
          and any(s in str(error) for s in (
              'Connection closed by peer', 'stopped sending heartbeats',
              'Failed to send RPC to coordination service')))


def one_line(error: BaseException | str) -> str:
  """An error's message on one line (str(KeyError) unquoted)."""
  text = ' '.join(str(error).replace('\\n', ' ').replace("\\'", "'").split())
  if len(text) > 1 and text[0] == text[-1] and text[0] in '\'"':
    text = text[1:-1]
  return text


def with_flag(error: SeqclfError, module: ModuleType) -> str:
  """The error's message in this command's words: the argument at fault
  (``error.arg``) spelled as the flag that sets it, where the command has
  one (``num_seeds`` -> ``--seeds``, config key ``x`` -> ``--config.x``),
  or that flag added at the end where the message does not name it."""
  text = one_line(error)
  if not error.arg:
    return text
  flag = getattr(module, 'ARG_FLAGS', {}).get(error.arg, error.arg)
  if flag.split('.')[0] not in module.FLAGS:
    return text
  if flag.startswith('config.'):
    named = re.compile(rf'[Cc]onfig key `{re.escape(flag[7:])}`')
  else:
    named = re.compile(rf'(?<![\w`.-]){re.escape(error.arg)}(?![\w`])')
  text, found = named.subn(f'--{flag}', text, count=1)
  return text if found else f'{text.rstrip(".")} (--{flag}).'


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


def _parse(module: ModuleType, argv: list[str]) -> list[str]:
  """The command's flags parsed (its positional arguments returned), with a
  bad flag or config override as one line."""
  try:
    return module.FLAGS(argv)[1:]
  except Exception as e:  # pylint: disable=broad-except
    # A --config.KEY seqclf lacks: ml_collections' KeyError ('KEY', or 'KEY'
    # Did you mean "NEAR" instead of "KEY"?), alone or under an AttributeError.
    missing = next((x for x in (e, e.__context__) if isinstance(x, KeyError)),
                   None)
    if isinstance(e.__context__, SeqclfError):  # Raised parsing --config.
      e = e.__context__
    elif missing is not None:
      from seqclf import config  # pylint: disable=g-import-not-at-top
      e = config.unknown_key(str(missing.args[0]).split()[0].strip('\'"'))
    # absl and config_flags raise many types for bad flags and overrides;
    # all of them are bad input, not crashes.
    _fail(argv[0], e)


def run(argv: list[str] | None = None) -> None:
  """Console-script entry point: ``seqclf COMMAND [flags] [args]``.

  Ctrl-C outside training (which ``preemption.StopRequest`` answers):
  while loading data, timing the paths or evaluating, it is one line and
  exit 130, not a traceback.
  """
  argv = sys.argv if argv is None else argv
  try:
    _run(argv)
  except KeyboardInterrupt:
    interrupt.stopped(argv[1] if len(argv) > 1 and argv[1] in COMMANDS
                      else None)


def _run(argv: list[str]) -> None:
  _help_or_version(argv)
  if len(argv) < 2 or argv[1] not in COMMANDS:
    given = f'unknown command {argv[1]!r}; ' if len(argv) > 1 else ''
    _fail('seqclf', f'{given}give a command: {", ".join(COMMANDS)} '
          '(`seqclf --help` says what each does).')
  command = argv[1]
  module = command_module(command)
  args = _parse(module, [f'seqclf {command}', *argv[2:]])
  if args and not getattr(module, 'TAKES_ARGS', False):
    _fail(f'seqclf {command}', f'unexpected arguments {args} (`seqclf '
          f'{command} --help` lists its flags).')
  flags.FLAGS.mark_as_parsed()  # absl's own flags keep their defaults.
  logging.set_verbosity(logging.WARNING)
  # Damaged checkpoints and full disks are one line (training.checkpoint);
  # orbax's own reports of them, at any time, would bury it.
  logs.drop_abandoned_reads()
  logging.get_absl_logger().addFilter(logs.not_disk_full)
  logging.get_absl_logger().addFilter(logs.not_unfinished_step)
  if hasattr(module, 'COMPILATION_CACHE'):
    common.enable_compilation_cache(module.COMPILATION_CACHE.value)
  try:
    module.main(args)
    sys.stdout.flush()  # A closed pipe is reported here, not at exit.
  except BrokenPipeError:  # `seqclf predict ... | head`: not an error.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(0)
  except SeqclfError as e:  # Bad input; anything else is a bug.
    _fail(f'seqclf {command}', with_flag(e, module))
  except FloatingPointError as e:
    _fail(f'seqclf {command}', e, EXIT_DIVERGED)
  except Preempted as e:
    print(f'seqclf {command}: {e}', file=sys.stderr)
    sys.exit(EXIT_PREEMPTED)
  except Exception as e:  # pylint: disable=broad-except
    if _peer_gone(e):
      _fail(f'seqclf {command}', 'another process of this job stopped (its '
            'own output says why), so this one stops too; checkpoints already '
            'saved are kept.')
    report = errors.out_of_memory(e)
    if report is None:
      raise
    _fail(f'seqclf {command}', f'the device ran out of memory ({report}): '
          f'{OUT_OF_MEMORY_FIX.get(command, OUT_OF_MEMORY_FIX[None])}; '
          'checkpoints already saved are kept.')


if __name__ == '__main__':
  run()
