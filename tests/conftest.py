"""Shared fixtures: MNIST loaded once per session, a small trained workdir."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from seqclf import input_pipeline
from seqclf.config import base_config

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

# impl='kernel' compiles C++ on first use; only a machine without a compiler
# may skip its tests (the CI machine has g++).
needs_compiler = pytest.mark.skipif(
    shutil.which(os.environ.get('CXX', 'c++')) is None,
    reason="impl='kernel' needs a C++ compiler; none found")


@pytest.fixture(scope='session')
def mnist():
  """All three splits of the prepared MNIST (``make setup`` prepares it)."""
  return input_pipeline.load_datasets(None)


@pytest.fixture(scope='session', autouse=True)
def _compilation_cache(tmp_path_factory):
  """CLI runs of this test worker share one compilation cache, and the test
  workers one impl='auto' cache (each decision is measured once per
  session), neither of them the user's."""
  shared = tmp_path_factory.getbasetemp().parent  # One for all xdist workers.
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv('JAX_COMPILATION_CACHE_DIR',
                 str(tmp_path_factory.mktemp('jax_cache')))
    patch.setenv('SEQCLF_AUTOTUNE_CACHE', str(shared / 'autotune.json'))
    yield


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


@pytest.fixture(scope='session')
def trained_workdir(tmp_path_factory, mnist):
  """A workdir with a 300-step run of the reference model (shared, read-only)."""
  from seqclf import train  # pylint: disable=g-import-not-at-top
  workdir = tmp_path_factory.mktemp('trained')
  config = small_config(num_train_steps=300, eval_every=300,
                        checkpoint_every=300, steps_per_call=100,
                        **DEFAULT_INPUT)
  train.train_and_evaluate(config, workdir, quiet=True, datasets=mnist)
  return workdir


def run_cli(*args: str, env: dict[str, str] | None = None,
            cwd: Path = REPO) -> subprocess.CompletedProcess:
  """Runs ``python -m seqclf.main ARGS`` and captures its output."""
  return subprocess.run([sys.executable, '-m', 'seqclf.main', *args], cwd=cwd,
                        capture_output=True, text=True, timeout=300,
                        env={**os.environ, **(env or {})})
