"""Data parallelism on JAX's own runtime: one device, ``jax.pmap``, or a sharded ``jax.jit``.

The trainer keeps one *canonical* state, the one it evaluates and
checkpoints: a single-device pytree in ``single`` and ``pmap`` modes, and
global arrays replicated over the ``('batch',)`` mesh in ``sharded`` mode.
``DataParallel`` converts it to the layout its mode runs in and back, places
the training set and each chunk's batch indices, and builds the chunk
function. Every mode runs the core's ``train_steps`` on the same global batch
(``config.batch_size``), so all give the same parameters up to float
summation order:

- ``single``: ``jax.jit(train_steps)`` on the first device.
- ``pmap``: the state replicated on each local device, each device gets a
  contiguous slice of every global batch, ``train_steps(axis_name='batch')``
  averages gradients with ``lax.pmean``.
- ``sharded``: one ``jax.jit`` over all (global) devices with the batch
  indices sharded ``P(None, 'batch')`` and params replicated; XLA inserts the
  gradient all-reduce. Each process builds only its own part of every index
  array with ``jax.make_array_from_process_local_data``.

Multi-process runs call ``initialize_distributed`` before any other JAX call.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import zlib
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from flax import jax_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from seqclf.errors import ConfigError

MODES = ('auto', 'single', 'pmap', 'sharded')
AXIS = 'batch'
PyTree = Any


def initialize_distributed(coordinator: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None) -> None:
  """Joins a multi-process JAX job (``jax.distributed.initialize``).

  Arguments left as None come from JAX's own sources (``JAX_COORDINATOR_ADDRESS``
  or a detected cluster such as SLURM or a TPU pod). CPU devices get the gloo
  collectives, without which cross-process all-reduces on CPU are not
  implemented; GPUs and TPUs keep their own.
  """
  jax.distributed.initialize(coordinator_address=coordinator,
                             num_processes=num_processes,
                             process_id=process_id)
  # Before any backend exists, as is initialize: a job it refused sets none.
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')


def cpu_device_count(requested: int, batch_size: int,
                     cores: int | None = None) -> int:
  """``requested`` CPU devices, or for 0 the most (<= cores) that divide the batch."""
  if requested:
    return requested
  cores = len(os.sched_getaffinity(0)) if cores is None else cores
  return max(d for d in range(1, cores + 1) if batch_size % d == 0)


def configure_cpu_devices(requested: int, batch_size: int) -> int | None:
  """Splits the host CPU into single-threaded XLA devices; call before any JAX op.

  XLA:CPU runs an LSTM's small per-step matmuls and elementwise kernels on one
  thread however many cores there are, so one device per core with the batch
  split across them (data parallelism) is what uses a multi-core CPU
  (docs/design.md; measurements in docs/performance.md). Accelerators are
  unaffected: their devices stay the default ones. Returns the device count
  set, or None when the user's ``XLA_FLAGS`` or ``jax_num_cpu_devices``
  already decide it (theirs wins).
  """
  xla_flags = os.environ.get('XLA_FLAGS', '')
  if ('xla_force_host_platform_device_count' in xla_flags
      or jax.config.jax_num_cpu_devices != -1):
    return None
  count = cpu_device_count(requested, batch_size)
  if count > 1 and 'xla_cpu_multi_thread_eigen' not in xla_flags:
    os.environ['XLA_FLAGS'] = f'{xla_flags} --xla_cpu_multi_thread_eigen=false'
  jax.config.update('jax_num_cpu_devices', count)
  return count


def resolve_mode(mode: str, num_devices: int | None = None) -> str:
  """``auto``: ``single`` on one device; several: ``pmap`` for one process's CPUs, else ``sharded``.

  On one process's CPU devices ``pmap`` runs the CPU kernel on each device's
  slice of the batch, where a sharded ``jax.jit`` would replicate the
  kernel's custom call (docs/design.md); across processes and on
  accelerators ``sharded`` is JAX's recommended path.
  """
  if mode not in MODES:
    raise ConfigError(f'Config key `parallelism` must be one of {MODES}, '
                      f'got {mode!r}.')
  num_devices = jax.device_count() if num_devices is None else num_devices
  if mode == 'auto':
    if num_devices == 1:
      return 'single'
    local_cpu = jax.process_count() == 1 and jax.default_backend() == 'cpu'
    return 'pmap' if local_cpu else 'sharded'
  return mode


def make_mesh(devices: list[jax.Device] | None = None) -> Mesh:
  """A 1-D ``('batch',)`` mesh over ``devices`` (default: every global device)."""
  devices = jax.devices() if devices is None else devices
  return jax.make_mesh((len(devices),), (AXIS,), (AxisType.Auto,),
                       devices=devices)


def put_global(tree: PyTree, sharding: NamedSharding) -> PyTree:
  """Host values (the same on every process) -> global arrays with ``sharding``.

  ``make_array_from_callback`` asks each process only for the slices its own
  devices hold, so this works unchanged across processes.
  """

  def put(x):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda i: x[i])

  return jax.tree.map(put, tree)


def first_replica(tree: PyTree) -> PyTree:
  """Replicated global arrays -> their copy on the first local device (no transfer)."""
  return jax.tree.map(
      lambda x: x.addressable_data(0) if isinstance(x, jax.Array) else x, tree)


def unstack(tree: PyTree) -> PyTree:
  """A pmap-stacked pytree (leading device axis) -> the first local device's entry."""
  return jax.tree.map(
      lambda x: x.addressable_data(0).reshape(x.shape[1:]), tree)


def local_batch_slice(sharding: NamedSharding, shape: tuple[int, ...],
                      axis: int) -> slice:
  """The contiguous range of ``axis`` that this process's devices hold."""
  ranges = {idx[axis].indices(shape[axis])[:2]
            for idx in sharding.addressable_devices_indices_map(shape).values()}
  lo, hi = min(r[0] for r in ranges), max(r[1] for r in ranges)
  if sum(b - a for a, b in ranges) != hi - lo:
    raise RuntimeError(f'This process holds a non-contiguous part {sorted(ranges)}'
                       ' of the batch; build the mesh with make_mesh().')
  return slice(lo, hi)


def agreed_signal(signum: int | None) -> int | None:
  """The stop signal any process received (None if none did), on every process.

  A checkpoint save is collective across processes, so a stop requested on
  one process (SIGTERM reaches hosts at different moments) must be taken by
  all at the same step; one tiny all-gather per chunk decides it.
  """
  if jax.process_count() == 1:
    return signum
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  agreed = int(np.max(multihost_utils.process_allgather(
      np.int32(signum or 0))))
  return agreed or None


def agreed_choice(choice: str, options: tuple[str, ...]) -> str:
  """Process 0's ``choice`` (one of ``options``), on every process.

  A decision each process makes for itself (``impl='auto'`` times the paths
  on its own CPU) must be the same everywhere, or the processes compile
  different programs; a collective, so every process must call it.
  """
  if jax.process_count() == 1:
    return choice
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return options[int(multihost_utils.broadcast_one_to_all(
      np.int32(options.index(choice))))]


def check_same_config(config: dict[str, Any],
                      local: tuple[str, ...] = ()) -> None:
  """A ``ConfigError`` on every process unless all were given the same
  config (but its ``local`` keys, which may differ by host): otherwise each
  would train its own model, or the collectives would crash or hang. A
  collective, so every process must call it."""
  if jax.process_count() == 1:
    return
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  keys = sorted(k for k in config if k not in local)
  crc = lambda v: zlib.crc32(json.dumps(v, sort_keys=True, default=str
                                        ).encode()) & 0x7FFFFFFF
  counts = multihost_utils.process_allgather(np.int32(len(keys)))
  if len(set(np.asarray(counts).tolist())) == 1:
    codes = np.asarray(multihost_utils.process_allgather(
        np.array([crc(keys)] + [crc(config[k]) for k in keys], np.int32)))
    differ = [k for k, column in zip(['(its keys)', *keys], codes.T)
              if len(set(column.tolist())) > 1]
  else:
    differ = ['(its keys)']
  if differ:
    raise ConfigError(
        f'The {jax.process_count()} processes were given different configs '
        f'(differing in {", ".join(differ)}): run the same command on each, '
        'with only --process_id differing.', arg='config')


@dataclasses.dataclass
class DataParallel:
  """The layout and chunk function of one parallelism mode (see module doc)."""

  mode: str
  devices: list[jax.Device]
  mesh: Mesh | None = None

  @property
  def num_devices(self) -> int:
    return len(self.devices)

  # ---- state -------------------------------------------------------------
  def canonical(self, state: PyTree) -> PyTree:
    """Places a fresh state in the layout that is evaluated and checkpointed.

    A concrete placement matters for restore: its shardings are the restore
    target, so a checkpoint written on any device count loads on this one.
    """
    if self.mode == 'sharded':
      return put_global(state, NamedSharding(self.mesh, P()))
    return jax.device_put(state, self.devices[0])

  def to_run(self, state: PyTree) -> PyTree:
    """Canonical -> the layout the chunk function takes (pmap: stacked replicas)."""
    if self.mode == 'pmap':
      return jax_utils.replicate(state, jax.local_devices())
    return state

  def from_run(self, state: PyTree) -> PyTree:
    """The chunk function's layout -> canonical."""
    return unstack(state) if self.mode == 'pmap' else state

  def local(self, state: PyTree) -> PyTree:
    """A single-device copy of the canonical state, for host-driven evaluation."""
    return first_replica(state) if self.mode == 'sharded' else state

  # ---- data ----------------------------------------------------------------
  def put_data(self, *arrays: np.ndarray) -> tuple[jax.Array, ...]:
    """The training set (images, labels and optionally lengths), resident on
    every device that gathers batches."""
    if self.mode == 'sharded':
      return put_global(arrays, NamedSharding(self.mesh, P()))
    if self.mode == 'pmap':
      return jax_utils.replicate(arrays, jax.local_devices())
    return jax.device_put(arrays, self.devices[0])

  def put_indices(self, indices: np.ndarray) -> jax.Array | np.ndarray:
    """Global (steps, batch) indices -> this process's part, laid out for the
    mode. pmap also takes a stack of models' indices, (models, steps, batch):
    each device then gets its part of every model's batches."""
    if self.mode == 'single':
      return indices
    local = indices[..., self.local_part(indices.shape[-1])]
    if self.mode == 'sharded':
      sharding = NamedSharding(self.mesh, P(None, AXIS))
      return jax.make_array_from_process_local_data(sharding, local,
                                                    indices.shape)
    *lead, width = local.shape
    n = jax.local_device_count()
    parts = local.reshape(*lead, n, width // n)
    return np.ascontiguousarray(np.moveaxis(parts, -2, 0))

  def local_part(self, batch_size: int) -> slice:
    """The slice of every global batch this process's devices train on
    (what a streaming process reads)."""
    if self.mode == 'single':
      return slice(0, batch_size)
    return local_batch_slice(NamedSharding(self.mesh, P(None, AXIS)),
                             (1, batch_size), 1)

  def put_batches(self, arrays: tuple[np.ndarray, ...],
                  batch_size: int) -> tuple[jax.Array, ...]:
    """This process's part of a chunk's (steps, batch, ...) batches ->
    placed for the mode's chunk function (``chunk_fn(streamed=True)``)."""
    if self.mode == 'single':
      return jax.device_put(arrays, self.devices[0])
    sharding = NamedSharding(self.mesh, P(None, AXIS))
    if self.mode == 'sharded':
      return tuple(jax.make_array_from_process_local_data(
          sharding, a, (a.shape[0], batch_size, *a.shape[2:])) for a in arrays)
    devices = jax.local_devices()
    n = len(devices)
    stacked = NamedSharding(Mesh(np.array(devices), (AXIS,)), P(AXIS))

    def put(a):  # (steps, batch, ...) -> (devices, steps, batch / devices, ...)
      steps, width = a.shape[:2]
      parts = a.reshape(steps, n, width // n, *a.shape[2:]).swapaxes(0, 1)
      return jax.device_put(np.ascontiguousarray(parts), stacked)

    return tuple(put(a) for a in arrays)

  def metrics(self, metrics: PyTree) -> PyTree:
    """Per-step metrics as host numpy (identical on every replica)."""
    if self.mode == 'pmap':
      metrics = unstack(metrics)
    elif self.mode == 'sharded':
      metrics = first_replica(metrics)
    return jax.device_get(metrics)

  # ---- compute ---------------------------------------------------------------
  def chunk_fn(self, train_steps: Callable[..., Any],
               num_data: int = 2, *, streamed: bool = False) -> Any:
    """``train_steps(state, *data, indices)`` compiled for this mode, state
    donated; has ``.lower``. ``num_data``: the replicated data arguments
    (images and labels, and lengths when there are 3). ``streamed``:
    ``train_steps(state, *batches)`` instead, each (steps, batch, ...) and
    split over the devices on its batch axis (``put_batches``)."""
    if self.mode == 'pmap':
      return jax.pmap(functools.partial(train_steps, axis_name=AXIS),
                      axis_name=AXIS, donate_argnums=0)
    if self.mode == 'sharded':
      rep = NamedSharding(self.mesh, P())
      batch = NamedSharding(self.mesh, P(None, AXIS))
      data = [batch] * num_data if streamed else [*[rep] * num_data, batch]
      return jax.jit(train_steps, in_shardings=(rep, *data),
                     out_shardings=(rep, rep), donate_argnums=0)
    return jax.jit(train_steps, donate_argnums=0)


def setup(mode: str, batch_size: int) -> DataParallel:
  """Resolves ``mode`` against the visible devices and checks the batch fits."""
  mode = resolve_mode(mode)
  if mode == 'single':
    if jax.process_count() > 1:
      raise ConfigError(f"parallelism='single' cannot run across "
                        f'{jax.process_count()} processes: set config key '
                        "`parallelism` to 'sharded' (or 'auto').",
                        arg='config.parallelism')
    return DataParallel('single', jax.local_devices()[:1])
  devices = jax.devices()
  if batch_size % len(devices):
    raise ConfigError(
        f'batch_size={batch_size} does not divide by the {len(devices)} '
        f"devices of parallelism='{mode}': set config key `batch_size` to a "
        f'multiple of {len(devices)}'
        + (', `cpu_devices` to a number that divides it'
           if jax.default_backend() == 'cpu' else '')
        + (", or `parallelism` to 'single'." if jax.process_count() == 1
           else ' (every process holds its devices\' part of each batch).'),
        arg='config.batch_size')
  return DataParallel(mode, devices, make_mesh(devices))
