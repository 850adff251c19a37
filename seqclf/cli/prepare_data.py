"""``seqclf prepare-data``: fetch, verify and prepare a dataset once."""

from __future__ import annotations

from pathlib import Path

from absl import flags

from seqclf.cli import common
from seqclf.data import npz_shards, prepared, stream
from seqclf.errors import UsageError

SUMMARY = 'Fetch, verify (SHA-256) and prepare a dataset once.'
USAGE = '[--data_dir DIR] [--dataset NAME | --dataset npz:DIR] [--force]'
FLAGS = flags.FlagValues()
_DATA_DIR = common.define_data_dir(FLAGS)
_DATASET = flags.DEFINE_string(
    'dataset', 'mnist', 'The dataset to fetch, verify and prepare: one of '
    f'{", ".join(prepared.BUILDERS)}; or npz:DIR, a directory of .npz/.npy '
    'shards (DIR/train/, DIR/test/, DIR/validation/ optional) converted once '
    'into DIR/prepared/ for streaming (seqclf.data.npz_shards).',
    flag_values=FLAGS)
_VALIDATION_FRACTION = flags.DEFINE_float(
    'validation_fraction', 0.1, 'npz:DIR without validation/: the fraction '
    'of training examples carved out for it.', flag_values=FLAGS)
_FORCE = flags.DEFINE_bool(
    'force', False, 'Build the prepared files again from the verified source '
    'files (after a damaged or truncated one).', flag_values=FLAGS)


def main(args: list[str]) -> None:
  del args
  if _DATASET.value.startswith('npz:') and _DATASET.value[4:]:
    if Path(_DATASET.value[4:]).expanduser().is_file():
      raise UsageError(f'{_DATASET.value} is one npz file, read as it is: '
                       'npz files need no preparing (npz:DIR, a directory of '
                       'shards, does).')
    out = npz_shards.prepare(_DATASET.value[4:], _VALIDATION_FRACTION.value,
                             force=_FORCE.value)
    splits = {k: v.num_examples for k, v in
              npz_shards.builder(_DATASET.value[4:]).info.splits.items()}
    print(f'{_DATASET.value} ready in {out}: {splits}')
    gaps = {k: n for k in splits
            for n, _ in [stream.read_missing(out, k) or (0, 0)] if n}
    if gaps:
      print(f'NaN values on valid steps: {gaps}; train with '
            "--config.missing=impute (filled inside the model), or fill them.")
    return
  if _DATASET.value not in prepared.BUILDERS:
    raise UsageError(f'--dataset must be one of {", ".join(prepared.BUILDERS)} '
                     f'or npz:DIR to prepare, got {_DATASET.value!r} (an npz file needs '
                     'no preparing).')
  builder = prepared.prepare(_DATA_DIR.value, _DATASET.value,
                             force=_FORCE.value)
  splits = {k: v.num_examples for k, v in builder.info.splits.items()}
  print(f'{_DATASET.value} ready in {builder.data_dir}: {splits}')
