"""``impl='auto'`` cannot break a run: fault injection on the CPU.

Each test breaks one path as a new or untested path could break (an error
while tracing, an error while running, results 5% off while fastest), runs
``train_and_evaluate`` with ``auto`` timing for real, and checks that the
run finishes on a path that works, says which path it skipped and why, and
that a second run reads the skip from the cache instead of trying again.
"""

import jax
import jax.numpy as jnp
import pytest

from conftest import needs_cpu_kernel, small_config
from seqclf import train
from seqclf.kernels import fast_lstm, lstm_kernel
from seqclf.training import autotune

pytestmark = pytest.mark.slow


@pytest.fixture
def data(mnist):
  return {name: {k: v[:400] for k, v in split.items()}
          for name, split in mnist.items()}


def _config(impl):
  return small_config(impl=impl, hidden_size=16, batch_size=20,
                      num_train_steps=20, eval_batch_size=200)


@pytest.fixture(scope='module')
def scan_loss(tmp_path_factory, mnist):
  """The test loss of the same run on the reference path."""
  data = {name: {k: v[:400] for k, v in split.items()}
          for name, split in mnist.items()}
  return train.train_and_evaluate(
      _config('scan'), tmp_path_factory.mktemp('scan'), quiet=True,
      datasets=data)['test_loss']


def _run(tmp_path, name, data, capsys):
  results = train.train_and_evaluate(_config('auto'), tmp_path / name,
                                     datasets=data)
  out = capsys.readouterr()
  return results, out.out + out.err


def _runs_twice(tmp_path, monkeypatch, data, capsys, broken):
  """Two runs with timing on, one cache; the second must not touch
  ``broken`` (a path skipped once is not tried again)."""
  monkeypatch.setenv('SEQCLF_AUTOTUNE', '1')
  monkeypatch.setenv('SEQCLF_AUTOTUNE_CACHE', str(tmp_path / 'auto.json'))
  first, log = _run(tmp_path, 'first', data, capsys)
  calls = len(broken)
  second, again = _run(tmp_path, 'second', data, capsys)
  assert len(broken) == calls, 'the skipped path was tried again'
  assert 'cached' in again
  return first, log, second, again


def test_a_path_that_fails_to_trace_is_skipped(tmp_path, monkeypatch, data,
                                               capsys, scan_loss):
  calls = []

  def broken(*args, **kwargs):
    calls.append(1)
    raise TypeError('injected trace failure')

  monkeypatch.setattr(fast_lstm, 'lstm_recurrence', broken)
  first, log, second, again = _runs_twice(tmp_path, monkeypatch, data,
                                          capsys, calls)
  line = 'impl=auto: fused skipped: TypeError: injected trace failure'
  assert line in log and line in again
  assert first['impl'] != 'fused' and second['impl'] == first['impl']
  assert first['test_loss'] == pytest.approx(scan_loss, rel=1e-4)


def test_a_path_that_fails_at_run_time_is_skipped(tmp_path, monkeypatch, data,
                                                  capsys, scan_loss):
  real, calls = fast_lstm.lstm_recurrence, []

  def fail(x):
    calls.append(1)
    raise RuntimeError('injected run-time failure')

  def broken(*args, **kwargs):  # traces and compiles; fails when run
    (c, h), hs = real(*args, **kwargs)
    flag = jax.pure_callback(fail, jax.ShapeDtypeStruct((), jnp.float32),
                             jax.lax.stop_gradient(hs.sum()))
    return (c, h), hs + 0 * flag

  monkeypatch.setattr(fast_lstm, 'lstm_recurrence', broken)
  first, log, second, again = _runs_twice(tmp_path, monkeypatch, data,
                                          capsys, calls)
  assert calls, 'the injected failure never ran'
  assert 'impl=auto: fused skipped: ' in log
  assert 'fused skipped: JaxRuntimeError: INTERNAL: CpuCallback error' in log
  assert 'impl=auto: fused skipped: ' in again
  assert first['impl'] != 'fused' and first['test_loss'] == pytest.approx(scan_loss, rel=1e-4)


@needs_cpu_kernel
def test_a_fast_path_that_is_5_percent_off_is_skipped(tmp_path, monkeypatch,
                                                      data, capsys, scan_loss):
  real, calls = lstm_kernel.lstm_layer, []

  def off(*args, **kwargs):
    calls.append(1)
    (c, h), hs = real(*args, **kwargs)
    return (c * 1.05, h * 1.05), hs * 1.05

  def measure(runs, timer, rounds):  # the kernel would be the fastest
    del timer, rounds
    return {name: 0.1 if name == 'kernel' else 1.0 + (name == 'scan')
            for name, run in runs.items() if run() is not None}

  monkeypatch.setattr(lstm_kernel, 'lstm_layer', off)
  monkeypatch.setattr(autotune, 'measure', measure)
  first, log, second, again = _runs_twice(tmp_path, monkeypatch, data,
                                          capsys, calls)
  assert 'impl=auto: kernel skipped: disagrees with scan: largest ' in log
  assert 'impl=auto: kernel skipped: disagrees with scan' in again
  assert first['impl'] == second['impl'] == 'fused'
  assert first['test_loss'] == pytest.approx(scan_loss, rel=1e-4)
