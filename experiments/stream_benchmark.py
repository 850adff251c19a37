"""Streaming from disk (data_placement='stream'): speed against the device-resident data, and memory.

  python experiments/stream_benchmark.py mnist [--rounds 3]
  python experiments/stream_benchmark.py large --dir runs/big [--examples 250000] [--steps 200]
  python experiments/stream_benchmark.py buckets --dir runs/buckets [--seeds 3] [--steps 300]

``mnist``: ``seqclf train --config configs/default.py`` with
``data_placement`` device and stream, interleaved ``--rounds`` times; prints
each run's ``train_examples_per_second`` (which for streaming includes any
wait for data) and the ratio of the medians.

``large``: generates ``--examples`` float32 series of 256 x 16 (250,000 is
4.1 GB) as ``.npy`` shards in ``--dir``, converts them with ``seqclf
prepare-data --dataset=npz:DIR``, trains ``--steps`` streamed steps under
``/usr/bin/time -v`` and prints the peak resident memory of each command;
``--keep`` leaves the files, else they are deleted.

``buckets``: a long-tailed length dataset (lengths 10..1000), trained with
and without ``bucket_by_length`` for ``--seeds`` seeds, interleaved: examples/s
and test accuracy of each.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def seqclf(*args: str) -> list[str]:
  return [sys.executable, '-m', 'seqclf', *args]


def run_timed(cmd: list[str]) -> tuple[float, str]:
  """Runs ``cmd`` under ``/usr/bin/time -v``; its peak RSS in MB and output."""
  out = subprocess.run(['/usr/bin/time', '-v', *cmd], cwd=REPO,
                       capture_output=True, text=True)
  if out.returncode:
    raise SystemExit(f'{" ".join(cmd)} failed:\n{out.stderr[-3000:]}')
  rss = re.search(r'Maximum resident set size \(kbytes\): (\d+)', out.stderr)
  return int(rss.group(1)) / 1024, out.stdout


def train(workdir: Path, *overrides: str, config: str = 'configs/default.py'
          ) -> tuple[dict, float]:
  shutil.rmtree(workdir, ignore_errors=True)
  rss, _ = run_timed(seqclf('train', '--config', config, '--workdir',
                            str(workdir), '--noreport', '--quiet',
                            *overrides))
  return json.loads((workdir / 'results.json').read_text()), rss


def mnist(args: argparse.Namespace) -> None:
  speeds = {'device': [], 'stream': []}
  for r in range(args.rounds):
    for placement in speeds:
      res, rss = train(Path(args.dir) / placement,
                       f'--config.data_placement={placement}')
      speeds[placement].append(res['train_examples_per_second'])
      print(f'round {r} {placement}: {res["train_examples_per_second"]:,.0f} '
            f'ex/s, test {res["test_accuracy"]:.4f}, peak RSS {rss:,.0f} MB, '
            f'impl {res["impl"]}, {res["parallelism"]}', flush=True)
  med = {k: statistics.median(v) for k, v in speeds.items()}
  print(f'median ex/s: device {med["device"]:,.0f}, stream {med["stream"]:,.0f};'
        f' stream/device = {med["stream"] / med["device"]:.3f}; per round: '
        + ', '.join(f'{s / d:.3f}' for s, d in zip(speeds['stream'],
                                                     speeds['device'])))


def generate(root: Path, examples: int, steps: int, features: int,
             shard: int = 10_000, test: int = 5_000) -> None:
  """``examples`` random series in shards (train, validation, test); the
  label is which third of the range the mean of feature 0 falls in, so there
  is something to learn. Memory: one shard."""
  rng = np.random.default_rng(0)
  sizes = {'validation': test, 'test': test, 'train': examples - 2 * test}
  for split, n in sizes.items():
    (root / split).mkdir(parents=True, exist_ok=True)
    for k, start in enumerate(range(0, n, shard)):
      m = min(shard, n - start)
      x = np.lib.format.open_memmap(root / split / f'{k:04d}_x.npy', 'w+',
                                    np.float32, (m, steps, features))
      for i in range(0, m, 1000):
        x[i:i + 1000] = rng.standard_normal((min(1000, m - i), steps,
                                             features), np.float32)
      mean = x[:, :, 0].mean(1) * np.sqrt(steps)
      np.save(root / split / f'{k:04d}_y.npy',
              np.digitize(mean, [-0.43, 0.43]).astype(np.int64))
      x.flush()
      del x


def large(args: argparse.Namespace) -> None:
  root = Path(args.dir).resolve()
  if not (root / 'prepared').exists():
    shutil.rmtree(root, ignore_errors=True)
    generate(root, args.examples, 256, 16)
    size = sum(f.stat().st_size for f in root.rglob('*_x.npy'))
    print(f'generated {args.examples:,} x 256 x 16 float32: {size / 1e9:.2f} GB')
    rss, out = run_timed(seqclf('prepare-data', f'--dataset=npz:{root}'))
    print(f'prepare-data: peak RSS {rss:,.0f} MB; {out.strip()}', flush=True)
  res, rss = train(root / 'run', f'--config.dataset=npz:{root}',
                   '--config.num_classes=3', '--config.data_placement=stream',
                   f'--config.num_train_steps={args.steps}',
                   '--config.steps_per_call=20', '--config.eval_every=100000',
                   '--config.checkpoint_every=100000',
                   '--config.input_mean=0.0', '--config.input_std=1.0',
                   '--config.eval_batch_size=500')
  print(f'train {args.steps} streamed steps: peak RSS {rss:,.0f} MB, '
        f'{res["train_examples_per_second"]:,.0f} ex/s, test accuracy '
        f'{res["test_accuracy"]:.4f}, placement {res["data_placement"]}, '
        f'{res["wall_seconds"]:.0f} s')
  if not args.keep:
    shutil.rmtree(root)
    print(f'deleted {root}')


def long_tailed(root: Path, examples: int, test: int = 2000) -> None:
  """Lengths 10..1000, long-tailed (10 + an exponential of mean 60, so
  most are short); noise with feature 0 shifted by +-0.3 over the valid
  steps by class. One .npz per split."""
  rng = np.random.default_rng(1)
  steps = 1000
  for split, n in (('train', examples), ('test', test),
                   ('validation', test)):
    lengths = np.clip(10 + rng.exponential(60, n).astype(int), 10, steps)
    y = rng.integers(0, 2, n)
    x = rng.standard_normal((n, steps, 4)).astype(np.float32)
    x[:, :, 0] += 0.3 * (2 * y[:, None] - 1)
    x *= np.arange(steps)[None, :, None] < lengths[:, None, None]
    (root / split).mkdir(parents=True, exist_ok=True)
    np.savez(root / split / 'shard.npz', x=x, y=y, lengths=lengths)


def buckets(args: argparse.Namespace) -> None:
  root = Path(args.dir).resolve()
  if not (root / 'prepared').exists():
    shutil.rmtree(root, ignore_errors=True)
    long_tailed(root, args.bucket_examples)
    subprocess.run(seqclf('prepare-data', f'--dataset=npz:{root}'), cwd=REPO,
                   check=True, capture_output=True)
  rows = {False: [], True: []}
  for seed in range(args.seeds):
    for bucket in rows:
      res, _ = train(root / f'run_{bucket}_{seed}', f'--config.dataset=npz:{root}',
                     '--config.num_classes=2', f'--config.seed={seed}',
                     f'--config.bucket_by_length={bucket}',
                     f'--config.num_train_steps={args.steps}',
                     '--config.hidden_size=32', '--config.batch_size=32',
                     '--config.impl=kernel',
                     '--config.steps_per_call=50', '--config.eval_every=100000',
                     '--config.checkpoint_every=100000',
                     '--config.input_mean=0.0', '--config.input_std=1.0',
                     '--config.eval_batch_size=500')
      rows[bucket].append((res['train_examples_per_second'],
                           res['test_accuracy']))
      print(f'seed {seed} bucket_by_length={bucket}: '
            f'{res["train_examples_per_second"]:,.0f} ex/s, test '
            f'{res["test_accuracy"]:.4f}', flush=True)
  for bucket, r in rows.items():
    speed, acc = zip(*r)
    print(f'bucket_by_length={bucket}: median {statistics.median(speed):,.0f} '
          f'ex/s, test {np.mean(acc):.4f} +- {np.std(acc):.4f}')
  ratio = statistics.median(s for s, _ in rows[True]) / statistics.median(
      s for s, _ in rows[False])
  print(f'bucketed / unbucketed examples/s: {ratio:.2f}')


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('what', choices=('mnist', 'large', 'buckets'))
  parser.add_argument('--dir', default='runs/stream_benchmark')
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--examples', type=int, default=250_000)
  parser.add_argument('--steps', type=int, default=200)
  parser.add_argument('--bucket_examples', type=int, default=20_000)
  parser.add_argument('--seeds', type=int, default=3)
  parser.add_argument('--keep', action='store_true')
  args = parser.parse_args()
  os.environ.setdefault('SEQCLF_AUTOTUNE_CACHE',
                        str(REPO / 'runs' / 'autotune.json'))
  {'mnist': mnist, 'large': large, 'buckets': buckets}[args.what](args)


if __name__ == '__main__':
  main()
