"""Streaming (data_placement='stream'): the same batches as the device-resident
run, exact resume, npz shard directories, the placement rule."""

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from conftest import REPO, run_cli, small_config
from seqclf import errors, train
from seqclf.data import normalization, npz_shards, order, registry, stream
from seqclf.data.splits import carve
from seqclf.training import checkpoint, state as state_lib


def _shards(root, lengths=True, seed=0):
  """train/ and test/ shards of float series, the last shard shorter."""
  rng = np.random.default_rng(seed)
  arrays = {}
  for split, sizes in (('train', (70, 50, 40)), ('test', (30, 30))):
    (root / split).mkdir(parents=True)
    xs = []
    for k, n in enumerate(sizes):
      steps = 12 if k < len(sizes) - 1 else 9
      x = rng.normal(size=(n, steps, 3)).astype(np.float32)
      y = (x[:, 0, 0] > 0).astype(np.int64) + (x[:, 1, 1] > 0)
      extra = {}
      if lengths and k == 0:
        extra['lengths'] = rng.integers(1, steps + 1, n)
      if k == 1:  # memory-mapped .npy pair
        np.save(root / split / f's{k}_x.npy', x)
        np.save(root / split / f's{k}_y.npy', y)
      else:
        np.savez(root / split / f's{k}.npz', x=x, y=y, **extra)
      xs.append((x, y))
    arrays[split] = xs
  return arrays


def test_placement_rule():
  share = stream.DEVICE_SHARE
  assert stream.placement('auto', int(share * 1000) + 1, 1000) == 'stream'
  assert stream.placement('auto', int(share * 1000), 1000) == 'device'
  assert stream.placement('stream', 1, 10**12) == 'stream'
  assert stream.placement('device', 10**12, 1) == 'device'
  with pytest.raises(errors.ConfigError, match='data_placement'):
    stream.placement('disk', 1, 1)


def test_device_memory_of_an_accelerator_and_of_cpu_devices():
  class Fake:
    platform = 'gpu'
    def memory_stats(self):
      return {'bytes_limit': 80 << 30}
  assert stream.device_memory_bytes(Fake()) == 80 << 30
  host = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
  assert stream.device_memory_bytes(jax.devices('cpu')[0], 4) == host // 4


def test_missing_grain_is_one_line(monkeypatch):
  monkeypatch.setitem(sys.modules, 'grain', None)
  with pytest.raises(errors.ConfigError, match=r"pip install 'seqclf\[stream\]'"):
    stream.require_grain()


def test_stream_reads_the_trainers_batches_from_any_step():
  rng = np.random.default_rng(0)
  split = {'image': rng.integers(0, 255, (53, 4, 2), dtype=np.uint8),
           'label': rng.integers(0, 3, 53)}
  reader = stream.TrainStream(split, seed=7, batch_size=10, part=slice(5, 10))
  steps = reader.steps(3)
  expected = order.train_indices(7, 53, 10, 3, 8)  # crosses an epoch
  for row in expected:
    image, label = next(steps)
    np.testing.assert_array_equal(image, split['image'][row[5:]])
    np.testing.assert_array_equal(label, split['label'][row[5:]])


@pytest.mark.slow  # starting worker processes: seconds
def test_worker_processes_read_the_same_batches():
  """...as plain arrays, not in shared memory: grain leaves the blocks of
  batches read ahead behind when a run ends (a warning at exit)."""
  rng = np.random.default_rng(1)
  split = {'image': rng.normal(size=(40, 3, 2)).astype(np.float32),
           'label': rng.integers(0, 3, 40)}
  reader = stream.TrainStream(split, seed=2, batch_size=8, workers=2)
  steps = reader.steps(4)
  try:
    for step in range(4, 12):
      for got, expected in zip(next(steps), reader.batch(step)):
        assert type(got) is np.ndarray  # pylint: disable=unidiomatic-typecheck
        np.testing.assert_array_equal(got, expected)
  finally:
    steps.close()


def test_npz_shards_prepare_and_stream(tmp_path):
  root = tmp_path / 'shards'
  arrays = _shards(root)
  with pytest.raises(errors.DataError, match='seqclf prepare-data --dataset=npz:'):
    registry.read(f'npz:{root}', None, 0.1)
  npz_shards.prepare(root, validation_fraction=0.1)
  lazy = registry.read(f'npz:{root}', None, 0.1, lazy=True)
  eager = registry.read(f'npz:{root}', None, 0.1)
  assert stream.is_lazy(lazy['train']['image'])
  assert len(lazy['test']['label']) == 60
  # Validation: a tenth of each class of the 160 training examples.
  y = np.concatenate([y for _, y in arrays['train']])
  for c in np.unique(y):
    assert (lazy['validation']['label'] == c).sum() == round(0.1 * (y == c).sum())
    assert ((lazy['validation']['label'] == c).sum()
            + (lazy['train']['label'] == c).sum()) == (y == c).sum()
  for split in lazy:
    np.testing.assert_array_equal(np.asarray(lazy[split]['image']),
                                  eager[split]['image'])
  # Test keeps the shards' order; the shorter shard is padded, its lengths kept.
  x = np.concatenate([np.pad(a, ((0, 0), (0, 12 - a.shape[1]), (0, 0)))
                      for a, _ in arrays['test']])
  np.testing.assert_array_equal(eager['test']['image'], x)
  np.testing.assert_array_equal(eager['test']['label'],
                                np.concatenate([y for _, y in arrays['test']]))
  with np.load(root / 'test' / 's0.npz') as f:
    np.testing.assert_array_equal(eager['test']['lengths'][:30], f['lengths'])
  assert (eager['test']['lengths'][30:] == 9).all()
  idx = np.array([[5, 0], [59, 3]])
  np.testing.assert_array_equal(lazy['test']['image'][idx], x[idx])


def test_the_prepare_command_named_pastes_into_a_shell(tmp_path):
  root = tmp_path / 'my shards'
  _shards(root)
  with pytest.raises(errors.DataError) as e:
    registry.read(f'npz:{root}', None, 0.1)
  command = str(e.value).split('`')[1]
  assert shlex.split(command) == ['seqclf', 'prepare-data',
                                  f'--dataset=npz:{root}']


@pytest.mark.parametrize('change, match', [
    (lambda x, y: (x[..., :2], y), '2 features per step, but s0.npz has 3'),
    (lambda x, y: (x.astype(np.uint8), y), 'x is uint8, but s0.npz is float'),
    (lambda x, y: (x, y.astype(str)), r'y must be 40 integer labels, got <U21 '
     r'of shape \(40,\) \(shards take classes 0..K-1; string labels only a '
     r'single .npz file\)'),
    (lambda x, y: (x, y - 1), r'labels must be classes 0..K-1, got -1: number '
     r'the classes 0..K-1 \(no negative labels\).'),
    (lambda x, y: (x, y, np.full(len(y), 12)),
     r"arrays \['seq_len'\] are none of the names seqclf reads: x, y, "
     'lengths: rename them.'),
])
def test_bad_shard_is_named(tmp_path, change, match):
  root = tmp_path / 'shards'
  _shards(root, lengths=False)
  bad = root / 'train' / 's2.npz'
  with np.load(bad) as f:
    arrays = dict(zip(('x', 'y', 'seq_len'), change(f['x'], f['y'])))
  np.savez(bad, **arrays)
  with pytest.raises(errors.DataError, match=match) as e:
    npz_shards.prepare(root)
  assert str(e.value).startswith(str(bad))
  assert not npz_shards.prepared_dir(root).exists()


@pytest.mark.parametrize('name', ['s2.npz', 's1_y.npy'])
def test_a_truncated_shard_is_named(tmp_path, name):
  """A shard's file cut short (an interrupted copy): one line naming that
  file (the labels' .npy, not its x's)."""
  root = tmp_path / 'shards'
  _shards(root, lengths=False)
  bad = root / 'train' / name
  with open(bad, 'r+b') as f:
    f.truncate(100)
  with pytest.raises(errors.DataError, match='not a readable numpy file') as e:
    npz_shards.prepare(root)
  assert str(e.value).startswith(f'{bad}: ')
  assert not npz_shards.prepared_dir(root).exists()


def test_shards_changed_since_preparing_are_named(tmp_path):
  """A shard added, rewritten or removed after prepare-data would leave the
  prepared copy training on the old ones: one line asking for --force."""
  root = tmp_path / 'shards'
  arrays = _shards(root)
  npz_shards.prepare(root)
  extra = root / 'train' / 's9.npz'
  np.savez(extra, x=arrays['train'][0][0][:5], y=arrays['train'][0][1][:5])
  fix = f'run `seqclf prepare-data --dataset=npz:{root} --force`'
  for read in (lambda: npz_shards.prepare(root),
               lambda: registry.read(f'npz:{root}', None, 0.1, lazy=True)):
    with pytest.raises(errors.DataError, match=re.escape(
        'shards changed since they were prepared (train/s9.npz added): '
        + fix)):
      read()
  extra.unlink()
  registry.read(f'npz:{root}', None, 0.1, lazy=True)  # as prepared again
  with np.load(root / 'test' / 's0.npz') as f:
    np.savez(root / 'test' / 's0.npz', x=f['x'], y=(f['y'] + 1) % 3)
  (root / 'train' / 's1_y.npy').unlink()
  with pytest.raises(errors.DataError, match=re.escape(
      '(train/s1_y.npy removed, test/s0.npz rewritten)')):
    npz_shards.prepare(root)
  np.save(root / 'train' / 's1_y.npy', arrays['train'][1][1])
  npz_shards.prepare(root, force=True)
  data = registry.read(f'npz:{root}', None, 0.1)
  np.testing.assert_array_equal(data['test']['label'][:30],
                                (arrays['test'][0][1] + 1) % 3)


def test_a_prepared_copy_being_read_is_not_prepared_again(tmp_path,
                                                         monkeypatch):
  """prepare-data --force while a run reads the prepared copy would swap
  its files under it (its final evaluation read the new ones): refused in
  one line while a run holds it; a run holds it for its whole length."""
  root = tmp_path / 'shards'
  _shards(root)
  npz_shards.prepare(root)
  refused = re.escape(
      f'npz:{root}: a run is reading its prepared copy now: run '
      f'`seqclf prepare-data --dataset=npz:{root} --force` again once it '
      'ends.')
  with npz_shards.reading(root), npz_shards.reading(root):  # runs share it
    with pytest.raises(errors.DataError, match=refused):
      npz_shards.prepare(root, force=True)
  npz_shards.prepare(root, force=True)
  monkeypatch.setattr(train, '_checked_and_trained',
                      lambda *_: npz_shards.prepare(root, force=True))
  with pytest.raises(errors.DataError, match=refused):
    train.train_and_evaluate(_config(root), tmp_path / 'run')


def test_an_empty_shard_adds_nothing(tmp_path):
  """A shard of 0 examples (with lengths, or an .npy pair) is read as
  empty, not refused for its 0 lengths."""
  root = tmp_path / 'shards'
  _shards(root)
  np.savez(root / 'train' / 's3.npz', x=np.zeros((0, 12, 3), np.float32),
           y=np.zeros(0, np.int64), lengths=np.zeros(0, np.int64))
  np.save(root / 'train' / 's4_x.npy', np.zeros((0, 12, 3), np.float32))
  np.save(root / 'train' / 's4_y.npy', np.zeros(0, np.int64))
  npz_shards.prepare(root)
  data = registry.read(f'npz:{root}', None, 0.1, lazy=True)
  assert len(data['train']['label']) + len(data['validation']['label']) == 160


def _gaps(root, arrays):
  """NaN on valid steps of two rows of train's s0.npz that carving leaves in
  train (3 values: one row holds two), and NaN and inf past a third row's
  length; returns (NaN values, sequences holding one)."""
  labels = np.concatenate([y for _, y in arrays['train']])
  kept = carve(labels, 0.1)[0]
  path = root / 'train' / 's0.npz'
  with np.load(path) as f:
    x, y, lengths = f['x'], f['y'], f['lengths']
  a, b = kept[kept < len(x)][:2]
  x[a, 0, 0] = x[b, 0, 1] = x[b, lengths[b] - 1, 2] = np.nan
  short = next(r for r in range(len(x)) if lengths[r] < x.shape[1]
               and r not in (a, b))
  x[short, lengths[short]:, 0] = np.nan
  x[short, lengths[short], 1] = np.inf
  np.savez(path, x=x, y=y, lengths=lengths)
  return 3, 2


def test_prepare_keeps_nan_and_zeroes_the_padding(tmp_path):
  root = tmp_path / 'shards'
  nan, rows = _gaps(root, _shards(root))
  npz_shards.prepare(root)
  lazy = registry.read(f'npz:{root}', None, 0.1, missing='impute', lazy=True)
  eager = registry.read(f'npz:{root}', None, 0.1, missing='impute')
  held = 0
  for split, arrays in eager.items():
    x = np.asarray(lazy[split]['image'])  # as prepared
    np.testing.assert_array_equal(x, arrays['image'])
    valid = normalization.valid_steps(arrays)
    assert np.isfinite(x[~valid]).all() and not np.isinf(x).any()
    held += int(np.isnan(x).sum())
  assert held == nan
  assert lazy['train']['image'].missing == (nan, rows)
  assert lazy['validation']['image'].missing == (0, 0)


def test_refused_nan_is_one_line_streamed_or_resident(tmp_path):
  root = tmp_path / 'shards'
  nan, rows = _gaps(root, _shards(root))
  npz_shards.prepare(root)
  messages = []
  for lazy in (True, False):
    with pytest.raises(errors.DataError) as e:
      registry.read(f'npz:{root}', None, 0.1, missing='refuse', lazy=lazy)
    messages.append(str(e.value))
  assert messages[0] == messages[1]
  assert messages[0] == (
      f'npz:{root}: train split holds {nan} NaN value(s) (in {rows} '
      "sequence(s)) and config key `missing` is 'refuse': set "
      "`missing='impute'` (filled inside the model, with a mask channel per "
      'feature), or fill or drop them.')
  # Prepared before NaN was counted: it had none (refused then).
  (npz_shards.prepared_dir(root) / stream.MISSING).unlink()
  registry.read(f'npz:{root}', None, 0.1, missing='refuse', lazy=True)


@pytest.mark.parametrize('force', [False, True])
def test_failed_prepare_leaves_no_tmp(tmp_path, force):
  root = tmp_path / 'shards'
  _shards(root)
  if force:
    npz_shards.prepare(root)
  bad = root / 'test' / 's0.npz'
  with np.load(bad) as f:
    x, y, lengths = f['x'], f['y'], f['lengths']
  x[3, 0, 1] = np.inf
  np.savez(bad, x=x, y=y, lengths=lengths)
  with pytest.raises(errors.DataError, match='inf') as e:
    npz_shards.prepare(root, force=force)
  assert str(e.value).startswith(f'{bad}: ') and '\n' not in str(e.value)
  out = npz_shards.prepared_dir(root)
  assert not out.with_name(f'{out.name}.tmp').exists()
  assert (out / 'dataset_info.json').is_file() == force  # the old one kept


def _final_params(workdir, config):
  target = state_lib.create_train_state(config, jax.random.key(0),
                                        sequence_shape=(12, 3))
  return checkpoint.restore(checkpoint.manager(workdir, create=False),
                            target)[0]


@pytest.fixture(scope='module')
def prepared_shards(tmp_path_factory):
  root = tmp_path_factory.mktemp('stream') / 'shards'
  _shards(root)
  npz_shards.prepare(root)
  return root


def _config(root, **overrides):
  return small_config(**{
      'dataset': f'npz:{root}', 'num_classes': 3, 'hidden_size': 16,
      'batch_size': 16, 'num_train_steps': 20, 'steps_per_call': 5,
      'eval_every': 10, 'checkpoint_every': 10, 'eval_batch_size': 50,
      **overrides})


@pytest.mark.slow
@pytest.mark.parametrize('impl', ['scan', 'fused'])
def test_streamed_run_matches_resident_bitwise(prepared_shards, tmp_path, impl,
                                              monkeypatch):
  # 'auto' on a device said to have 1 kB: the split streams.
  monkeypatch.setattr(stream, 'device_memory_bytes', lambda: 1000)
  results = {}
  for placement, requested in (('device', 'device'), ('stream', 'auto')):
    config = _config(prepared_shards, impl=impl, data_placement=requested)
    results[placement] = train.train_and_evaluate(
        config, tmp_path / placement, quiet=True)
    assert results[placement]['data_placement'] == placement
  assert results['stream']['examples_read_by_process'] == 20 * 16
  assert results['stream']['test_loss'] == results['device']['test_loss']
  # Read back (its data compared by digest, the shards left on disk).
  from seqclf import inference  # pylint: disable=g-import-not-at-top
  assert inference.evaluate(tmp_path / 'stream', ('test',), quiet=True)[
      'test']['loss'] == pytest.approx(results['stream']['test_loss'])
  a = _final_params(tmp_path / 'device', config)
  b = _final_params(tmp_path / 'stream', config)
  for x, y in zip(jax.tree.leaves((a.params, a.opt_state)),
                  jax.tree.leaves((b.params, b.opt_state))):
    np.testing.assert_array_equal(x, y)


@pytest.mark.slow
def test_imputed_nan_streamed_matches_resident_bitwise(tmp_path):
  from seqclf import inference  # pylint: disable=g-import-not-at-top
  root = tmp_path / 'shards'
  _gaps(root, _shards(root))
  npz_shards.prepare(root)
  params = {}
  for placement in ('device', 'stream'):
    config = _config(root, impl='scan', missing='impute',
                     data_placement=placement)
    results = train.train_and_evaluate(config, tmp_path / placement,
                                       quiet=True)
    assert results['data_placement'] == placement
    params[placement] = inference.load_model(tmp_path / placement)[1]
  assert params['device']['lstm_0']['cell']['input']['kernel'].shape[0] == 6
  for x, y in zip(jax.tree.leaves(params['device']),
                  jax.tree.leaves(params['stream'])):
    np.testing.assert_array_equal(x, y)


def _cli(workdir, root, steps):
  return [sys.executable, '-m', 'seqclf', 'train', '--config',
          'configs/default.py', '--workdir', str(workdir), '--noreport',
          '--quiet', f'--config.dataset=npz:{root}', '--config.num_classes=3',
          '--config.hidden_size=16', '--config.batch_size=16',
          f'--config.num_train_steps={steps}', '--config.steps_per_call=5',
          '--config.checkpoint_every=5', '--config.eval_every=1000',
          '--config.impl=scan', '--config.data_placement=stream']


def _stat(pid):
  """(state, parent pid) of a process, from Linux's /proc; None once gone."""
  try:
    fields = Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()
  except OSError:
    return None
  return fields[0], int(fields[1])


def _children(pid):
  return [int(p.name) for p in Path('/proc').iterdir()
          if p.name.isdigit() and (_stat(p.name) or ('', 0))[1] == pid]


def _running(pid):
  """Whether ``pid`` runs (a zombie has ended, awaiting its reaper)."""
  stat = _stat(pid)
  return stat is not None and stat[0] != 'Z'


@pytest.mark.slow
def test_streamed_run_resumes_exactly_after_kill_9(prepared_shards, tmp_path):
  """Killed while grain worker processes read for it: they exit too, and
  the resumed run (on threads) equals one never killed."""
  steps = 60
  killed = tmp_path / 'killed'
  proc = subprocess.Popen(
      _cli(killed, prepared_shards, steps) + ['--config.data_workers=1'],
      cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  deadline = time.monotonic() + 120
  while not (killed / 'checkpoints' / '10').exists():
    assert proc.poll() is None and time.monotonic() < deadline, (
        proc.stderr.read().decode()[-2000:] if proc.poll() is not None else '')
    time.sleep(0.05)
  workers = _children(proc.pid)
  assert workers  # grain's worker (and multiprocessing's resource tracker)
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  deadline = time.monotonic() + 30
  while any(_running(w) for w in workers):
    assert time.monotonic() < deadline, 'grain workers outlived their trainer'
    time.sleep(0.2)
  mngr = checkpoint.manager(killed, create=False)
  stopped = mngr.latest_step()
  assert stopped is not None and stopped < steps
  for workdir in (killed, tmp_path / 'reference'):
    out = subprocess.run(_cli(workdir, prepared_shards, steps), cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
  config = _config(prepared_shards)
  a = _final_params(killed, config)
  b = _final_params(tmp_path / 'reference', config)
  assert int(a.step) == steps
  for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
    np.testing.assert_array_equal(x, y)


# ---- length buckets ------------------------------------------------------------
def test_bucket_sizes():
  assert order.bucket_sizes(1000) == (125, 250, 500, 1000)
  assert order.bucket_length(126, 1000) == 250
  assert order.bucket_length(10, 1000) == 125
  assert order.bucket_sizes(3) == (1, 2, 3)


def test_bucketed_epoch_sees_each_example_once_in_batches_of_like_length():
  rng = np.random.default_rng(0)
  lengths = np.clip(10 + rng.exponential(60, 5000).astype(int), 10, 1000)
  table = order.bucketed_epoch(3, 0, lengths, 32, 1000)
  assert table.shape == (5000 // 32, 32)
  assert len(np.unique(table)) == table.size
  np.testing.assert_array_equal(table, order.bucketed_epoch(3, 0, lengths, 32,
                                                            1000))
  assert not np.array_equal(table, order.bucketed_epoch(4, 0, lengths, 32, 1000))
  plain = order.train_indices(3, 5000, 32, 0, 5000 // 32)
  cost = lambda t: sum(order.bucket_length(lengths[b].max(), 1000) for b in t)
  assert cost(table) < 0.5 * cost(plain)
  spread = lambda t: np.mean([np.ptp(lengths[b]) for b in t])
  assert spread(table) < 0.2 * spread(plain)


def test_bucketed_chunks_run_in_few_shapes():
  from seqclf.training import loop  # pylint: disable=g-import-not-at-top
  rows = [(np.zeros((2, t)),) for t in [4] * 13 + [8] * 3 + [4]]
  pieces = loop._pieces(rows)  # pylint: disable=protected-access
  assert [len(p) for p in pieces] == [8, 4, 1, 2, 1, 1]
  assert sum(pieces, []) == rows


def test_bucket_by_length_needs_lengths(tmp_path):
  rng = np.random.default_rng(0)
  split = {'image': rng.normal(size=(40, 5, 2)).astype(np.float32),
           'label': rng.integers(0, 2, 40)}
  with pytest.raises(errors.ConfigError, match='bucket_by_length'):
    train.train_and_evaluate(
        small_config(num_classes=2, batch_size=8, bucket_by_length=True),
        tmp_path / 'run', quiet=True,
        datasets={'train': split, 'validation': split, 'test': split})
  assert not (tmp_path / 'run').exists()


@pytest.mark.slow
def test_bucketed_run_is_repeatable_and_reads_short_batches(prepared_shards,
                                                           tmp_path):
  config = _config(prepared_shards, impl='kernel', bucket_by_length=True,
                   num_train_steps=10, checkpoint_every=5)
  first = train.train_and_evaluate(config, tmp_path / 'a', quiet=True)
  again = train.train_and_evaluate(config, tmp_path / 'b', quiet=True)
  assert first['test_loss'] == again['test_loss']
  assert first['examples_read_by_process'] == 10 * 16
  plain = train.train_and_evaluate(_config(prepared_shards, impl='kernel',
                                           num_train_steps=10,
                                           checkpoint_every=5),
                                   tmp_path / 'c', quiet=True)
  assert plain['test_loss'] != first['test_loss']


def test_sweep_refuses_streaming(tmp_path):
  from seqclf import sweep  # pylint: disable=g-import-not-at-top
  for key, value in (('data_placement', 'stream'), ('bucket_by_length', True)):
    with pytest.raises(errors.ConfigError, match='seqclf sweep keeps'):
      sweep.run_sweep(small_config(**{key: value}), tmp_path / 'sweep',
                      num_seeds=2, quiet=True)
  assert not (tmp_path / 'sweep').exists()


@pytest.mark.slow
def test_cli_prepare_names_the_nan_it_kept(tmp_path):
  root = tmp_path / 'shards'
  nan, _ = _gaps(root, _shards(root))
  out = run_cli('prepare-data', f'--dataset=npz:{root}')
  assert out.returncode == 0, out.stderr
  assert (f"NaN values on valid steps: {{'train': {nan}}}; train with "
          '--config.missing=impute') in out.stdout
