"""experiments/bf16_benchmark.py: its peaks and its table (no timing
assertions: the machine is shared; the training rows are
experiments/benchmark.py's, smoke-tested in test_benchmark.py)."""

import importlib
import platform
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope='module')
def bf16_benchmark():
  sys.path.insert(0, str(REPO / 'experiments'))
  try:
    yield importlib.import_module('bf16_benchmark')
  finally:
    sys.path.remove(str(REPO / 'experiments'))


@pytest.mark.skipif(platform.machine() not in ('x86_64', 'AMD64')
                    or shutil.which('c++') is None
                    or 'avx512f' not in Path('/proc/cpuinfo').read_text(),
                    reason='the peak program is AVX-512 x86 code')
def test_unit_peaks_measure_what_the_cpu_has(bf16_benchmark):
  peaks = bf16_benchmark.unit_peaks(repeats=3)
  assert peaks['fp32_fma'] > 0
  flags = Path('/proc/cpuinfo').read_text()
  assert ('avx512_bf16' in peaks) == ('avx512_bf16' in flags)
  if 'amx_bf16' in peaks:
    assert 'amx_bf16' in flags


def test_table_has_each_row_its_unit_and_the_ratios(bf16_benchmark):
  row = lambda speed, gflops: {
      'examples_per_second': {100: [speed, speed * 1.1]},
      'median_examples_per_second': {100: speed},
      'achieved_gflops': {100: gflops}}
  report = {
      'results': {'seqclf-kernel': row(1000.0, 10.0),
                  'seqclf-kernel-cpl-bf16': row(1500.0, 15.0),
                  'torch-bf16': row(500.0, 5.0)},
      'protocol': {'batch_sizes': [100], 'steps_per_call': {100: 2},
                   'rounds': 1},
      'skipped': {'seqclf-kernel-bf16': 'no AMX'},
      'unit_peaks': {'fp32_fma': 100.0, 'avx512_bf16': 200.0},
      'engines': {'seqclf-kernel': 'fp32_fma',
                  'seqclf-kernel-cpl-bf16': 'avx512_bf16'},
      'train_flops_per_example': 1e7, 'date': 'today', 'machine': 'cpu',
      'versions': {}, 'command': 'python experiments/bf16_benchmark.py'}
  table = bf16_benchmark.markdown(report)
  assert '| seqclf-kernel | 1,000 (1,000–1,100) | fp32_fma | 10, 10.0% |' in table
  assert 'avx512_bf16 | 15, 7.5% |' in table
  assert '| torch-bf16 | 500 (500–550) | — | 5 |' in table
  assert 'seqclf-kernel-cpl-bf16 / seqclf-kernel: batch 100: 1.50×' in table
  assert 'seqclf-kernel-cpl-bf16 / torch-bf16: batch 100: 3.00×' in table
  assert 'seqclf-kernel-bf16 skipped: no AMX' in table
