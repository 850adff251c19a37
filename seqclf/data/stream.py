"""Training data read from disk batch by batch, in the trainer's (seed, step) order.

By default (``data_placement='device'``) the trainer puts the whole training
split on each device and gathers batches there. A split larger than that
(``'stream'``, or ``'auto'``: ``placement``) stays on disk: ``open_split``
gives it as a ``LazyImages`` array (random access into the prepared tfds
dataset's ArrayRecord files, ``tfds.data_source``) beside its labels and
lengths in memory, and ``TrainStream`` reads each step's batch with grain:
the batch indices are ``order.train_indices(seed, ...)``, the same as the
device-resident run's, so both compute the same thing and a resumed run
starts its reader at its step (nothing more to checkpoint). Each process of
a job reads only its part of every global batch.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from seqclf.data import normalization, npz, order
from seqclf.data.splits import Split, write_cache
from seqclf.errors import ConfigError, DataError

PLACEMENTS = ('device', 'stream', 'auto')
# 'auto' streams when the training split, as stored, would take more than
# this share of one device's memory (the rest: model, batches, evaluation).
DEVICE_SHARE = 0.25
INDEX_SUFFIX = '-index.npz'  # {split}-index.npz: record, label, lengths
# Beside a prepared dataset's files: each split's NaN values on valid steps and
# the sequences holding one, counted when written, so a lazily read split is
# checked against config key `missing` without reading it.
MISSING = 'missing.json'
READ_CHUNK = 4096  # examples per read while indexing a split


def require_grain() -> Any:
  """The ``grain`` module, or a one-line ``ConfigError`` saying how to get it."""
  try:
    import grain  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ConfigError(
        "data_placement='stream' reads batches with grain, which is not "
        "installed: `pip install 'seqclf[stream]'` (or `pip install grain`), "
        "or set config key `data_placement` to 'device'.",
        arg='config.data_placement') from None
  return grain


def device_memory_bytes(device: Any = None, local_devices: int | None = None
                        ) -> int:
  """Memory one device may use: the accelerator's own, or for CPU devices
  (which share the host's memory) the host's divided among them."""
  import jax  # pylint: disable=g-import-not-at-top
  device = device or jax.local_devices()[0]
  stats = device.memory_stats() if device.platform != 'cpu' else None
  if stats and stats.get('bytes_limit'):
    return int(stats['bytes_limit'])
  host = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
  return host // (local_devices or jax.local_device_count())


def placement(requested: str, split_bytes: int, device_bytes: int) -> str:
  """``'device'`` or ``'stream'``: ``auto`` streams a training split that
  would take more than ``DEVICE_SHARE`` of one device's memory.

  Args:
    requested: config key ``data_placement``.
    split_bytes: the training split's sequences as stored.
    device_bytes: one device's memory (``device_memory_bytes``).

  Returns:
    Where the training split goes.
  """
  if requested not in PLACEMENTS:
    raise ConfigError(f'Config key `data_placement` must be one of '
                      f'{PLACEMENTS}, got {requested!r}.',
                      arg='config.data_placement')
  if requested != 'auto':
    return requested
  return 'stream' if split_bytes > DEVICE_SHARE * device_bytes else 'device'


class LazyImages:
  """An (N, T, F) array whose rows are read from a random-access source
  when indexed (a slice or an index array), so evaluation and streaming
  read only what they use; ``np.asarray`` reads all of it.

  Args:
    read: maps sorted-or-not record numbers to a list of (T, F) arrays.
    records: the record number of each example, in the dataset's order.
    shape: (N, T, F) as stored.
    dtype: the stored dtype.
    transform: applied to each batch read ((B, T, F) -> (B, T', F')), e.g. a
      view of images (``seqclf.data.views``); ``shape`` is then its output's.
    missing: (NaN values, sequences holding one) on the valid steps, as
      counted when the rows were written (``MISSING``); None: not counted.
  """

  lazy = True

  def __init__(self, read: Callable[[np.ndarray], list[np.ndarray]],
               records: np.ndarray, shape: tuple[int, ...], dtype: Any,
               transform: Callable[[np.ndarray], np.ndarray] | None = None,
               missing: tuple[int, int] | None = None):
    self.read, self.records = read, np.asarray(records, np.int64)
    self.shape, self.dtype = tuple(shape), np.dtype(dtype)
    self.transform, self.missing = transform, missing

  ndim = property(lambda self: len(self.shape))
  nbytes = property(lambda self: int(np.prod(self.shape)) * self.dtype.itemsize)

  def __len__(self) -> int:
    return self.shape[0]

  def transformed(self, fn: Callable[[np.ndarray], np.ndarray],
                  shape: tuple[int, ...]) -> LazyImages:
    """The same rows read through ``fn`` (of output ``shape``)."""
    inner = self.transform
    both = fn if inner is None else (lambda x: fn(inner(x)))
    return LazyImages(self.read, self.records, shape, self.dtype, both,
                      self.missing)

  def __getitem__(self, index: Any) -> np.ndarray:
    if isinstance(index, slice):
      index = np.arange(*index.indices(len(self)))
    index = np.asarray(index)
    rows = self.read(self.records[index.ravel()])
    out = (np.stack(rows).astype(self.dtype, copy=False) if len(rows)
           else np.zeros((0, *self.shape[1:]), self.dtype))
    if self.transform is not None and len(rows):
      out = self.transform(out)
    return out.reshape(*index.shape, *self.shape[1:])

  def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
    out = np.concatenate([self[i:i + READ_CHUNK]
                          for i in range(0, max(len(self), 1), READ_CHUNK)])
    return out if dtype is None else out.astype(dtype)


def is_lazy(x: Any) -> bool:
  return getattr(x, 'lazy', False)


def materialize(split: Split) -> Split:
  """A split with its lazy sequences read into memory."""
  return {k: np.asarray(v) if is_lazy(v) else v for k, v in split.items()}


def _image_reader(source: Any, shape: tuple[int, ...], dtype: Any
                  ) -> Callable[[np.ndarray], list[np.ndarray]]:
  """Reads records' ``image`` alone: the raw ArrayRecord bytes, then only
  that feature of the ``tf.train.Example`` (``np.frombuffer`` for
  bytes-encoded tensors), skipping tfds' decoding of every feature."""
  from tensorflow_datasets.core.example_parser import tf_example_pb2  # pylint: disable=g-import-not-at-top
  raw, dtype = source.data_source, np.dtype(dtype)

  def one(record: bytes) -> np.ndarray:
    f = tf_example_pb2.Example.FromString(record).features.feature['image']
    kind = f.WhichOneof('kind')
    if kind == 'bytes_list':
      x = np.frombuffer(f.bytes_list.value[0], dtype)
    elif kind == 'int64_list':
      x = np.asarray(f.int64_list.value, np.int64).astype(dtype)
    else:
      x = np.asarray(f.float_list.value, np.float32).astype(dtype)
    return x.reshape(shape)

  def read(records: np.ndarray) -> list[np.ndarray]:
    if not len(records):
      return []
    return [one(r) for r in raw.__getitems__(records.tolist())]
  return read


def _build_index(source: Any) -> dict[str, np.ndarray]:
  """Record number, label and lengths of each example in ``id`` order, by
  one pass over the records (``READ_CHUNK`` at a time)."""
  ids, labels, lengths = [], [], []
  for start in range(0, len(source), READ_CHUNK):
    for e in source.__getitems__(range(start, min(start + READ_CHUNK,
                                                  len(source)))):
      ids.append(int(e.get('id', len(ids))))
      labels.append(int(e['label']))
      if 'lengths' in e:
        lengths.append(int(e['lengths']))
  by_id = np.argsort(np.asarray(ids), kind='stable')
  index = {'record': by_id.astype(np.int64),
           'label': np.asarray(labels, np.int32)[by_id]}
  if lengths:
    index['lengths'] = np.asarray(lengths, np.int32)[by_id]
  return index


def load_index(data_dir: Path, split: str, source: Any) -> dict[str, np.ndarray]:
  """``{split}-index.npz`` beside the prepared files, built once if missing."""
  path = Path(data_dir) / f'{split}{INDEX_SUFFIX}'
  try:
    with np.load(path, allow_pickle=False) as f:
      index = {k: f[k] for k in f.files}
    if len(index['record']) == len(source):
      return index
  except (*npz.LOAD_ERRORS, KeyError):
    pass  # Missing or damaged: built again.
  index = _build_index(source)
  write_cache(path, index)
  return index


def read_missing(data_dir: Path, split: str) -> tuple[int, int] | None:
  """A split's (NaN values, sequences holding one) as ``Writer`` counted
  them (``MISSING``); None for a dataset written before they were counted."""
  try:
    counts = json.loads((Path(data_dir) / MISSING).read_text())[split]
    return int(counts['nan']), int(counts['sequences'])
  except (OSError, ValueError, KeyError, TypeError):
    return None


def open_split(builder: Any, split: str) -> Split:
  """A prepared split with its sequences on disk (``LazyImages``), in the
  order ``prepared.load_split`` reads it into memory, labels and lengths
  in memory."""
  source = builder.as_data_source()[split]
  index = load_index(Path(builder.data_dir), split, source)
  feature = builder.info.features['image']
  shape = (len(index['record']), *feature.shape)
  out = {'image': LazyImages(_image_reader(source, feature.shape,
                                           feature.np_dtype),
                             index['record'], shape, feature.np_dtype,
                             missing=read_missing(builder.data_dir, split)),
         'label': index['label']}
  if 'lengths' in index:
    out['lengths'] = index['lengths']
  return out


# ---- a stream-friendly copy ---------------------------------------------------
NAME = 'seqclf_stream'


def stream_dir(builder: Any) -> Path:
  """Where a prepared dataset's stream copy lives: ``DATA_DIR/NAME-stream/
  VERSION``, beside (not inside) tfds' own directory of it."""
  version = Path(builder.data_dir)
  return version.parent.parent / f'{version.parent.name}-stream' / version.name


class Writer:
  """Writes a tfds dataset that streams fast: ArrayRecord files of one record
  per group, uncompressed, the sequences as raw bytes, in the order given
  (``{split}-index.npz`` written beside); ``close`` adds tfds' metadata
  (``tfds.folder_dataset.write_metadata``) and the NaN counts (``MISSING``)
  and moves it into place. As a context manager, an error before ``close``
  removes the partial copy (``abort``): nothing half-written is left.

  Args:
    out: the dataset directory to create (replaced on ``close``).
    shape: one example's (T, F).
    dtype: uint8 or float32.
    lengths: whether examples carry ``lengths``.
    splits: the splits to write.
  """

  def __init__(self, out: Path, shape: tuple[int, ...], dtype: Any,
               lengths: bool, splits: tuple[str, ...], description: str = ''):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
    self.out, self.tmp = Path(out), Path(f'{out}.tmp')
    self.description, self.lengths = description, lengths
    spec = {'image': tfds.features.Tensor(
                shape=tuple(shape), dtype=dtype,
                encoding=tfds.features.Encoding.BYTES),
            'label': tfds.features.Scalar(dtype=np.int64),
            'id': tfds.features.Scalar(dtype=np.int64)}
    if lengths:
      spec['lengths'] = tfds.features.Scalar(dtype=np.int32)
    self.features = tfds.features.FeaturesDict(spec)
    shutil.rmtree(self.tmp, ignore_errors=True)
    self.tmp.mkdir(parents=True)
    self.writers = {split: array_record_module.ArrayRecordWriter(
        str(self.tmp / f'{NAME}-{split}.array_record-00000-of-00001'),
        'group_size:1,uncompressed') for split in splits}
    self.index = {split: {'label': [], 'lengths': []} for split in splits}
    self.missing = {split: {'nan': 0, 'sequences': 0} for split in splits}

  def __enter__(self) -> Writer:
    return self

  def __exit__(self, kind: Any, *_: Any) -> None:
    if kind is not None:
      self.abort()

  def add(self, split: str, image: np.ndarray, label: int,
          length: int | None = None) -> None:
    index = self.index[split]
    example = {'image': image, 'label': label, 'id': len(index['label'])}
    if self.lengths:
      example['lengths'] = length
      index['lengths'].append(length)
    self.writers[split].write(self.features.serialize_example(example))
    index['label'].append(label)
    nan = normalization.count_nan(image, length if self.lengths else None)
    if nan:
      self.missing[split]['nan'] += nan
      self.missing[split]['sequences'] += 1

  def abort(self) -> None:
    """Closes the files and removes the partial copy (``out`` untouched)."""
    for writer in self.writers.values():
      try:
        writer.close()
      except Exception:  # pylint: disable=broad-except
        pass  # already closed, or broken by the error being raised
    shutil.rmtree(self.tmp, ignore_errors=True)

  def close(self) -> Path:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    infos = []
    for split, writer in self.writers.items():
      writer.close()
      n = len(self.index[split]['label'])
      arrays = {'record': np.arange(n, dtype=np.int64),
                'label': np.asarray(self.index[split]['label'], np.int32)}
      if self.lengths:
        arrays['lengths'] = np.asarray(self.index[split]['lengths'], np.int32)
      np.savez(self.tmp / f'{split}{INDEX_SUFFIX}', **arrays)
      files = list(self.tmp.glob(f'{NAME}-{split}.array_record*'))
      infos.append(tfds.core.SplitInfo(
          name=split, shard_lengths=[n],
          num_bytes=sum(f.stat().st_size for f in files)))
    tfds.folder_dataset.write_metadata(
        data_dir=self.tmp, features=self.features, split_infos=infos,
        check_data=False, disable_shuffling=True,
        description=self.description)
    (self.tmp / MISSING).write_text(json.dumps(self.missing) + '\n')
    shutil.rmtree(self.out, ignore_errors=True)
    self.tmp.rename(self.out)
    return self.out


def stream_copy(builder: Any, splits: tuple[str, ...]) -> Any:
  """A prepared tfds dataset's stream-friendly copy (``Writer``) in
  ``stream_dir``, made once (``READ_CHUNK`` examples in memory at a
  time): tfds' own files compress each record, which reading a batch at a
  time pays for again every epoch."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  out = stream_dir(builder)
  expected = {s: builder.info.splits[s].num_examples for s in splits}
  if (out / 'dataset_info.json').is_file():
    copy = tfds.builder_from_directory(str(out))
    if all(s in copy.info.splits and copy.info.splits[s].num_examples == n
           for s, n in expected.items()):
      return copy
  feature = builder.info.features['image']
  has_lengths = 'lengths' in builder.info.features
  with Writer(out, feature.shape, feature.np_dtype, has_lengths,
              tuple(builder.info.splits),
              f'stream copy of {builder.name}') as writer:
    for split in builder.info.splits:
      source = builder.as_data_source()[split]
      index = load_index(Path(builder.data_dir), split, source)
      for start in range(0, len(index['record']), READ_CHUNK):
        records = index['record'][start:start + READ_CHUNK].tolist()
        for e in source.__getitems__(records):
          writer.add(split, np.asarray(e['image']), int(e['label']),
                     int(e['lengths']) if has_lengths else None)
    writer.close()
  return tfds.builder_from_directory(str(out))


# ---- the training reader ------------------------------------------------------
@functools.lru_cache(maxsize=2)
def _permutation(seed: int, epoch: int, num_examples: int) -> np.ndarray:
  return order.epoch_permutation(seed, epoch, num_examples)


def step_indices(seed: int, num_examples: int, batch_size: int,
                 step: int) -> np.ndarray:
  """``order.train_indices(seed, ...)`` of one step (its epoch's permutation
  cached: a reader asks for every step in turn)."""
  order.check_batch_size(batch_size, num_examples)
  epoch, pos = divmod(step, num_examples // batch_size)
  perm = _permutation(seed, epoch, num_examples)
  return perm[pos * batch_size:(pos + 1) * batch_size].astype(np.int32)


class TrainStream:
  """This process's part of each training batch, read from ``split`` in the
  trainer's order, step after step from any step.

  Args:
    split: the training split (lazy or in-memory arrays).
    seed: the run's seed.
    batch_size: the global batch.
    part: the slice of every global batch this process trains on.
    workers: grain worker processes (0: threads of this process).
  """

  def __init__(self, split: Split, seed: int, batch_size: int,
               part: slice = slice(None), workers: int = 0,
               bucket: bool = False):
    self.split, self.seed, self.batch_size = split, seed, batch_size
    self.part, self.workers, self.bucket = part, workers, bucket
    self.keys = tuple(k for k in ('image', 'label', 'lengths') if k in split)
    self.num_examples = len(split['label'])
    self._epochs: dict[int, np.ndarray] = {}
    if bucket and 'lengths' not in split:
      raise ConfigError('Config key `bucket_by_length` groups examples by '
                        'their lengths, but this data has none (every '
                        'sequence is full length): set it to False.',
                        arg='config.bucket_by_length')

  def indices(self, step: int) -> np.ndarray:
    """The global batch of ``step`` (``order``'s, bucketed or not)."""
    if not self.bucket:
      return step_indices(self.seed, self.num_examples, self.batch_size, step)
    epoch, pos = divmod(step, self.num_examples // self.batch_size)
    if epoch not in self._epochs:
      table = order.bucketed_epoch(self.seed, epoch,
                                   np.asarray(self.split['lengths']),
                                   self.batch_size, self.split['image'].shape[1])
      self._epochs = {**{k: v for k, v in self._epochs.items()
                         if k == epoch - 1}, epoch: table}
    return self._epochs[epoch][pos]

  def batch(self, step: int) -> tuple[np.ndarray, ...]:
    """Step ``step``'s batch (this process's part): image, label[, lengths];
    bucketed, the image cut to the global batch's bucket length."""
    full = self.indices(step)
    idx = full[self.part]
    out = [self.split[k][idx] for k in self.keys]
    if self.bucket:
      steps = self.split['image'].shape[1]
      out[0] = out[0][:, :order.bucket_length(
          int(self.split['lengths'][full].max()), steps)]
    return tuple(out)

  def steps(self, first_step: int, prefetch: int = 4
            ) -> Iterator[tuple[np.ndarray, ...]]:
    """Batches of steps ``first_step, first_step + 1, ...`` (forever),
    read ahead by grain."""
    grain = require_grain()
    ds = grain.MapDataset.range(first_step, sys.maxsize).map(self.batch)
    threads = max(1, min(prefetch, 8))
    it = ds.to_iter_dataset(grain.ReadOptions(
        num_threads=threads, prefetch_buffer_size=2 * threads))
    if self.workers:
      from absl import flags  # pylint: disable=g-import-not-at-top
      if not flags.FLAGS.is_parsed():  # grain's workers read absl flags;
        flags.FLAGS.mark_as_parsed()   # seqclf's commands parse their own.
      # Batches come back pickled, not in shared memory: grain leaves the
      # shared-memory blocks of batches read ahead but never taken behind
      # when the run ends (multiprocessing's "leaked shared_memory objects"
      # warning at exit), and a step's batch is small beside its training.
      import grain.experimental  # pylint: disable=g-import-not-at-top
      it = grain.experimental.WithOptionsIterDataset(
          it, grain.experimental.DatasetOptions(min_shm_size=sys.maxsize))
      it = it.mp_prefetch(grain.MultiprocessingOptions(
          num_workers=self.workers, per_worker_buffer_size=prefetch),
                          worker_init_fn=exit_with_parent)
    return iter(it)


def exit_with_parent(worker_index: int, worker_count: int) -> None:
  """A grain worker's start: it exits once its parent is gone. A trainer
  killed with kill -9 cannot stop its workers, which would otherwise idle
  on, holding their memory, until the machine restarts."""
  del worker_index, worker_count
  parent = os.getppid()

  def watch() -> None:
    while os.getppid() == parent:  # An orphan is adopted by another.
      time.sleep(1.0)
    os._exit(0)  # pylint: disable=protected-access

  threading.Thread(target=watch, name='seqclf-parent-watch',
                   daemon=True).start()


def check_prepared(path: Path, what: str, command: str) -> None:
  """A one-line ``DataError`` unless ``path`` (a prepared dataset) exists."""
  if not (path / 'dataset_info.json').is_file():
    raise DataError(f'{what} is not prepared (no {path}/dataset_info.json): '
                    f'run `{command}` first.', arg='config.dataset')
