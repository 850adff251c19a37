"""seqclf's error types: bases and names that callers catch."""

from seqclf import config, errors
from seqclf.data import mnist_files
from seqclf.training import checkpoint

SEQCLF_ERRORS = [errors.UsageError, errors.ConfigError, errors.DataError,
                 errors.CheckpointError, errors.ImageError, errors.WorkdirError]


def test_error_types_keep_their_old_bases_and_names():
  assert config.ConfigError is errors.ConfigError
  assert mnist_files.DataError is errors.DataError
  assert checkpoint.CheckpointError is errors.CheckpointError
  for error, old in zip(SEQCLF_ERRORS, (ValueError, ValueError, RuntimeError,
                                        RuntimeError, ValueError, OSError)):
    assert issubclass(error, errors.SeqclfError) and issubclass(error, old)
