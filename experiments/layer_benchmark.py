"""One LSTM layer's forward + backward pass, per implementation, interleaved.

Isolates the recurrence from the trainer: ``jax.grad`` of a loss on one
layer's outputs at (batch, 28, 28) -> LSTM-128, jitted, for seqclf's
``impl`` paths (the kernel once per ``-march`` build given), flax's
``nn.RNN(nn.OptimizedLSTMCell)`` and, where torch is installed, PyTorch's
``nn.LSTM`` at the same thread count. Calls are interleaved round by round
and reported as medians, so the ratios hold on a noisy machine. Pin it to one
core to compare single-threaded code (``taskset -c 0``; XLA then runs one
thread, and torch is set to one). ``--lengths_impls`` adds rows for those
paths given ``seq_lengths``: ``full`` (every row all 28 steps: the masking's
cost alone) and ``random`` (lengths uniform in 1..28), with the ratio to the
same path without lengths. ``--precisions float32,bfloat16`` also times
each kernel build's bfloat16 matmuls.

  taskset -c 0 python experiments/layer_benchmark.py --out docs/layer_benchmark.md
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

SEQ, FEATURES, HIDDEN = 28, 28, 128


def seqclf_layer(impl: str, batch: int, march: str | None = None,
                 lengths: str | None = None,
                 precision: str = 'float32') -> Callable[[], object]:
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from seqclf.nn import LSTM  # pylint: disable=g-import-not-at-top

  if march:
    os.environ['SEQCLF_KERNEL_MARCH'] = march  # read when traced, below
  if impl == 'flax':
    layer = nn.RNN(nn.OptimizedLSTMCell(HIDDEN))
    outputs = lambda p, x: layer.apply(p, x)
  else:
    layer = LSTM(HIDDEN, impl=impl, matmul_precision=precision)
    seq_lengths = None
    if lengths == 'full':
      seq_lengths = jnp.full((batch,), SEQ)
    elif lengths == 'random':
      seq_lengths = jax.random.randint(jax.random.key(2), (batch,), 1, SEQ + 1)
    outputs = lambda p, x: layer.apply(p, x, seq_lengths=seq_lengths)[1]
  x = jax.random.normal(jax.random.key(0), (batch, SEQ, FEATURES))
  params = layer.init(jax.random.key(1), x)
  weights = jnp.cos(jnp.arange(batch * SEQ * HIDDEN)).reshape(batch, SEQ, -1)
  grad = jax.jit(jax.grad(lambda p: jnp.sum(outputs(p, x) * weights)))
  fn = grad.lower(params).compile()
  if march:
    del os.environ['SEQCLF_KERNEL_MARCH']
  return lambda: jax.block_until_ready(fn(params))


def torch_layer(batch: int) -> Callable[[], object]:
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(len(os.sched_getaffinity(0)))
  lstm = torch.nn.LSTM(FEATURES, HIDDEN, batch_first=True)
  x = torch.randn(batch, SEQ, FEATURES)
  weights = torch.cos(torch.arange(batch * SEQ * HIDDEN,
                                   dtype=torch.float32)).reshape(batch, SEQ, -1)

  def run():
    lstm.zero_grad(set_to_none=True)
    (lstm(x)[0] * weights).sum().backward()
  return run


def measure(fns: dict[str, Callable[[], object]], rounds: int,
            reps: int) -> dict[str, list[float]]:
  """Milliseconds per call, ``reps`` calls per timing, after one warm-up."""
  from seqclf.training import autotune  # pylint: disable=g-import-not-at-top
  for fn in fns.values():
    fn()
  times = autotune.timed_rounds(fns, timer=time.perf_counter, rounds=rounds,
                                reps={name: reps for name in fns})
  return {name: [1e3 * t for t in v] for name, v in times.items()}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--batch', type=int, default=100)
  parser.add_argument('--impls', default='kernel,fused,scan,flax,torch')
  parser.add_argument('--marches', default='native,x86-64-v3,x86-64',
                      help='kernel builds to time (those this CPU runs)')
  parser.add_argument('--precisions', default='float32',
                      help="the kernel's matmul precisions to time, e.g. "
                      'float32,bfloat16 (bfloat16: builds with AVX512_BF16 '
                      'or AMX; -march=cooperlake is AVX512_BF16 alone)')
  parser.add_argument('--lengths_impls', default='kernel',
                      help='paths also timed with seq_lengths (full, random)')
  parser.add_argument('--rounds', type=int, default=7)
  parser.add_argument('--reps', type=int, default=5)
  parser.add_argument('--out', default='')
  args = parser.parse_args(argv)
  sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
  from seqclf.kernels import lstm_kernel  # pylint: disable=g-import-not-at-top
  fns, notes = {}, []
  for impl in args.impls.split(','):
    if impl == 'kernel':
      for march in args.marches.split(','):
        if lstm_kernel.runs_here(march):
          try:
            info = lstm_kernel.build_info(march)  # Builds it if need be.
          except lstm_kernel.KernelError as e:
            notes.append(f'kernel -march={march}: {e}')
            continue
          name = f'kernel -march={march}'
          notes.append(f'{name}: {info["lanes"]}-float vectors, '
                       f'{info["block"][0]}x{info["block"][1]} block, '
                       f'bfloat16 on {info["bfloat16"] or "nothing"}')
          for precision in args.precisions.split(','):
            if precision != 'float32' and not lstm_kernel.available(
                precision, march):
              notes.append(f'{name} {precision}: skipped (not in this build)')
              continue
            suffix = '' if precision == 'float32' else f' {precision}'
            fns[name + suffix] = seqclf_layer('kernel', args.batch, march,
                                              precision=precision)
        else:
          notes.append(f'kernel -march={march}: skipped (cannot run here)')
    elif impl == 'torch':
      try:
        fns['torch nn.LSTM'] = torch_layer(args.batch)
      except ImportError:
        notes.append('torch: skipped (not installed)')
    elif impl == 'flax':
      fns['flax nn.RNN(OptimizedLSTMCell)'] = seqclf_layer('flax', args.batch)
    else:
      fns[f'seqclf {impl}'] = seqclf_layer(impl, args.batch)
  with_lengths = {}
  for impl in filter(None, args.lengths_impls.split(',')):
    base_name = (f'seqclf {impl}' if impl != 'kernel' else
                 next((n for n in fns if n.startswith('kernel')), None))
    if base_name is None:
      continue
    for kind in ('full', 'random'):
      name = f'{base_name} seq_lengths={kind}'
      fns[name] = seqclf_layer(impl, args.batch, lengths=kind)
      with_lengths[name] = base_name
  times = measure(fns, args.rounds, args.reps)
  med = {k: statistics.median(v) for k, v in times.items()}
  base = med.get('seqclf scan') or next(iter(med.values()))
  lines = [f'| (batch {args.batch}, {SEQ}, {FEATURES}) -> LSTM-{HIDDEN}, '
           'forward + backward | ms (median, min-max) | speed vs seqclf scan |',
           '|---|---|---|']
  for name, v in times.items():
    lines.append(f'| {name} | {med[name]:.1f} ({min(v):.1f}-{max(v):.1f}) | '
                 f'{base / med[name]:.2f}x |')
  cpus = len(os.sched_getaffinity(0))
  notes += [f'{name}: {med[base_name] / med[name]:.2f}x the speed of '
            f'{base_name} without lengths'
            for name, base_name in with_lengths.items()]
  lines += ['', *(f'- {n}' for n in notes),
            f'- {cpus} CPU(s) in the affinity mask, {args.rounds} interleaved '
            f'rounds of {args.reps} calls; '
            f'`{" ".join(["python", "experiments/layer_benchmark.py", *(argv or sys.argv[1:])])}`']
  table = '\n'.join(lines) + '\n'
  print(table)
  if args.out:
    Path(args.out).write_text(table)
  return 0


if __name__ == '__main__':
  sys.exit(main())
