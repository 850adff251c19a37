"""Compiles impl='gpu''s kernels for an H100/H200 (sm_90a) without a GPU.

jax lowers a Pallas Triton kernel for CUDA on any machine (to Triton IR); the
official Triton compiler (``pip install triton``, which bundles ``ptxas``)
then compiles that IR for a named target, also without a GPU. This script
does both for every ``matmul_precision`` and candidate tiling and reports,
per kernel, the shared memory it needs (a launch fails above the chip's
227 KiB a block), its registers and its register spills (``ptxas -v``): what
decides ``gpu_lstm.default_tiling`` and the hidden sizes ``why_not`` admits,
known before a GPU is lent.

Caveats: jax on the GPU compiles with the Triton bundled in its CUDA plugin,
whose version may differ from the pip package's, so the figures are those of
the pip version named in the output; and it reads the Triton IR through a
private jax function (``jax._src.pallas.triton``), so a jax release can move
it (the script then says so).

  pip install --target /tmp/triton triton==3.9.0      # ~290 MB, once
  python experiments/gpu_kernel_compile.py --triton_path /tmp/triton
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from seqclf.kernels import gpu_lstm  # pylint: disable=wrong-import-position

from gpu_kernel_tune import CANDIDATES  # pylint: disable=wrong-import-position

Tiling = gpu_lstm.Tiling


def triton_ir(hidden: int, steps: int, batch: int, precision: str,
              tiling: Tiling) -> dict[str, str]:
  """The Triton IR (text) of the training step's two kernels, by name."""
  try:
    from jax._src.pallas.triton import pallas_call_registration as registration  # pylint: disable=g-import-not-at-top
    lower = registration.lowering.lower_jaxpr_to_triton_module
  except (ImportError, AttributeError) as e:
    raise SystemExit(f'this jax ({jax.__version__}) no longer exposes the '
                     f'Pallas Triton lowering this script reads: {e}')
  modules = {}

  def capture(*args, **kwargs):
    result = lower(*args, **kwargs)
    text = result.module.operation.get_asm(enable_debug_info=False)
    modules[re.search(r'tt\.func public @(\w+)', text).group(1)] = text
    return result

  f32 = lambda *s: jax.ShapeDtypeStruct(s, jnp.float32)
  lengths = jnp.arange(batch, dtype=jnp.int32) % (steps + 1)

  def loss(p, w, c, h):
    (c, h), hs = gpu_lstm.lstm_recurrence(p, w, c, h, 1.0, lengths, precision,
                                          tiling=tiling)
    return jnp.sum(hs) + jnp.sum(c) + jnp.sum(h)

  # jax >= 0.12 reads the target's compute capability from the device, or
  # from an abstract one where there is none: an H100 (sm_90, as compiled).
  h100 = jax.sharding.AbstractDevice(
      device_kind='NVIDIA H100', num_cores=None, platform='gpu')
  registration.lowering.lower_jaxpr_to_triton_module = capture
  try:
    with jax.sharding.use_abstract_mesh(
        jax.sharding.AbstractMesh((1,), ('batch',), abstract_device=h100)):
      jax.jit(jax.grad(loss, (0, 1, 2, 3))).trace(
          f32(steps, batch, 4 * hidden), f32(hidden, 4 * hidden),
          f32(batch, hidden), f32(batch, hidden)).lower(
              lowering_platforms=('cuda',))
  finally:
    registration.lowering.lower_jaxpr_to_triton_module = lower
  return modules


def _ptxas(triton) -> str:
  """The bundled ptxas that reads the PTX this Triton writes (the newest)."""
  folder = Path(triton.__file__).parent / 'backends' / 'nvidia' / 'bin'
  for name in ('ptxas-blackwell', 'ptxas'):
    if (folder / name).exists():
      return str(folder / name)
  raise SystemExit(f'no ptxas in {folder}')


def compile_ir(triton, text: str, tiling: Tiling, workdir: Path,
               name: str) -> dict:
  """Compiles Triton IR for sm_90a; its shared memory, registers, spills."""
  from triton.backends.compiler import GPUTarget  # pylint: disable=g-import-not-at-top
  source = workdir / f'{name}.ttir'
  source.write_text(text)
  start = time.perf_counter()
  kernel = triton.compile(str(source), target=GPUTarget('cuda', 90, 32),
                          options={'num_warps': tiling.num_warps,
                                   'num_stages': tiling.num_stages})
  seconds = time.perf_counter() - start
  ptx = workdir / f'{name}.ptx'
  ptx.write_text(kernel.asm['ptx'])
  report = subprocess.run([_ptxas(triton), '-arch=sm_90a', '-v', str(ptx),
                           '-o', os.devnull], capture_output=True, text=True)
  if report.returncode:
    raise RuntimeError(report.stderr[-800:])
  info = report.stderr
  number = lambda pattern: int(re.search(pattern, info).group(1))
  return {'shared_bytes': kernel.metadata.shared,
          'registers': number(r'Used (\d+) registers'),
          'spill_store_bytes': number(r'(\d+) bytes spill stores'),
          'spill_load_bytes': number(r'(\d+) bytes spill loads'),
          'compile_seconds': seconds,  # 0 where Triton's cache had it
          'mma': sorted(set(re.findall(r'\b(wgmma[\w.]+|mma\.sync\.aligned[\w.]+)',
                                       kernel.asm['ptx'])))}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--triton_path', default='',
                      help='a folder holding the triton package (pip --target)')
  parser.add_argument('--hidden', type=int, default=128)
  parser.add_argument('--steps', type=int, default=28)
  parser.add_argument('--batch', type=int, default=100,
                      help='100: the masked last tile; 1024: no masks')
  parser.add_argument('--precisions', default='bfloat16,tensorfloat32,float32')
  parser.add_argument('--smem_bytes', type=int, default=227 * 1024)
  parser.add_argument('--workdir', default='/tmp/seqclf-gpu-kernel-compile')
  parser.add_argument('--all', action='store_true',
                      help='float32 with 32 and 64 rows too (minutes each)')
  parser.add_argument('--out', default='')
  args = parser.parse_args(argv)
  if args.triton_path:
    sys.path.insert(0, args.triton_path)
  os.environ.setdefault('TRITON_DEFAULT_FP_FUSION', '1')
  try:
    import triton  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise SystemExit('needs the triton package: pip install --target DIR '
                     'triton, then --triton_path DIR') from None
  workdir = Path(args.workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  rows = []
  for precision in args.precisions.split(','):
    if args.hidden > gpu_lstm.max_hidden(precision):
      continue
    for tiling in CANDIDATES:
      if precision == 'float32' and tiling.block_rows > 16 and not args.all:
        continue  # IEEE float32 dots are FMA loops: minutes to compile
      modules = triton_ir(args.hidden, args.steps, args.batch, precision,
                          tiling)
      for kernel, text in modules.items():
        tag = (f'{precision}-{tiling.block_rows}-{int(tiling.resident)}-'
               f'{tiling.num_warps}-{tiling.num_stages}-{kernel}')
        row = {'precision': precision, 'kernel': kernel,
               'tiling': tiling.__dict__}
        try:
          row.update(compile_ir(triton, text, tiling, workdir, tag))
          row['fits'] = row['shared_bytes'] <= args.smem_bytes
        except Exception as e:  # pylint: disable=broad-except
          row['error'] = f'{type(e).__name__}: {str(e)[:600]}'
        rows.append(row)
        print(json.dumps(row), flush=True)
  report = {'triton': triton.__version__, 'jax': jax.__version__,
            'target': 'cuda sm_90a', 'hidden': args.hidden,
            'steps': args.steps, 'batch': args.batch,
            'smem_bytes': args.smem_bytes, 'kernels': rows}
  if args.out:
    Path(args.out).write_text(json.dumps(report, indent=2) + '\n')
  print(markdown(report))
  return 0


def _short(instructions: list[str]) -> str:
  """The tensor-core instructions in a kernel, short: ``wgmma`` (Hopper's
  warpgroup MMA) or ``mma.sync m16n8k16 bf16``; ``FMA`` for none."""
  names = set()
  for instruction in instructions:
    parts = instruction.split('.')
    if parts[0] == 'wgmma':
      names.add('wgmma')
    else:
      shape = next((p for p in parts if re.fullmatch(r'm\d+n\d+k\d+', p)), '')
      names.add(f'mma.sync {shape} {parts[-3] if len(parts) > 4 else ""}'.strip())
  return ', '.join(sorted(names)) or 'FMA'


def markdown(report: dict) -> str:
  lines = ['| precision | kernel | rows | W_h | warps | stages | shared KiB | '
           'fits | registers | spill bytes (st/ld) | MMA |', '|' + '---|' * 11]
  for r in report['kernels']:
    t = r['tiling']
    if 'error' in r:
      lines.append(f"| {r['precision']} | {r['kernel']} | {t['block_rows']} | "
                   f"{'held' if t['resident'] else 'per step'} | "
                   f"{t['num_warps']} | {t['num_stages']} | error: "
                   f"{r['error'][:80]} |||||")
      continue
    lines.append(
        f"| {r['precision']} | {r['kernel'].replace('seqclf_lstm_', '')} | "
        f"{t['block_rows']} | {'held' if t['resident'] else 'per step'} | "
        f"{t['num_warps']} | {t['num_stages']} | "
        f"{r['shared_bytes'] / 1024:.0f} | "
        f"{'yes' if r['fits'] else 'NO'} | {r['registers']} | "
        f"{r['spill_store_bytes']}/{r['spill_load_bytes']} | "
        f"{_short(r['mma'])} |")
  lines.append(f"\nTriton {report['triton']} for {report['target']}, jax "
               f"{report['jax']}; H={report['hidden']}, T={report['steps']}, "
               f"B={report['batch']}; shared memory limit "
               f"{report['smem_bytes']} bytes a block.")
  return '\n'.join(lines)


if __name__ == '__main__':
  sys.exit(main())
