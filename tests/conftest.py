"""Shared fixtures: MNIST loaded once per session, a small trained workdir."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import os
import shutil
import struct
import subprocess
import sys
import traceback
import zlib
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
import pytest
from jax.experimental.compilation_cache import compilation_cache
from PIL import Image

from seqclf.config import base_config
from seqclf.data import prepared
from seqclf.kernels import lstm_kernel

REPO = Path(__file__).resolve().parents[1]


def _default_input_standardization() -> dict[str, float]:
  """configs/default.py's input_mean/input_std, so CLI-like tests follow it."""
  spec = importlib.util.spec_from_file_location(
      'default_config', REPO / 'configs' / 'default.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  return {'input_mean': config.input_mean, 'input_std': config.input_std}


DEFAULT_INPUT = _default_input_standardization()

BACKEND = jax.default_backend()
# The suite runs on any backend (`make test-gpu` runs its GPU tier there).
# impl='kernel' is the CPU backend's and needs a C++ build (made on first
# forced use, or by `make kernel`): only a machine without a compiler, or
# another backend, may skip its tests (the CI machine has g++).
needs_cpu_kernel = pytest.mark.skipif(
    BACKEND != 'cpu' or shutil.which(os.environ.get('CXX', 'c++')) is None,
    reason="impl='kernel' needs the CPU backend and a C++ compiler")
# What splits the CPU into devices, or counts them, holds on a CPU backend.
needs_cpu_backend = pytest.mark.skipif(
    BACKEND != 'cpu', reason=f'tests CPU devices; this is the {BACKEND} '
    'backend')


@pytest.fixture(scope='session')
def mnist():
  """All three splits of the prepared MNIST (``make setup`` prepares it)."""
  return prepared.load_datasets(None)


@pytest.fixture(scope='session', autouse=True)
def _compilation_cache(tmp_path_factory):
  """This test worker's programs, its own and its CLI runs', go to one
  compilation cache, and the test workers share one impl='auto' cache (each
  decision is measured once per session), none of them the user's.

  Many tests compile the same programs (a small model's train step, its
  evaluation): a cache hit is the same executable, so the same numbers, at
  a fraction of the compile time. The cache is new for each run unless
  SEQCLF_TEST_COMPILATION_CACHE names one to keep (`make test-fast` does:
  a rerun then compiles only what changed).
  """
  base = tmp_path_factory.getbasetemp()  # One for all xdist workers:
  shared = base.parent if os.environ.get('PYTEST_XDIST_WORKER') else base
  if BACKEND == 'cpu' and shutil.which(os.environ.get('CXX', 'c++')):
    # Asking whether the kernel is available never compiles it (`make
    # kernel` does): built here once, for tests that expect it eligible.
    lstm_kernel.build()
  runs = tmp_path_factory.mktemp('jax_cache')
  kept = os.environ.get('SEQCLF_TEST_COMPILATION_CACHE')
  compilation_cache.set_cache_dir(os.path.expanduser(kept) if kept else
                                  str(runs))
  compilation_cache.reset_cache()  # in case collection compiled something
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv('JAX_COMPILATION_CACHE_DIR', str(runs))
    # Every program, as the CLI's own cache does (JAX's default: >= 1 s).
    patch.setenv('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
    patch.setenv('SEQCLF_AUTOTUNE_CACHE', str(shared / 'autotune.json'))
    # impl='auto' takes the first eligible path untimed: timing compiles
    # every path of each new shape, the suite's largest cost, and is tested
    # on a fake clock (test_autotune.py); `make train` times for real.
    patch.setenv('SEQCLF_AUTOTUNE', '0')
    yield


def tensorboard_values(logdir: Path) -> list[tuple[str, int, str, float]]:
  """(tag, step, kind ('image'/'scalar'), scalar value or nan) of each value
  in a TensorBoard log dir's event files, file by file."""
  from seqclf.training import metric_logging  # pylint: disable=g-import-not-at-top
  values = []
  for path in sorted(logdir.glob('events.out.tfevents.*')):
    for _, event in metric_logging.event_records(path.read_bytes()):
      for value in event.summary.value:
        image = value.HasField('image')
        values.append((value.tag, event.step, 'image' if image else 'scalar',
                       float('nan') if image else value.simple_value))
  return values


def tensorboard_tags(logdir: Path) -> dict[str, set[str]]:
  """Tag -> kinds ('image'/'scalar') in a TensorBoard log dir."""
  tags: dict[str, set[str]] = {}
  for tag, _, kind, _ in tensorboard_values(logdir):
    tags.setdefault(tag, set()).add(kind)
  return tags


@contextlib.contextmanager
def compilation_cache_events():
  """The names of JAX's compilation-cache events (``cache_hits``,
  ``compile_requests_use_cache``, ...) while the block runs, in a list."""
  from jax._src import monitoring  # pylint: disable=g-import-not-at-top
  events = []
  listen = lambda event, **_: events.append(event.rsplit('/', 1)[-1])
  monitoring.register_event_listener(listen)
  try:
    yield events
  finally:
    monitoring.unregister_event_listener(listen)


def all_from_cache(events: list[str]) -> bool:
  """Whether every compile in ``events`` (``compilation_cache_events``')
  asked the cache and loaded its program from there."""
  asked = events.count('compile_requests_use_cache')
  return bool(asked) and events.count('cache_hits') == asked


def normal(seed: int, shape: tuple[int, ...]) -> jax.Array:
  """Standard normal float32 test inputs, drawn by numpy.

  Not ``jax.random``: an eager draw compiles a program for each new shape (a
  fraction of a second each), and the suite draws over a hundred shapes.
  """
  rng = np.random.default_rng(seed)
  return jax.numpy.asarray(rng.standard_normal(shape, np.float32))


def uniform(seed: int, shape: tuple[int, ...]) -> jax.Array:
  """Uniform [0, 1) float32 test inputs, drawn by numpy (see ``normal``)."""
  rng = np.random.default_rng(seed)
  return jax.numpy.asarray(rng.random(shape, np.float32))


def perturbed(params, seed: int = 2, scale: float = 0.3):
  """``params`` plus normal noise (std ``scale``) in every leaf: non-trivial
  weights, so every gate and the forget bias matter."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda p: p + scale * rng.standard_normal(p.shape, np.float32), params)


def toy_series(n, seed, steps=12, features=3, classes=4):
  """Learnable toy series (x, y): the class sets which channel drifts up."""
  rng = np.random.default_rng(seed)
  y = rng.integers(0, classes, n)
  x = rng.normal(0, 0.3, (n, steps, features)).astype(np.float32)
  x[np.arange(n), :, y % features] += np.linspace(0, 2, steps) * (
      1 + y[:, None] // features)
  return x, y


def unit_state(workdir: Path, unit: str, step: int | None = None):
  """The stacked state a sweep unit checkpointed at ``step`` (default: its
  newest), restored with orbax alone."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  from seqclf.training import checkpoint  # pylint: disable=g-import-not-at-top
  mngr = checkpoint.manager(Path(workdir) / 'units' / unit)
  step = mngr.latest_step() if step is None else step
  return mngr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore()))['state']


def small_config(**overrides):
  """A fast config: the reference model, fewer steps, frequent boundaries."""
  config = base_config()
  config.num_train_steps = 30
  config.eval_every = 10
  config.checkpoint_every = 10
  config.steps_per_call = 10
  config.log_every = 10
  config.update(overrides)
  return config


@contextlib.contextmanager
def _exclusive(lock_path: Path):
  """Holds an exclusive lock on ``lock_path`` (a no-op where fcntl is absent)."""
  try:
    import fcntl  # pylint: disable=g-import-not-at-top
  except ImportError:  # Not POSIX: each xdist worker builds its own.
    yield
    return
  with open(lock_path, 'w') as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def built_once(tmp_path_factory, name: str,
               build: Callable[[Path], None]) -> Path:
  """The directory ``name``, filled by ``build(directory)`` once per test run.

  For expensive fixtures: under pytest-xdist the first worker to ask builds
  it (under a lock) in a directory all workers of the run share, and the
  others wait for it and reuse it, instead of each building its own. Treat it
  as read-only (copy it to change it). A build that raised is redone by the
  next caller.
  """
  base = tmp_path_factory.getbasetemp()
  root = base.parent if os.environ.get('PYTEST_XDIST_WORKER') else base
  directory, done = root / name, root / f'{name}.done'
  with _exclusive(root / f'{name}.lock'):
    if not done.exists():
      shutil.rmtree(directory, ignore_errors=True)  # a failed attempt's
      directory.mkdir()
      build(directory)
      done.touch()
  return directory


@pytest.fixture(scope='session')
def trained_workdir(tmp_path_factory, mnist):
  """A workdir with a 300-step run of the reference model (shared, read-only;
  trained once per test run, see ``built_once``)."""
  from seqclf import train  # pylint: disable=g-import-not-at-top
  config = small_config(num_train_steps=300, eval_every=300,
                        checkpoint_every=300, steps_per_call=100,
                        **DEFAULT_INPUT)
  return built_once(tmp_path_factory, 'trained', lambda workdir:
                    train.train_and_evaluate(config, workdir, quiet=True,
                                             datasets=mnist))


# The fast tier (`make test-fast`: -m 'not slow') never waits for the
# trained workdir: whatever uses it is slow, marked or not.
def pytest_collection_modifyitems(config, items):
  del config
  for item in items:
    if 'trained_workdir' in getattr(item, 'fixturenames', ()):
      item.add_marker(pytest.mark.slow)


def packaged_configs() -> list[str]:
  """The names of seqclf/configs/*.py, read off the files."""
  return sorted(p.stem for p in (REPO / 'seqclf' / 'configs').glob('*.py')
                if not p.stem.startswith('_'))


def run_cli(*args: str, env: dict[str, str] | None = None,
            cwd: Path = REPO, process: bool = False
            ) -> subprocess.CompletedProcess:
  """Runs ``seqclf ARGS`` and captures its exit status and output.

  In this process (``seqclf.cli.main.run``) unless ``process`` or ``env``
  asks for a new one (``python -m seqclf``): a process costs seconds of
  imports, and most runs check one line of bad input. What the command sets
  for its process (flags, logging, hooks, the working directory) is put back
  afterwards; this process's CPU devices are fixed, so a command here runs
  on them (as when a user's ``XLA_FLAGS`` sets the count). Ask for a process
  where the test is about the process: its devices, environment, signals,
  or what reaches its stderr at exit.
  """
  if process or env:
    return subprocess.run([sys.executable, '-m', 'seqclf', *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})
  return _run_cli_here(args, cwd)


def _run_cli_here(args, cwd: Path) -> subprocess.CompletedProcess:
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  from seqclf.cli import main as cli_main  # pylint: disable=g-import-not-at-top
  if args and args[0] in cli_main.COMMANDS:
    # absl keeps a flag's value from the last parse where it is not given,
    # and config_flags the --config.KEY flags it defined in that parse.
    command_flags = cli_main.command_module(args[0]).FLAGS
    command_flags.unparse_flags()
    for name in [n for n in command_flags if n.startswith('config.')]:
      delattr(command_flags, name)
  loggers = [absl_logging.get_absl_logger(), logging.getLogger('asyncio')]
  filters = [list(logger.filters) for logger in loggers]
  verbosity, hook = absl_logging.get_verbosity(), sys.unraisablehook
  out, err, status = io.StringIO(), io.StringIO(), 0
  with pytest.MonkeyPatch.context() as patch:
    patch.chdir(cwd)
    patch.setattr(sys, 'argv', ['seqclf', *args])
    patch.setenv('XLA_FLAGS', f'{os.environ.get("XLA_FLAGS", "")} '
                 f'--xla_force_host_platform_device_count={jax.device_count()}')
    try:
      with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        cli_main.run()
    except SystemExit as e:
      status = 0 if e.code is None else e.code
    except Exception:  # pylint: disable=broad-except
      err.write(traceback.format_exc())  # As Python prints it, exit 1.
      status = 1
    finally:
      for logger, kept in zip(loggers, filters):
        logger.filters[:] = kept
      absl_logging.set_verbosity(verbosity)
      sys.unraisablehook = hook
  return subprocess.CompletedProcess(args, status, out.getvalue(),
                                     err.getvalue())


def png_header_only(path, width, height):
  """A PNG whose header declares ``width`` x ``height`` and holds no pixels:
  PIL's size check sees a huge image without one being made."""
  buf = io.BytesIO()
  Image.new('L', (1, 1)).save(buf, 'PNG')
  data = bytearray(buf.getvalue())
  ihdr = bytearray(data[12:29])  # b'IHDR' and its 13 bytes
  ihdr[4:12] = struct.pack('>II', width, height)
  data[12:29] = ihdr
  data[29:33] = struct.pack('>I', zlib.crc32(bytes(ihdr)))
  path.write_bytes(bytes(data))
