"""The tfds ``DatasetInfo`` of seqclf's own datasets (MNIST, UEA/UCR).

A tfds builder whose data dir holds no prepared info yet (each first
preparation) asks ``DatasetInfo.initialize_from_bucket`` for tfds' published
one, which makes a temporary directory and leaves it behind, empty, even
with tfds' bucket disabled (tensorflow-datasets 4.9). seqclf's datasets are
never there: nothing is looked up, nothing left in the temporary directory.
"""

from __future__ import annotations

import tensorflow_datasets as tfds


class DatasetInfo(tfds.core.DatasetInfo):
  """``tfds.core.DatasetInfo`` without the lookup on tfds' bucket."""

  def initialize_from_bucket(self) -> None:
    """Nothing to fetch: the info comes from the builder's ``_info``."""
