"""``seqclf train`` splits a CPU host into single-threaded devices, one per core.

The split must happen before JAX starts its backends, so each check runs in a
fresh process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO, run_cli
from seqclf.training import parallel


@pytest.mark.parametrize('requested, batch, cores, expected', [
    (0, 100, 2, 2),   # auto: one per core
    (0, 99, 2, 1),    # ... lowered to a divisor of the batch
    (0, 6, 4, 3),
    (0, 100, 1, 1),
    (3, 99, 2, 3),    # an explicit count is taken as given
])
def test_cpu_device_count(requested, batch, cores, expected):
  assert parallel.cpu_device_count(requested, batch, cores) == expected


CONFIGURE = textwrap.dedent('''
    import json, os, sys
    import jax
    from seqclf.training import parallel  # pylint: disable=g-import-not-at-top
    count = parallel.configure_cpu_devices(int(sys.argv[1]), 100)
    print(json.dumps({'returned': count, 'devices': jax.device_count(),
                      'xla_flags': os.environ.get('XLA_FLAGS', ''),
                      'mode': parallel.resolve_mode('auto')}))
''')


def _configure(requested: int, xla_flags: str | None = None) -> dict:
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  env['JAX_PLATFORMS'] = 'cpu'
  if xla_flags is not None:
    env['XLA_FLAGS'] = xla_flags
  out = subprocess.run([sys.executable, '-c', CONFIGURE, str(requested)],
                       cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=120)
  assert out.returncode == 0, out.stderr[-3000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_configure_splits_cpu_into_single_threaded_devices():
  got = _configure(3)
  assert got['returned'] == 3 and got['devices'] == 3
  assert '--xla_cpu_multi_thread_eigen=false' in got['xla_flags']
  assert got['mode'] == 'pmap'  # auto on one process's CPU devices
  one = _configure(1)
  assert one['devices'] == 1 and one['mode'] == 'single'
  assert 'multi_thread_eigen' not in one['xla_flags']


def test_users_xla_flags_win():
  got = _configure(3, '--xla_force_host_platform_device_count=2')
  assert got['returned'] is None and got['devices'] == 2


@pytest.mark.slow
def test_train_cli_uses_every_core(tmp_path):
  cores = len(os.sched_getaffinity(0))
  expected = parallel.cpu_device_count(0, 100, cores)
  for name, extra in (('auto', []), ('one', ['--config.cpu_devices=1'])):
    out = run_cli('train', '--config', 'configs/default.py', '--workdir',
                  str(tmp_path / name), '--config.hidden_size=32',
                  '--config.num_train_steps=20',
                  '--config.steps_per_call=10', '--config.eval_every=20',
                  '--config.checkpoint_every=20', '--quiet', '--noreport',
                  *extra, env={'XLA_FLAGS': '', 'JAX_PLATFORMS': 'cpu'})
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads((tmp_path / name / 'results.json').read_text())
    devices = expected if name == 'auto' else 1
    assert len(results['devices']) == devices
    assert results['parallelism'] == ('pmap' if devices > 1 else 'single')
  # Both layouts train the same model up to float summation order.
  auto, one = (json.loads((tmp_path / n / 'results.json').read_text())
               for n in ('auto', 'one'))
  assert abs(auto['test_loss'] - one['test_loss']) < 1e-3
