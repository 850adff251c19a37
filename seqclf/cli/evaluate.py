"""``seqclf evaluate``: a workdir's validation and test metrics as JSON."""

from __future__ import annotations

import json

from absl import flags

from seqclf import inference
from seqclf.cli import common

SUMMARY = ("Validation and test metrics (loss, accuracy, macro-F1, balanced "
           "accuracy, per-class precision/recall/F1) of a workdir's best "
           'checkpoint (else its latest), as JSON.')
USAGE = '--workdir DIR [--step N]'
FLAGS = flags.FlagValues()
_WORKDIR = common.define_workdir(FLAGS)
_DATA_DIR = common.define_data_dir(FLAGS)
_STEP = common.define_step(FLAGS)
COMPILATION_CACHE = common.define_compilation_cache(FLAGS)


def main(args: list[str]) -> None:
  del args
  workdir = common.require(_WORKDIR, 'evaluate')
  _, _, what = inference.which_checkpoint(workdir, _STEP.value)
  results = inference.evaluate(workdir, data_dir=_DATA_DIR.value,
                               step=_STEP.value, quiet=True)
  print(json.dumps({'checkpoint': what, **results}, indent=2))
