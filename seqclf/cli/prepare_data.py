"""``seqclf prepare-data``: fetch, verify and prepare a dataset once."""

from __future__ import annotations

from absl import flags

from seqclf.cli import common
from seqclf.data import prepared
from seqclf.errors import UsageError

SUMMARY = 'Fetch, verify (SHA-256) and prepare a dataset once.'
USAGE = '[--data_dir DIR] [--dataset NAME] [--force]'
FLAGS = flags.FlagValues()
_DATA_DIR = common.define_data_dir(FLAGS)
_DATASET = flags.DEFINE_string(
    'dataset', 'mnist', 'The dataset to fetch, verify and prepare: one of '
    f'{", ".join(prepared.BUILDERS)}.', flag_values=FLAGS)
_FORCE = flags.DEFINE_bool(
    'force', False, 'Build the prepared files again from the verified source '
    'files (after a damaged or truncated one).', flag_values=FLAGS)


def main(args: list[str]) -> None:
  del args
  if _DATASET.value not in prepared.BUILDERS:
    raise UsageError(f'--dataset must be one of {", ".join(prepared.BUILDERS)} '
                     f'to prepare, got {_DATASET.value!r} (npz files need no '
                     'preparing).')
  builder = prepared.prepare(_DATA_DIR.value, _DATASET.value,
                             force=_FORCE.value)
  splits = {k: v.num_examples for k, v in builder.info.splits.items()}
  print(f'{_DATASET.value} ready in {builder.data_dir}: {splits}')
