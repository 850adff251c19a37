"""``seqclf predict``: classify files with a workdir's best (else latest)
checkpoint."""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

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
USAGE = '--workdir DIR [--step N] [--out PREDICTIONS.csv|.npz] FILE ...'
TAKES_ARGS = True  # the files
FLAGS = flags.FlagValues()
_WORKDIR = common.define_workdir(FLAGS)
_STEP = common.define_step(FLAGS)
_OUT = flags.DEFINE_string(
    'out', None, 'Write the predictions to this file instead of a line each: '
    '.csv (input, class, name, one probability column per class) or .npz '
    '(inputs, classes, probabilities, class_names).', flag_values=FLAGS)
OUT_FORMATS = ('.csv', '.npz')
COMPILATION_CACHE = common.define_compilation_cache(FLAGS)


def main(paths: list[str]) -> None:
  if not paths:
    raise UsageError('`seqclf predict` needs one or more files to classify '
                     '(images, or .npy/.npz/.csv sequences).')
  out = Path(_OUT.value).expanduser() if _OUT.value else None
  if out is not None and out.suffix.lower() not in OUT_FORMATS:
    raise UsageError(f'--out {out}: give a .csv or .npz file name.')
  if out is not None and out.exists() and any(
      Path(p).expanduser().exists() and os.path.samefile(p, out)
      for p in paths):
    raise UsageError(f'--out {out} is one of the files to classify, which '
                     'writing would replace: give another file name.')
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
  if out is not None:
    write(out, names, probs, classes)
    print(f'Wrote {len(names)} predictions to {out}.')
    return
  for name, p in zip(names, probs):
    print(f'{name}: {describe(p, classes)}')


def write(path: Path, inputs: list[str], probs: np.ndarray,
          classes: list[str]) -> None:
  """Writes predictions for a program to read: ``.csv`` (a row per input:
  its name, class, class name and each class's probability) or ``.npz``
  (``inputs``, ``classes``, ``probabilities``, ``class_names``). Written to
  a temporary file first, so an earlier file is replaced only by a whole one.

  Args:
    path: the file (its suffix picks the format).
    inputs: each prediction's input (``FILE`` or ``FILE[i]``).
    probs: (N, K) class probabilities.
    classes: the K class names (``registry.class_names``).
  """
  best = probs.argmax(axis=1)
  tmp = path.with_name(path.name + '.tmp')
  try:
    if path.suffix.lower() == '.npz':
      with open(tmp, 'wb') as f:
        np.savez(f, inputs=np.asarray(inputs), classes=best,
                 probabilities=probs.astype(np.float32),
                 class_names=np.asarray(classes))
    else:
      with open(tmp, 'w', newline='', encoding='utf-8') as f:
        rows = csv.writer(f)
        rows.writerow(['input', 'class', 'name']
                      + [f'p_{name}' for name in classes])
        for name, c, p in zip(inputs, best, probs):
          rows.writerow([name, int(c), classes[c]]
                        + [f'{v:.6g}' for v in p])
    os.replace(tmp, path)
  except OSError as e:
    tmp.unlink(missing_ok=True)
    raise UsageError(
        f'--out {path}: cannot write it ({e.strerror}).') from e


def describe(p: np.ndarray, classes: list[str]) -> str:
  """One prediction: the class (and its name, where the data named it), its
  probability and the top 3 by name."""
  top = ' '.join(f'{classes[c]}:{p[c]:.3f}' for c in np.argsort(-p)[:3])
  best = int(np.argmax(p))
  named = f' {classes[best]}' if classes[best] != str(best) else ''
  return f'class {best}{named} (p={p.max():.3f}; top-3 {top})'
