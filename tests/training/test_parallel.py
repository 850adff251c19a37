"""Data parallelism: single, pmap and sharded agree, across processes and device counts.

Forced CPU devices (``--xla_force_host_platform_device_count``) must be set
before JAX starts, so every run happens in a subprocess that executes this
file as a worker (see ``_worker``). Each worker trains a tiny model on a
small real-MNIST subset with ``train.train_and_evaluate`` and saves the
params it holds in memory when the last checkpoint is written.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
STEPS = 20
SIZES = {'train': 800, 'validation': 200, 'test': 200}


def _config(mode: str, steps: int, batch_size: int = 8, **overrides):
  from seqclf.config import base_config  # pylint: disable=g-import-not-at-top
  c = base_config()
  c.update(hidden_size=16, batch_size=batch_size, num_train_steps=steps,
           steps_per_call=10, eval_every=10, checkpoint_every=10, log_every=10,
           eval_batch_size=100, parallelism=mode, **overrides)
  return c


def _worker(spec: dict) -> None:
  """Runs ``spec['jobs']`` in this process; writes each job's params and results."""
  import jax  # pylint: disable=g-import-not-at-top

  # A compilation cache shared by this test's workers: most of a worker's
  # CPU time is XLA compiling the same small programs again.
  jax.config.update('jax_compilation_cache_dir', spec['cache'])
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
  if spec.get('coordinator'):
    from seqclf.training import parallel  # pylint: disable=g-import-not-at-top
    parallel.initialize_distributed(spec['coordinator'], spec['num_processes'],
                                    spec['process_id'])
  from flax import traverse_util  # pylint: disable=g-import-not-at-top

  from seqclf import train  # pylint: disable=g-import-not-at-top
  from seqclf.config import ConfigError  # pylint: disable=g-import-not-at-top
  from seqclf.training import checkpoint  # pylint: disable=g-import-not-at-top
  from seqclf.training import parallel  # pylint: disable=g-import-not-at-top
  from seqclf.training import preemption  # pylint: disable=g-import-not-at-top

  saved = {}
  save = checkpoint.save

  def spy(mngr, state, config, *rest):  # The state the trainer holds at each
    saved['state'] = state              # save.
    save(mngr, state, config, *rest)

  checkpoint.save = spy
  with np.load(spec['data']) as f:
    data = {s: {'image': f[f'{s}_image'], 'label': f[f'{s}_label']}
            for s in SIZES}
  def load_models(jobs):  # Inference's restore: abstract target, this process.
    from seqclf import inference  # pylint: disable=g-import-not-at-top
    for job in jobs:
      _, params, _ = inference.load_model(job['workdir'])
      np.savez(Path(job['out']).with_suffix('.npz'),
               **traverse_util.flatten_dict(
                   jax.tree.map(np.asarray, params), sep='.'))

  load_models(spec.get('load_model', []))
  for job in spec['jobs']:
    out = Path(job['out'])
    config = _config(job['mode'], job['steps'], job.get('batch_size', 8),
                     **job.get('overrides', {}))
    config.data_placement = job.get('placement', 'device')
    try:
      results = train.train_and_evaluate(config, job['workdir'], quiet=True,
                                         datasets=data)
    except ConfigError as e:
      if not job.get('expect_error'):
        raise
      out.with_suffix('.json').write_text(json.dumps({'error': str(e)}))
      continue
    except preemption.Preempted as e:
      out.with_suffix('.json').write_text(json.dumps({'preempted_at': e.step}))
      continue
    params = saved['state'].params
    replicas = [np.asarray(s.data) for s in jax.tree.leaves(params)[0]
                .addressable_shards]
    flat = traverse_util.flatten_dict(
        jax.tree.map(np.asarray, parallel.first_replica(params)), sep='.')
    np.savez(out.with_suffix('.npz'), **flat)
    out.with_suffix('.json').write_text(json.dumps({
        'parallelism': results['parallelism'],
        'num_devices': len(results['devices']),
        'process_count': jax.process_count(),
        'resumed_from_step': results['resumed_from_step'],
        'step': results['step'],
        'test_loss': results['test_loss'],
        'test_macro_f1': results['test_macro_f1'],
        'best_step': results.get('best_step'),
        'examples_read': results.get('examples_read_by_process'),
        'local_replicas_equal': all(np.array_equal(r, replicas[0])
                                    for r in replicas)}))
  if jax.process_index() == 0:  # Alone, as the report after `train` does.
    load_models(spec.get('load_model_after', []))


def _launch(spec: dict, devices: int) -> subprocess.Popen:
  spec = {**spec, 'cache': str(Path(spec['data']).parent / 'jax_cache')}
  env = dict(os.environ,
             XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
             JAX_PLATFORMS='cpu')
  return subprocess.Popen(
      [sys.executable, __file__, json.dumps(spec)], cwd=REPO, env=env,
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _run(*procs: subprocess.Popen, timeout: float = 240) -> None:
  deadline = time.monotonic() + timeout
  for p in procs:
    try:
      out, _ = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      pytest.fail(f'workers still running after {timeout} s (a hang in a '
                  f'collective?):\n{p.communicate()[0][-3000:]}')
    assert p.returncode == 0, f'worker failed:\n{out[-4000:]}'


def _load(out: Path) -> tuple[dict[str, np.ndarray], dict]:
  with np.load(out.with_suffix('.npz')) as f:
    params = dict(f)
  return params, json.loads(out.with_suffix('.json').read_text())


def _assert_close(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=k)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


@pytest.fixture(scope='module')
def runs(tmp_path_factory, mnist):
  """One 4-device process: each mode for STEPS steps, and half a sharded run
  (once per test run: conftest.built_once)."""
  # Not at the top: this file is also the workers' script, which needs no
  # conftest (it imports tfds).
  from conftest import built_once  # pylint: disable=g-import-not-at-top
  return built_once(tmp_path_factory, 'parallel',
                    lambda tmp: _four_device_runs(tmp, mnist))


def _four_device_runs(tmp: Path, mnist) -> None:
  data = tmp / 'data.npz'
  np.savez(data, **{f'{s}_{k}': mnist[s][k][:n]
                    for s, n in SIZES.items() for k in ('image', 'label')})
  jobs = [{'mode': m, 'steps': STEPS, 'workdir': str(tmp / m),
           'out': str(tmp / f'out_{m}')} for m in ('single', 'pmap', 'sharded')]
  # Class weights and a monitored best checkpoint in every mode.
  weighted = {'class_weight': 'balanced', 'monitor': 'val_macro_f1'}
  jobs += [{'mode': m, 'steps': STEPS, 'workdir': str(tmp / f'w_{m}'),
            'out': str(tmp / f'out_w_{m}'), 'overrides': weighted}
           for m in ('single', 'pmap', 'sharded')]
  jobs.append({'mode': 'sharded', 'steps': STEPS // 2,
               'workdir': str(tmp / 'from4'), 'out': str(tmp / 'out_half4')})
  jobs += [{'mode': m, 'steps': 1, 'batch_size': 6, 'workdir': str(tmp / 'bad'),
            'out': str(tmp / f'out_bad_{m}'), 'expect_error': True}
           for m in ('pmap', 'sharded')]
  _run(_launch({'data': str(data), 'jobs': jobs}, devices=4))


@pytest.mark.slow
def test_modes_agree_on_four_devices(runs):
  single, info = _load(runs / 'out_single')
  assert (info['parallelism'], info['num_devices']) == ('single', 4)
  for mode in ('pmap', 'sharded'):
    params, info = _load(runs / f'out_{mode}')
    assert info['parallelism'] == mode and info['step'] == STEPS
    assert info['local_replicas_equal'], f'{mode}: replicas diverged'
    _assert_close(params, single)
  # The 10-step run must differ, or the comparison above proves nothing.
  half, _ = _load(runs / 'out_half4')
  assert not np.allclose(half['head.kernel'], single['head.kernel'])


@pytest.mark.slow
def test_class_weights_and_best_checkpoint_agree_across_modes(runs):
  single, info = _load(runs / 'out_w_single')
  plain, _ = _load(runs / 'out_single')
  assert not np.allclose(single['head.kernel'], plain['head.kernel'])
  for mode in ('pmap', 'sharded'):
    params, other = _load(runs / f'out_w_{mode}')
    assert other['parallelism'] == mode
    _assert_close(params, single)
    assert other['best_step'] == info['best_step'] is not None
    assert other['test_macro_f1'] == pytest.approx(info['test_macro_f1'],
                                                   abs=0.02)


@pytest.mark.slow
def test_batch_must_divide_by_device_count(runs):
  for mode in ('pmap', 'sharded'):
    error = json.loads((runs / f'out_bad_{mode}.json').read_text())['error']
    assert 'batch_size=6 does not divide by the 4 devices' in error
    assert ('multiple of 4, `cpu_devices` to a number that divides it, or '
            "`parallelism` to 'single'.") in error


def test_unknown_parallelism_is_rejected():
  from seqclf.config import ConfigError  # pylint: disable=g-import-not-at-top
  from seqclf.config import validate
  with pytest.raises(ConfigError, match='parallelism'):
    validate(_config('tpu', 1))


@pytest.fixture(scope='module')
def two_processes(runs, tmp_path_factory):
  """Two processes x 2 devices: a 20-step run, then a long one that process 1
  alone gets SIGTERM in (the checkpoint save is collective, so both must stop
  after the same step, or the other hangs in the save). Written into ``runs``,
  once per test run."""
  from conftest import built_once  # pylint: disable=g-import-not-at-top
  built_once(tmp_path_factory, 'two_processes',
             lambda _: _two_process_runs(runs))
  return runs


def _two_process_runs(runs: Path) -> None:
  spec = {'data': str(runs / 'data.npz'), 'coordinator':
          f'localhost:{_free_port()}', 'num_processes': 2}
  stop_dir = runs / 'stop'
  procs = [_launch({**spec, 'process_id': i, 'load_model_after': [
      {'workdir': str(runs / 'multi'), 'out': str(runs / 'out_multi_loaded')}],
                    'jobs': [
      # Another seed on each process: refused on both, not two models.
      {'mode': 'auto', 'steps': STEPS, 'workdir': str(runs / 'mismatch'),
       'overrides': {'seed': 5 + i}, 'expect_error': True,
       'out': str(runs / f'out_mismatch{i}')},
      {'mode': 'auto', 'steps': STEPS, 'workdir': str(runs / 'multi'),
       'out': str(runs / f'out_multi{i}')},
      {'mode': 'auto', 'steps': STEPS, 'workdir': str(runs / 'multi_stream'),
       'placement': 'stream', 'out': str(runs / f'out_multi_stream{i}')},
      {'mode': 'auto', 'steps': 2000, 'workdir': str(stop_dir),
       'out': str(runs / f'out_stop{i}')}]}, devices=2) for i in range(2)]
  deadline = time.monotonic() + 180
  while not (stop_dir / 'checkpoints' / '10').exists():
    if time.monotonic() > deadline or procs[1].poll() is not None:
      for p in procs:
        p.kill()
      pytest.fail('no checkpoint 10 of the long run:\n'
                  + procs[1].communicate()[0][-3000:])
    time.sleep(0.05)
  procs[1].send_signal(signal.SIGTERM)
  _run(*procs, timeout=90)


@pytest.mark.slow
def test_two_processes_match_one(two_processes):
  runs = two_processes
  reference, _ = _load(runs / 'out_sharded')
  (p0, i0), (p1, i1) = _load(runs / 'out_multi0'), _load(runs / 'out_multi1')
  for info in (i0, i1):
    assert (info['parallelism'], info['num_devices'],
            info['process_count']) == ('sharded', 4, 2)
    assert info['local_replicas_equal']
  for k in p0:
    np.testing.assert_array_equal(p0[k], p1[k], err_msg=k)
  _assert_close(p0, reference)
  assert i0['test_loss'] == i1['test_loss']
  # Process 0 alone read the checkpoint back (no orbax barrier to hang on).
  _assert_close(dict(np.load(runs / 'out_multi_loaded.npz')), p0)
  # Only process 0 logs.
  lines = (runs / 'multi' / 'metrics.jsonl').read_text().splitlines()
  assert len([l for l in lines if '"validation"' in l]) == 2


@pytest.mark.slow
def test_processes_given_other_configs_are_refused_on_each(two_processes):
  for i in range(2):
    error = json.loads((two_processes / f'out_mismatch{i}.json').read_text())
    assert error['error'] == (
        'The 2 processes were given different configs (differing in seed): '
        'run the same command on each, with only --process_id differing.')
  assert not (two_processes / 'mismatch').exists()


@pytest.mark.slow
def test_two_processes_stream_their_own_parts(two_processes):
  runs = two_processes
  resident, _ = _load(runs / 'out_multi0')
  for i in range(2):
    params, info = _load(runs / f'out_multi_stream{i}')
    # Each process read half of every batch of 8, and nothing else...
    assert info['examples_read'] == STEPS * 8 // 2
    # ...and trained exactly what the device-resident job trained.
    for k in resident:
      np.testing.assert_array_equal(params[k], resident[k], err_msg=k)


@pytest.mark.slow
def test_a_stop_on_one_process_stops_all_at_one_step(two_processes):
  runs = two_processes
  stops = [json.loads((runs / f'out_stop{i}.json').read_text())
           for i in range(2)]
  assert stops[0] == stops[1] and 10 <= stops[0]['preempted_at'] < 2000
  saved = max(int(p.name) for p in (runs / 'stop' / 'checkpoints').iterdir()
              if p.name.isdigit())
  assert saved == stops[0]['preempted_at']


@pytest.mark.slow
def test_checkpoints_move_between_device_counts(runs):
  data = str(runs / 'data.npz')
  # 4 devices -> 1: resume the fixture's 10-step sharded run on one device;
  # 1 device -> 4: train 10 steps on one device, resume them sharded on four.
  _run(_launch({'data': data, 'load_model': [
      {'workdir': str(runs / 'from4'), 'out': str(runs / 'out_loaded4')}],
                'jobs': [
      {'mode': 'auto', 'steps': STEPS, 'workdir': str(runs / 'from4'),
       'out': str(runs / 'out_4to1')},
      {'mode': 'auto', 'steps': STEPS // 2, 'workdir': str(runs / 'from1'),
       'out': str(runs / 'out_half1')}]}, devices=1))
  _run(_launch({'data': data, 'jobs': [
      {'mode': 'auto', 'steps': STEPS, 'workdir': str(runs / 'from1'),
       'out': str(runs / 'out_1to4')}]}, devices=4))
  loaded = dict(np.load(runs / 'out_loaded4.npz'))
  _assert_close(loaded, _load(runs / 'out_half4')[0])
  reference, _ = _load(runs / 'out_single')
  # auto: pmap on one process's CPU devices (parallel.resolve_mode).
  for name, mode, devices in (('4to1', 'single', 1), ('1to4', 'pmap', 4)):
    params, info = _load(runs / f'out_{name}')
    assert (info['parallelism'], info['num_devices']) == (mode, devices)
    assert info['resumed_from_step'] == STEPS // 2 and info['step'] == STEPS
    _assert_close(params, reference)


if __name__ == '__main__':
  _worker(json.loads(sys.argv[1]))
