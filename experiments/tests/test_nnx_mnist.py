"""experiments/nnx_mnist.py, the README's NNX example, runs as documented."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_nnx_example_trains_and_reports_test_accuracy():
  """A few steps: the loss is printed, and a test accuracy over all 10,000
  test images (above chance after 30 steps)."""
  done = subprocess.run(
      [sys.executable, str(REPO / 'experiments' / 'nnx_mnist.py'), '--seed',
       '1', '--steps', '30'], capture_output=True, text=True, timeout=600,
      cwd=REPO)
  assert done.returncode == 0, done.stderr[-2000:]
  assert 'step 0: loss' in done.stdout
  accuracy = re.search(r'Test accuracy: (0\.\d+) \(seed 1, impl (\w+)\)',
                       done.stdout)
  assert accuracy, done.stdout
  assert float(accuracy.group(1)) > 0.2
