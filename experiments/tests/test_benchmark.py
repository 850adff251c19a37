"""Smoke test of experiments/benchmark.py: a few steps of every implementation.

No timing assertions (the machine is shared); it checks that the benchmark
runs end to end, writes its three outputs, and that what it reports is
well-formed: positive speeds for every requested implementation and batch,
a measured GEMM peak, and torch either measured or skipped with a reason.
"""

import importlib
import json
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Each test runs several implementations end to end: seconds each.
pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def benchmark():
  # Imported by name (not from a file spec) so its spawned workers can too.
  sys.path.insert(0, str(REPO / 'experiments'))
  try:
    yield importlib.import_module('benchmark')
  finally:
    sys.path.remove(str(REPO / 'experiments'))


def test_benchmark_runs_and_writes_table(benchmark, tmp_path, monkeypatch):
  # No compiler, so no CPU kernel: the auto rows still run (bfloat16 on the
  # XLA paths); the forced kernel and tensorfloat32 (GPUs only) are skipped.
  monkeypatch.setenv('CXX', 'no-such-compiler')
  rc = benchmark.main([
      '--impls', 'seqclf,seqclf-bf16,seqclf-nnx,flax,torch,torch-bf16,'
      'seqclf-kernel,seqclf-tf32', '--batch_sizes',
      '8', '--steps', '2',
      '--rounds', '2', '--num_examples', '200', '--no_tta', '--gemm_gflop',
      '0.05', '--out', str(tmp_path)])
  assert rc == 0
  report = json.loads((tmp_path / 'benchmark.json').read_text())
  table = (tmp_path / 'benchmark.md').read_text()
  assert (tmp_path / 'benchmark.png').stat().st_size > 1000
  measured = set(report['results'])
  assert {'seqclf', 'seqclf-bf16', 'seqclf-nnx', 'flax'} <= measured
  assert {'seqclf-kernel', 'seqclf-tf32'} <= set(report['skipped'])
  assert 'tensorfloat32' in report['skipped']['seqclf-tf32']
  assert 'seqclf-kernel skipped' in table
  # torch is an optional extra: measured, or skipped with what to do
  # (oneDNN has a bfloat16 LSTM only on some CPUs: skipped there too).
  for name, hint in (('torch', 'pip install'),
                     ('torch-bf16', 'pip install|cannot run on this device')):
    assert (name in measured) != (name in report['skipped'])
    if name in report['skipped']:
      assert re.search(hint, report['skipped'][name])
  for name, res in report['results'].items():
    speeds = res['examples_per_second']
    assert list(speeds) == ['8']  # JSON keys are strings
    assert all(len(v) == 2 and min(v) > 0 for v in speeds.values()), name
    assert res['peak_rss_mb'] > 0
    assert f'| {name} |' in table
  assert report['gemm_peak_gflops'] > 0
  assert report['train_flops_per_example'] == pytest.approx(
      3 * (28 * 2 * (28 * 512 + 128 * 512) + 2 * 128 * 10))


def test_benchmark_rejects_unknown_impl(benchmark, capsys):
  with pytest.raises(SystemExit) as e:
    benchmark.main(['--impls', 'seqclf,tensorflow'])
  assert e.value.code == 2
  assert 'unknown --impls' in capsys.readouterr().err


def test_benchmark_pixel_task_and_gpu_kernels_skipped_off_a_gpu(benchmark,
                                                                 tmp_path):
  """--task pixel trains 784 one-pixel steps; impl='gpu' rows say why they
  cannot run on a CPU rather than failing the run."""
  rc = benchmark.main([
      '--impls', 'seqclf-gpu,seqclf-gpu-bf16,flax', '--task', 'pixel',
      '--batch_sizes', '2', '--steps', '1', '--rounds', '1', '--num_examples',
      '50', '--no_tta', '--gemm_gflop', '0.02', '--out', str(tmp_path)])
  assert rc == 0
  report = json.loads((tmp_path / 'benchmark.json').read_text())
  assert list(report['results']) == ['flax']
  assert report['protocol']['task'] == 'pixel'
  assert report['train_flops_per_example'] == pytest.approx(
      3 * (784 * 2 * (1 * 512 + 128 * 512) + 2 * 128 * 10))
  assert report['results']['flax']['achieved_gflops']['2'] > 0
  for name in ('seqclf-gpu', 'seqclf-gpu-bf16'):
    assert 'GPU backend only' in report['skipped'][name]
  assert 'task pixel (784 steps x 1' in (tmp_path / 'benchmark.md').read_text()


def test_the_nnx_rows_train_bitwise_as_the_linen_rows(benchmark):
  """seqclf-nnx's chunk (an NNX step: nnx.value_and_grad, nnx.Optimizer)
  computes exactly the trainer's chunk on the same model and batches: the
  rows differ in the API alone, so their ratio is its cost."""
  import functools  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from seqclf import nnx as seqnnx  # pylint: disable=g-import-not-at-top
  from seqclf.config import base_config  # pylint: disable=g-import-not-at-top
  from seqclf.nnx import classifier  # pylint: disable=g-import-not-at-top
  from seqclf.training import optim, state as state_lib, steps  # pylint: disable=g-import-not-at-top
  config = base_config()
  config.update(hidden_size=16, impl='fused', learning_rate=1e-2)
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (64, 28, 28), np.uint8)
  labels = rng.integers(0, 10, 64).astype(np.int32)
  indices = benchmark._indices(64, 16, 4, 0)
  linen = state_lib.create_train_state(config, jax.random.key(0),
                                       impl='fused')
  model = seqnnx.from_linen_params(
      classifier.from_config(config, 28, rngs=nnx.Rngs(0)), linen.params)
  graphdef, state = nnx.split(
      (model, nnx.Optimizer(model, optim.optimizer(config), wrt=nnx.Param)))
  linen, linen_metrics = jax.jit(steps.train_steps)(linen, images, labels,
                                                    indices)
  state, metrics = jax.jit(functools.partial(
      benchmark._nnx_train_steps, graphdef))(state, images, labels, indices)
  jax.tree.map(np.testing.assert_array_equal, metrics, linen_metrics)
  trained, _ = nnx.merge(graphdef, state)
  jax.tree.map(np.testing.assert_array_equal,
               seqnnx.to_linen_params(trained), linen.params)
