"""How far each path's loss and gradients are from `scan`'s, at each
precision: the margin `impl='auto'`'s agreement check has (docs/performance.md,
"auto cannot break a run").

Builds what `auto` builds for the default job (one training step's loss and
gradients at batch 100, 28 x 28) on every path that runs here, and prints,
per path and precision, the largest difference from `scan` as a fraction of
the leaf's scale, the tolerance, and what the check says of the same outputs
scaled by 1.05 (a path 5% off), with the seconds the check took.

  python experiments/auto_agreement.py
"""

import time

import jax
import numpy as np

from seqclf.config import base_config
from seqclf.training import autotune


def main() -> None:
  print('| matmul_precision | dtype | path | largest difference (of scale) | '
        'tolerance | 5% off: caught | check seconds |')
  print('|---|---|---|---|---|---|---|')
  for precision, dtype in [('float32', 'float32'), ('bfloat16', 'float32'),
                           ('float32', 'bfloat16')]:
    config = base_config()
    config.matmul_precision, config.dtype = precision, dtype
    tolerance = autotune.tolerance_of(config)
    outputs = {}
    for impl in ('scan', 'fused', 'kernel'):
      try:
        outputs[impl] = autotune._builder(config, impl, 100, (28, 28),
                                          'train')()()
      except Exception as e:  # pylint: disable=broad-except
        print(f'| {precision} | {dtype} | {impl} | cannot run: '
              f'{autotune._reason(e)} | | | |')
    for impl, got in outputs.items():
      if impl == 'scan':
        continue
      start = time.perf_counter()
      autotune.agreement(tolerance)(got, outputs['scan'])
      seconds = time.perf_counter() - start
      share = max(float(np.max(np.abs(np.asarray(a, np.float64) - b)) /
                        max(float(np.max(np.abs(np.asarray(b)))), 1e-12))
                  for a, b in zip(jax.tree.leaves(got),
                                  jax.tree.leaves(outputs['scan'])))
      off = jax.tree.map(lambda a: np.asarray(a) * 1.05, got)
      caught = autotune.agreement(tolerance)(off, outputs['scan']) is not None
      print(f'| {precision} | {dtype} | {impl} | {share:.2g} | {tolerance:.1%} | '
            f'{"yes" if caught else "NO"} | {seconds:.3f} |')


if __name__ == '__main__':
  main()
