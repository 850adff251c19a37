"""``seqclf evaluate``: a workdir's validation and test metrics as JSON."""

from __future__ import annotations

import json

from absl import flags

from seqclf import inference
from seqclf.cli import common

SUMMARY = "Validation and test metrics of a workdir's latest checkpoint, as JSON."
USAGE = '--workdir DIR'
FLAGS = flags.FlagValues()
_WORKDIR = common.define_workdir(FLAGS)
_DATA_DIR = common.define_data_dir(FLAGS)
COMPILATION_CACHE = common.define_compilation_cache(FLAGS)


def main(args: list[str]) -> None:
  del args
  results = inference.evaluate(common.require(_WORKDIR, 'evaluate'),
                               data_dir=_DATA_DIR.value)
  print(json.dumps(results, indent=2))
