"""``seqclf predict``: classify files with a workdir's best (else latest)
checkpoint."""

from __future__ import annotations

import sys

import numpy as np
from absl import flags

from seqclf import inference
from seqclf.cli import common
from seqclf.data import registry, sequence_files, views
from seqclf.errors import UsageError

SUMMARY = ("Classify files with a workdir's best checkpoint (else its latest; "
           '--step picks one): .npy/.npz/.csv '
           'sequences of the width it reads (docs/cli.md); for models of '
           'images also 28x28 grayscale images (others are converted).')
USAGE = '--workdir DIR [--step N] FILE ...'
TAKES_ARGS = True  # the files
FLAGS = flags.FlagValues()
_WORKDIR = common.define_workdir(FLAGS)
_STEP = common.define_step(FLAGS)
COMPILATION_CACHE = common.define_compilation_cache(FLAGS)


def main(paths: list[str]) -> None:
  if not paths:
    raise UsageError('`seqclf predict` needs one or more files to classify '
                     '(images, or .npy/.npz/.csv sequences).')
  model, params, config = inference.load_model(
      common.require(_WORKDIR, 'predict'), _STEP.value)
  names, inputs, lengths, notes = sequence_files.predict_inputs(
      paths, inference.input_shape(params, config),
      inference.takes_images(config), config.dataset,
      allow_missing=config.missing == 'impute')
  for note in notes:
    print(f'note: {note}', file=sys.stderr)
  probs = inference.predict_probabilities(
      model, params, views.view(config, inputs), lengths=lengths)
  classes = registry.class_names(config)
  for name, p in zip(names, probs):
    print(f'{name}: {describe(p, classes)}')


def describe(p: np.ndarray, classes: list[str]) -> str:
  """One prediction: the class (and its name, where the data named it), its
  probability and the top 3 by name."""
  top = ' '.join(f'{classes[c]}:{p[c]:.3f}' for c in np.argsort(-p)[:3])
  best = int(np.argmax(p))
  named = f' {classes[best]}' if classes[best] != str(best) else ''
  return f'class {best}{named} (p={p.max():.3f}; top-3 {top})'
