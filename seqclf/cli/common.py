"""What several commands share: their flags (each defined here once, into a
command's own ``FlagValues``), config files, the compilation cache."""

from __future__ import annotations

import importlib.util
import os
import traceback
from pathlib import Path

import jax
from absl import flags
from ml_collections import config_flags

from seqclf.errors import SeqclfError, UsageError

CONFIG_DIR = Path(__file__).resolve().parents[1] / 'configs'  # packaged


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


def define_config(fv: flags.FlagValues) -> flags.FlagHolder:
  """``--config NAME|FILE`` and its ``--config.KEY=VALUE`` overrides."""
  holder = config_flags.DEFINE_config_file(
      'config', None, "A packaged config's name (`configs:` below) or a path "
      'to a config file defining get_config(); --config.KEY=VALUE overrides '
      'one key.', flag_values=fv, lock_config=True)
  fv['config'].parser = _ConfigParser()
  return holder


def define_workdir(fv: flags.FlagValues, help_text: str = 'Run directory.'
                   ) -> flags.FlagHolder:
  return flags.DEFINE_string('workdir', None, help_text, flag_values=fv)


def define_data_dir(fv: flags.FlagValues) -> flags.FlagHolder:
  return flags.DEFINE_string(
      'data_dir', None, "tfds data dir (default: the config's, else "
      '$TFDS_DATA_DIR or ~/tensorflow_datasets).', flag_values=fv)


def define_moved_dataset(fv: flags.FlagValues) -> flags.FlagHolder:
  return flags.DEFINE_string(
      'dataset', None, "The run's npz data where it is now (npz:PATH), if it "
      'moved since the run trained: read only if it is that data (its '
      'digest).', flag_values=fv)


def define_step(fv: flags.FlagValues) -> flags.FlagHolder:
  return flags.DEFINE_integer(
      'step', None, "The checkpoint's step (default: the run's best "
      'checkpoint where it has one, a run with a `monitor`; else the '
      'latest).', flag_values=fv)


def define_quiet(fv: flags.FlagValues) -> flags.FlagHolder:
  return flags.DEFINE_bool('quiet', False, 'Print only the final results.',
                           flag_values=fv)


def define_compilation_cache(fv: flags.FlagValues) -> flags.FlagHolder:
  return flags.DEFINE_string(
      'compilation_cache', '~/.cache/seqclf/jax', "JAX's persistent "
      'compilation cache: a repeated run (another seed, a resume, a sweep) '
      "loads its XLA programs instead of compiling them again; '' turns it "
      'off. $JAX_COMPILATION_CACHE_DIR, if set, wins.', flag_values=fv)


def enable_compilation_cache(directory: str) -> None:
  """Points JAX's persistent cache at ``directory`` ('' : off).

  Entries are keyed by program, devices, XLA flags and versions, so a stale
  one is never loaded; a hit gives the same executable, so the same numbers.
  """
  if not directory or os.environ.get('JAX_COMPILATION_CACHE_DIR'):
    return
  jax.config.update('jax_compilation_cache_dir', os.path.expanduser(directory))
  # Every program: the many small ones add up to seconds on a CPU.
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)


def require(flag: flags.FlagHolder, command: str):
  """The flag's value; a ``UsageError`` naming it when it was not given."""
  if flag.value is None:
    raise UsageError(f'`seqclf {command}` needs --{flag.name}.')
  return flag.value


def config_of(flag: flags.FlagHolder, command: str):
  """The ``--config`` file's config (a bad file already failed in parsing)."""
  config = require(flag, command)
  if not hasattr(config, 'keys'):
    raise UsageError(f'get_config() of --config returned '
                     f'{type(config).__name__}, not a ConfigDict.')
  return config
