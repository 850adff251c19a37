"""Which recurrence paths (``impl``) can run a layer, decided in one place.

Every recurrent layer runs by one of ``IMPLS``. Whether a path can run a
layer depends on the layer (its cell, size, compute dtype and matmul
precision), on the backend and on how the program is partitioned, and each
path states its own limits here, once. The layers (``seqclf.nn``) ask
``check`` before running a forced path, so a path that cannot run is one
line naming those that can; ``config.validate`` asks it without a backend;
``impl='auto'`` (``seqclf.training.autotune``) times only what ``eligible``
returns. Asking never compiles the CPU kernel: ``eligible`` counts it only
when a build exists (``lstm_kernel.available``). The GPU kernels
(``gpu_lstm``) are compiled by jax itself on first use, so on the gpu
backend they need no build.
"""

from __future__ import annotations

import dataclasses

from seqclf.errors import ConfigError
from seqclf.kernels import gpu_lstm, lstm_kernel, precision

# scan: nn.scan of the cell (seqclf.kernels.reference), every cell and backend
# | fused: seqclf.kernels.fast_lstm | kernel: the CPU kernel (lstm_kernel)
# | gpu: the GPU kernels (gpu_lstm).
IMPLS = ('scan', 'fused', 'kernel', 'gpu')
# The order `auto` lists candidates in, and takes the first of untimed
# (SEQCLF_AUTOTUNE=0): the fastest measured so far first.
PREFERENCE = ('kernel', 'fused', 'gpu', 'scan')
# The GPU kernels run where forced (impl='gpu'); `auto` considers them only
# on the device kinds where a GPU has measured them faster than 'fused' (the
# figures in docs/gpu_kernel.md): none yet, so a GPU user's default job never
# depends on code no GPU has run.
GPU_KERNEL_MEASURED_FASTER_ON: frozenset[str] = frozenset()


@dataclasses.dataclass(frozen=True)
class Layer:
  """What decides whether a path can run a recurrent layer.

  ``cell`` is ``'lstm'`` for seqclf's ``LSTMCell`` (the fast paths' cell),
  else the cell's name; ``dtype`` the compute dtype's name; ``sharded``:
  the layer runs inside a ``jax.jit`` partitioned over several devices.
  """

  cell: str = 'lstm'
  hidden_size: int = 128
  dtype: str = 'float32'
  matmul_precision: str = 'float32'
  sharded: bool = False


def layer_problem(layer: Layer, backend: str | None = None) -> str | None:
  """What stops every path running ``layer`` on ``backend`` (its matmul
  precision), or None: the layer's fault, not the path's."""
  if layer.matmul_precision not in precision.PRECISIONS:
    return (f'matmul_precision must be one of {precision.PRECISIONS}, got '
            f'{layer.matmul_precision!r}')
  if (layer.matmul_precision == 'tensorfloat32' and backend is not None
      and backend != 'gpu'):
    return ("matmul_precision='tensorfloat32' runs TF32 matmuls, which only "
            f"GPUs have (this is the {backend} backend): use 'float32' or "
            "'bfloat16'")
  return None


def why_not(impl: str, layer: Layer, backend: str | None = None, *,
            need_build: bool = False) -> str | None:
  """Why ``impl`` cannot run ``layer`` on ``backend``, or None if it can.

  Args:
    impl: one of ``IMPLS``.
    layer: the layer to run.
    backend: ``jax.default_backend()``'s name, or None to check only what
      holds on every backend (a config before any device exists).
    need_build: count the CPU kernel only if a build exists (``auto``);
      a forced ``impl='kernel'`` builds it on first use instead.

  Returns:
    A reason that completes "impl=... cannot run here: ...", or None.
  """
  if impl not in IMPLS:
    return f'it is not one of {IMPLS}'
  if problem := layer_problem(layer, backend):
    return problem
  if impl == 'scan':
    return None
  if layer.cell != 'lstm':
    return (f"it runs only seqclf's LSTMCell (cell='lstm'), got "
            f"{layer.cell!r}")
  if impl == 'fused':
    return None
  if impl == 'gpu':
    return gpu_lstm.why_not(layer.hidden_size, layer.dtype,
                            layer.matmul_precision, backend, layer.sharded)
  return lstm_kernel.why_not(layer.hidden_size, layer.dtype,
                             layer.matmul_precision, backend, layer.sharded,
                             need_build=need_build)


def eligible(layer: Layer, backend: str, device_kind: str | None = None
             ) -> tuple[str, ...]:
  """The paths ``auto`` may run ``layer`` by on ``backend`` now.

  Args:
    layer: the layer to run.
    backend: ``jax.default_backend()``'s name.
    device_kind: the device's ``device_kind``: the GPU kernels are
      candidates only on ``GPU_KERNEL_MEASURED_FASTER_ON``.

  Returns:
    Their names in ``PREFERENCE`` order (the CPU kernel only if built).
  """
  return tuple(impl for impl in PREFERENCE
               if (impl != 'gpu' or device_kind in GPU_KERNEL_MEASURED_FASTER_ON)
               and why_not(impl, layer, backend, need_build=True) is None)


def check(impl: str, layer: Layer, backend: str | None = None) -> None:
  """Whether ``impl`` can run ``layer`` on ``backend``.

  Args:
    impl: one of ``IMPLS``.
    layer: the layer to run.
    backend: the backend's name, or None (what holds on any backend).

  Returns:
    None; a one-line ``ConfigError`` naming the paths that can, otherwise.
  """
  if impl not in IMPLS:
    raise ConfigError(f'impl must be one of {IMPLS}, got {impl!r}.',
                      arg='impl')
  if problem := layer_problem(layer, backend):  # no path's fault
    raise ConfigError(f'{problem}.', arg='matmul_precision')
  reason = why_not(impl, layer, backend)
  if reason is None:
    return
  others = [i for i in PREFERENCE if i != impl and why_not(i, layer, backend)
            is None]
  where = f' on the {backend} backend' if backend else ''
  fix = (f"use impl={' or '.join(repr(i) for i in others)}"
         if others else 'no path can')
  raise ConfigError(f'impl={impl!r} cannot run this layer{where}: {reason}; '
                    f'{fix}.', arg='impl')
