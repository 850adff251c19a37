"""``seqclf evaluate``: a workdir's validation and test metrics as JSON."""

from __future__ import annotations

import json
import sys

from absl import flags

from seqclf import inference
from seqclf.cli import common
from seqclf.data import registry, sequence_files

SUMMARY = ("Validation and test metrics (loss, accuracy, macro-F1, balanced "
           "accuracy, per-class precision/recall/F1) of a workdir's best "
           'checkpoint (else its latest), as JSON; or its metrics on a '
           'labelled .npz file (--data).')
USAGE = '--workdir DIR [--step N] [--data FILE.npz] [--dataset npz:PATH]'
FLAGS = flags.FlagValues()
_WORKDIR = common.define_workdir(FLAGS)
_DATA_DIR = common.define_data_dir(FLAGS)
_STEP = common.define_step(FLAGS)
_DATASET = common.define_moved_dataset(FLAGS)
_DATA = flags.DEFINE_string(
    'data', None, 'A labelled .npz file (x, y, optionally lengths; y the '
    "model's class numbers or names) to evaluate on instead of the run's "
    'validation and test splits: new data with known classes.',
    flag_values=FLAGS)
COMPILATION_CACHE = common.define_compilation_cache(FLAGS)


def main(args: list[str]) -> None:
  del args
  workdir = common.require(_WORKDIR, 'evaluate')
  _, _, what = inference.which_checkpoint(workdir, _STEP.value)
  if _DATA.value is None:
    results = inference.evaluate(workdir, data_dir=_DATA_DIR.value,
                                 step=_STEP.value, dataset=_DATASET.value,
                                 quiet=True)
    if 'validation' not in results:
      print('note: this model trained on the validation split too (a --cv '
            "sweep's chosen setting), so only test is held out; its folds' "
            'validation figures are in its results.json.', file=sys.stderr)
  else:
    model, params, config = inference.load_model(workdir, _STEP.value,
                                                 quiet=True)
    split = sequence_files.labelled(
        _DATA.value, inference.input_shape(params, config),
        inference.takes_images(config), config.dataset,
        registry.class_names(config), config.num_classes,
        allow_missing=config.missing == 'impute')
    results = inference.evaluate_on(model, params, config,
                                    {_DATA.value: split})
  print(json.dumps({'checkpoint': what, **results}, indent=2))
