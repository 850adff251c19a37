"""Times impl='gpu''s kernels under each launch option, beside fast_lstm.

``seqclf.kernels.gpu_lstm.default_tiling`` was chosen by reasoning; this
measures the alternatives on a GPU. For each (steps, batch) shape and
``matmul_precision`` it times one training step of the recurrence alone
(``jax.value_and_grad`` of a loss of ``gpu_lstm.lstm_recurrence``'s outputs:
the forward kernel, the backward kernel and the weight-gradient GEMM; the
input projection excluded) under each candidate ``Tiling``, and
``fast_lstm.lstm_recurrence``'s same step (the 'fused' path), interleaved
round by round; medians. Each tiling's outputs and gradients are compared
with the default tiling's (max abs difference, reported). A tiling that
fails to compile or launch (e.g. more shared memory than the chip has) is
recorded with its error, not fatal. ``--max_seconds`` bounds the run: shapes
and precisions not reached are listed as such.

  python experiments/gpu_kernel_tune.py --out tune.json        # on a GPU
  python experiments/gpu_kernel_tune.py --interpret --shapes 3x16 --rounds 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from seqclf.kernels import fast_lstm, gpu_lstm  # pylint: disable=wrong-import-position

HIDDEN = 128
Tiling = gpu_lstm.Tiling
# The launch options timed (experiments/gpu_kernel_compile.py compiles the
# same): row tile, weights held or read per step, warps, Triton's pipeline
# stages (2: it may prefetch the next step's weights while this one runs).
CANDIDATES = (Tiling(16, True, 8), Tiling(16, True, 4), Tiling(16, False, 4),
              Tiling(16, False, 8), Tiling(16, False, 8, 2),
              Tiling(32, False, 8), Tiling(32, True, 8), Tiling(64, False, 8))


def _name(tiling: Tiling) -> str:
  where = 'resident' if tiling.resident else 'per-step'
  stages = f', {tiling.num_stages} stages' if tiling.num_stages != 1 else ''
  return (f'{tiling.block_rows} rows, {where} W_h, {tiling.num_warps} '
          f'warps{stages}')


def _weights_bytes(precision: str, hidden: int = HIDDEN) -> int:
  return 4 * hidden * hidden * (2 if precision == 'bfloat16' else 4)


def _step(recurrence):
  """A jitted training step of ``recurrence`` (value and all gradients)."""
  def loss(projected, w_h, c0, h0):
    (c, h), hs = recurrence(projected, w_h, c0, h0)
    return jnp.mean(hs ** 2) + jnp.mean(c) + jnp.mean(h)
  return jax.jit(jax.value_and_grad(loss, (0, 1, 2, 3)))


def _inputs(steps: int, batch: int):
  k = jax.random.split(jax.random.key(0), 4)
  return (jax.random.normal(k[0], (steps, batch, 4 * HIDDEN)),
          jax.random.normal(k[1], (HIDDEN, 4 * HIDDEN)) / np.sqrt(HIDDEN),
          0.1 * jax.random.normal(k[2], (batch, HIDDEN)),
          0.1 * jax.random.normal(k[3], (batch, HIDDEN)))


def _timer(fn, args, target_seconds: float):
  """Compiles and warms ``fn``; returns (compile seconds, a function timing
  one round of enough calls for about ``target_seconds``, its output)."""
  t = time.perf_counter()
  out = jax.block_until_ready(fn(*args))
  compile_seconds = time.perf_counter() - t
  t = time.perf_counter()
  jax.block_until_ready(fn(*args))
  reps = max(1, int(target_seconds / max(time.perf_counter() - t, 1e-6)))

  def timed() -> float:
    t = time.perf_counter()
    for _ in range(reps):
      result = fn(*args)
    jax.block_until_ready(result)
    return (time.perf_counter() - t) / reps
  return compile_seconds, timed, out


def _max_diff(a, b) -> float:
  return max(float(jnp.max(jnp.abs(x - y)))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def tune_one(steps: int, batch: int, precision: str, args) -> dict:
  """Every candidate tiling (and fused) at one shape and precision."""
  inputs = _inputs(steps, batch)
  lengths = jnp.full((batch,), steps, jnp.int32) if args.lengths else None
  runs, rows = {}, {}
  default = gpu_lstm.default_tiling(HIDDEN, precision)
  reference = None
  for tiling in (default, *[c for c in CANDIDATES if c != default]):
    name = _name(tiling) + (' (default)' if tiling == default else '')
    if precision == 'float32' and tiling.block_rows > 16:
      rows[name] = {'skipped': 'IEEE float32 dots are FMA loops that take '
                               'Triton minutes to compile at > 16 rows'}
      continue
    if (tiling.resident and not args.interpret
        and _weights_bytes(precision) > args.smem_bytes):
      rows[name] = {'skipped': f'W_h is {_weights_bytes(precision)} bytes, '
                               f'more than {args.smem_bytes} of shared memory'}
      continue
    step = _step(lambda p, w, c, h, tiling=tiling: gpu_lstm.lstm_recurrence(
        p, w, c, h, 1.0, lengths, precision, interpret=args.interpret,
        tiling=tiling))
    try:
      compile_s, timed, out = _timer(step, inputs, args.target_seconds)
    except Exception as e:  # pylint: disable=broad-except
      rows[name] = {'error': f'{type(e).__name__}: {str(e)[:600]}'}
      continue
    reference = out if reference is None else reference
    rows[name] = {'compile_seconds': compile_s,
                  'max_abs_diff_to_default': _max_diff(reference, out)}
    runs[name] = timed
  def fused(p, w, c, h):
    # XLA's matmuls at the same precision (set while tracing).
    with jax.default_matmul_precision(precision):
      return fast_lstm.lstm_recurrence(p, w, c, h, 1.0, 1, lengths)
  compile_s, runs['fused'], out = _timer(_step(fused), inputs,
                                         args.target_seconds)
  rows['fused'] = {'compile_seconds': compile_s,
                   'matmul_precision (jax default)': precision}
  if reference is not None:
    rows['fused']['max_abs_diff_to_default'] = _max_diff(reference, out)
  seconds = {name: [] for name in runs}
  names = list(runs)
  for r in range(args.rounds):
    for name in names[r % len(names):] + names[:r % len(names)]:
      seconds[name].append(runs[name]())
  for name, secs in seconds.items():
    median = statistics.median(secs)
    rows[name].update({'seconds': secs, 'median_seconds': median,
                       'examples_per_second': batch / median})
  if 'fused' in seconds:
    for name in seconds:
      rows[name]['speed_vs_fused'] = (rows['fused']['median_seconds']
                                      / rows[name]['median_seconds'])
  return rows


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--shapes', default='28x100,28x1024,784x100',
                      help='comma-separated STEPSxBATCH')
  parser.add_argument('--precisions', default='bfloat16,tensorfloat32,float32')
  parser.add_argument('--rounds', type=int, default=5)
  parser.add_argument('--target_seconds', type=float, default=0.1,
                      help='length of one timed round of one candidate')
  parser.add_argument('--lengths', action='store_true',
                      help='pass full-length seq lengths (the masked kernels)')
  parser.add_argument('--smem_bytes', type=int, default=227 * 1024,
                      help="the GPU's shared memory per block (H100/H200)")
  parser.add_argument('--interpret', action='store_true',
                      help='run the kernels interpreted (CPU smoke test)')
  parser.add_argument('--max_seconds', type=float, default=150.0)
  parser.add_argument('--out', default='')
  args = parser.parse_args(argv)
  start = time.perf_counter()
  report = {'jax': jax.__version__, 'backend': jax.default_backend(),
            'device': str(jax.devices()[0].device_kind), 'hidden': HIDDEN,
            'interpret': args.interpret, 'lengths': args.lengths,
            'results': {}, 'not_reached': []}
  for shape in args.shapes.split(','):
    steps, batch = (int(v) for v in shape.split('x'))
    for precision in args.precisions.split(','):
      key = f'T={steps} B={batch} {precision}'
      if time.perf_counter() - start > args.max_seconds:
        report['not_reached'].append(key)
        continue
      report['results'][key] = tune_one(steps, batch, precision, args)
      best = max((r for r in report['results'][key].items()
                  if 'examples_per_second' in r[1]),
                 key=lambda r: r[1]['examples_per_second'], default=None)
      print(f'{key}: ' + ', '.join(
          f"{n}: {r['examples_per_second']:,.0f} ex/s"
          for n, r in report['results'][key].items()
          if 'examples_per_second' in r) + (f' | best {best[0]}' if best
                                            else ''), flush=True)
  report['seconds'] = time.perf_counter() - start
  text = json.dumps(report, indent=2) + '\n'
  if args.out:
    Path(args.out).write_text(text)
  else:
    print(text)
  return 0


if __name__ == '__main__':
  sys.exit(main())
