"""``seqclf export``: a checkpoint as a ``jax.export`` artifact."""

from __future__ import annotations

import contextlib
from pathlib import Path

from absl import flags

from seqclf import export
from seqclf.cli import common
from seqclf.errors import writable_dir

SUMMARY = ("Write a workdir's best checkpoint (else its latest; --step picks "
           'one) as a jax.export artifact '
           '(symbolic batch, CPU/GPU/TPU; models of series also take '
           'seq_lengths) and its JSON (input shape, scaling, classes), to '
           'serve with jax alone.')
USAGE = '--workdir DIR --out DIR [--step N]'
FLAGS = flags.FlagValues()
_WORKDIR = common.define_workdir(FLAGS)
_STEP = common.define_step(FLAGS)
_OUT = flags.DEFINE_string(
    'out', None, f'Directory to write {export.ARTIFACT} and {export.METADATA} '
    'into (created).', flag_values=FLAGS)


def main(args: list[str]) -> None:
  del args
  workdir = common.require(_WORKDIR, 'export')
  fresh = not Path(common.require(_OUT, 'export')).expanduser().exists()
  out = writable_dir(_OUT.value, 'out')  # Checked before the work.
  try:
    export.export_model(workdir, out, _STEP.value)
  except BaseException:  # Bad input or Ctrl-C: no empty --out left behind.
    if fresh:
      with contextlib.suppress(OSError):
        out.rmdir()
    raise
  print(f'Exported {Path(_OUT.value) / export.ARTIFACT} and '
        f'{Path(_OUT.value) / export.METADATA}')
