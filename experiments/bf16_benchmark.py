"""The CPU kernel's bfloat16 beside its float32 and PyTorch's, interleaved.

Trains the default model (row MNIST, LSTM-128) as ``seqclf train`` does, with
``experiments/benchmark.py``'s workers and interleaved rounds, for the rows
that decide whether bfloat16 pays on this CPU: the kernel at float32 and at
bfloat16 for the native build (``seqclf-kernel``, ``seqclf-kernel-bf16``:
Intel AMX where the CPU has it, else AVX512_BF16) and for the AVX512_BF16
build (``seqclf-kernel-cpl``, ``seqclf-kernel-cpl-bf16``: ``-march=
cooperlake``, AVX512_BF16 without AMX), ``fused`` at bfloat16, and
PyTorch's ``nn.LSTM`` in float32 and under ``torch.autocast('cpu',
torch.bfloat16)``. Rows this CPU cannot run are skipped with the reason.

Also measures the cores' multiply-add peaks on data held in registers
(``experiments/csrc/bf16_peak.cc``: float32 FMAs, AVX512_BF16's vdpbf16ps,
AMX's tdpbf16ps, on every core at once, each core's best of many short
bursts, so a shared machine's load hides less of them) and reports each kernel row's
training GFLOP/s as a fraction of the peak of the unit it runs on.
Writes ``bf16_benchmark.json`` and ``bf16_benchmark.md`` to ``--out``.

  python experiments/bf16_benchmark.py --out experiments/results/intel-avx512-amx/bf16
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchmark  # pylint: disable=g-import-not-at-top,wrong-import-position

REPO = benchmark.REPO
IMPLS = ('seqclf-kernel', 'seqclf-kernel-bf16', 'seqclf-kernel-cpl',
         'seqclf-kernel-cpl-bf16', 'seqclf-fused-bf16', 'torch', 'torch-bf16')
# The kernel rows' builds: the march each worker sets (benchmark._Seqclf).
MARCHES = {'seqclf-kernel': 'native', 'seqclf-kernel-bf16': 'native',
           'seqclf-kernel-cpl': 'cooperlake',
           'seqclf-kernel-cpl-bf16': 'cooperlake'}
PEAK_SOURCE = Path(__file__).resolve().parent / 'csrc' / 'bf16_peak.cc'


def unit_peaks(repeats: int = 300) -> dict[str, float]:
  """GFLOP/s of each multiply-add unit on all cores: ``fp32_fma``,
  ``avx512_bf16``, ``amx_bf16`` (those the CPU has), from bf16_peak.cc."""
  cxx = os.environ.get('CXX', 'c++')
  if shutil.which(cxx) is None:
    return {}
  with tempfile.TemporaryDirectory() as tmp:
    exe = Path(tmp) / 'bf16_peak'
    subprocess.run([cxx, '-O3', '-march=native', '-pthread', str(PEAK_SOURCE),
                    '-o', str(exe)], check=True, capture_output=True)
    out = subprocess.run([str(exe), str(len(os.sched_getaffinity(0))),
                          str(repeats)], check=True, capture_output=True,
                         text=True).stdout
  return {name: float(value) for name, value in
          (line.split() for line in out.splitlines())}


def engines() -> dict[str, str | None]:
  """What runs each kernel row's matmuls: ``fp32_fma`` for float32 rows, and
  for bfloat16 rows the build's engine (``amx_bf16``, ``avx512_bf16``)."""
  sys.path.insert(0, str(REPO))
  from seqclf.kernels import lstm_kernel  # pylint: disable=g-import-not-at-top
  out = {}
  for name, march in MARCHES.items():
    if not name.endswith('-bf16'):
      out[name] = 'fp32_fma'
      continue
    try:
      engine = (lstm_kernel.build_info(march)['bfloat16']
                if lstm_kernel.runs_here(march) else None)
    except lstm_kernel.KernelError:
      engine = None
    out[name] = {'amx': 'amx_bf16', 'avx512_bf16': 'avx512_bf16'}.get(engine)
  return out


def markdown(report: dict) -> str:
  res, sizes = report['results'], report['protocol']['batch_sizes']
  speed = lambda name, b: res[name]['median_examples_per_second'][b]
  lines = ['| row | ' + ' | '.join(f'batch {b} ex/s (min–max)' for b in sizes)
           + ' | unit | ' + ' | '.join(f'GFLOP/s, % of unit peak (batch {b})'
                                       for b in sizes) + ' |',
           '|' + '---|' * (2 * len(sizes) + 2)]
  peaks = report['unit_peaks']
  for name, r in res.items():
    unit = report['engines'].get(name)
    cells = [f"{speed(name, b):,.0f} ({min(r['examples_per_second'][b]):,.0f}"
             f"–{max(r['examples_per_second'][b]):,.0f})" for b in sizes]
    flops = [f"{r['achieved_gflops'][b]:,.0f}" + (
        f", {100 * r['achieved_gflops'][b] / peaks[unit]:.1f}%"
        if unit in peaks else '') for b in sizes]
    lines.append(f'| {name} | ' + ' | '.join(cells) + f' | {unit or "—"} | '
                 + ' | '.join(flops) + ' |')
  out = ['\n'.join(lines), '']
  for a, b in (('seqclf-kernel-bf16', 'seqclf-kernel'),
               ('seqclf-kernel-cpl-bf16', 'seqclf-kernel-cpl'),
               ('seqclf-kernel-cpl-bf16', 'seqclf-kernel'),
               ('seqclf-kernel-cpl-bf16', 'seqclf-kernel-bf16'),
               ('seqclf-kernel-bf16', 'seqclf-fused-bf16'),
               ('seqclf-kernel-cpl-bf16', 'seqclf-fused-bf16'),
               ('seqclf-kernel', 'torch'), ('seqclf-kernel-bf16', 'torch-bf16'),
               ('seqclf-kernel-cpl-bf16', 'torch-bf16'),
               ('torch-bf16', 'torch')):
    if a in res and b in res:
      out.append(f'- {a} / {b}: ' + ', '.join(
          f'batch {n}: {speed(a, n) / speed(b, n):.2f}×' for n in sizes))
  for name, why in report['skipped'].items():
    out.append(f'- {name} skipped: {why}')
  out.append('- unit peaks on data in registers, all cores at once '
             '(experiments/csrc/bf16_peak.cc), GFLOP/s: ' + ', '.join(
                 f'{k} {v:,.0f}' for k, v in peaks.items()))
  out.append(f"- {report['train_flops_per_example']:,.0f} matmul FLOPs per "
             'training example; ' + report['date'] + ', ' + report['machine']
             + '; ' + ', '.join(f'{k} {v}' for k, v in
                                report['versions'].items()))
  p = report['protocol']
  out.append(f"- steps per timed call {p['steps_per_call']}, {p['rounds']} "
             'interleaved rounds, medians (min–max); `' + report['command']
             + '`')
  return '\n'.join(out) + '\n'


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--impls', default=','.join(IMPLS))
  parser.add_argument('--batch_sizes', default='100,1024')
  parser.add_argument('--rounds', type=int, default=5)
  parser.add_argument('--examples_per_call', type=int, default=5000)
  parser.add_argument('--steps', type=int, default=0)
  parser.add_argument('--num_examples', type=int, default=0)
  parser.add_argument('--torch_threads', type=int, default=0)
  parser.add_argument('--out', default='')
  args = parser.parse_args(argv)
  bad = [i for i in args.impls.split(',') if i not in benchmark.IMPLS]
  if bad:
    parser.error(f'unknown --impls {bad}; choose from {list(IMPLS)}.')
  bench_args = argparse.Namespace(
      impls=args.impls, batch_sizes=args.batch_sizes, task='row',
      steps=args.steps, examples_per_call=args.examples_per_call,
      rounds=args.rounds, num_examples=args.num_examples,
      torch_device='cpu', torch_threads=args.torch_threads, gemm_gflop=0.5,
      tta=False)
  report = benchmark.run_benchmark(bench_args)
  report['unit_peaks'] = unit_peaks()
  report['engines'] = engines()
  report['command'] = ' '.join(['python', 'experiments/bf16_benchmark.py',
                                *(sys.argv[1:] if argv is None else argv)])
  table = markdown(report)
  print(table)
  if args.out:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / 'bf16_benchmark.json').write_text(json.dumps(report, indent=2) + '\n')
    (out / 'bf16_benchmark.md').write_text(table)
  return 0


if __name__ == '__main__':
  sys.exit(main())
