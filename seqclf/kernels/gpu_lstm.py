"""The LSTM recurrence as GPU kernels with the time loop inside (``impl='gpu'``).

On a GPU, ``fast_lstm``'s scan is bound by latency, not arithmetic: XLA
launches several kernels per time step and reads the recurrent weights from
memory each time (``docs/gpu_kernel.md``). Here a Pallas kernel runs a tile
of batch rows through the whole time loop with the recurrent matmul, the
gates and the state update of every step inside it (forward), and another
runs the reverse loop (backward); ``seqclf.kernels.gpu_lstm_pallas`` holds
both. Around them: the input projection is one large GEMM before the loop
(the caller's ``projected``), and the recurrent weight gradient one large
GEMM after the backward loop, as in ``fast_lstm``. The arithmetic is
``fast_lstm``'s, so the two agree to float rounding; matmuls run at
``matmul_precision`` with float32 accumulation, everything else in float32.

Kernels are compiled by jax on first use (Pallas lowers them to Triton for
the GPU); ``interpret=True`` runs the same kernels on any backend, slowly,
which is how the CPU test suite checks them. First derivatives only, like
the other hand-written backward passes: forward mode is an error naming
``impl='scan'``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp

from seqclf.kernels import gpu_lstm_pallas as kernels

Array = jax.Array
Tiling = kernels.Tiling
# The matmul precisions, named as jax.default_matmul_precision names them.
PRECISIONS = tuple(kernels.LAX_PRECISION)
MIN_HIDDEN = 16  # Triton's smallest dot is 16 deep
# The largest hidden size per operand width: one gate's (H, H) block of the
# recurrent weights, a dot operand, must fit in shared memory with room to
# spare (128 KiB: float32 up to H=128, bfloat16 up to H=256).
MAX_GATE_BLOCK_BYTES = 128 * 1024
# Weights up to this size are loaded once and held across the time loop
# (bfloat16 at H=128); larger ones are read per step (from L1/L2).
RESIDENT_BYTES = 128 * 1024


def _operand_bytes(precision: str) -> int:
  return 2 if precision == 'bfloat16' else 4


def max_hidden(precision: str) -> int:
  """The largest hidden size the kernels run at ``precision``."""
  h = MIN_HIDDEN
  while (2 * h) ** 2 * _operand_bytes(precision) <= MAX_GATE_BLOCK_BYTES:
    h *= 2
  return h


@dataclasses.dataclass(frozen=True)
class Device:
  """What decides whether a GPU can run the kernels, read from a jax device
  (``Device.of``) or stated by a test.

  ``platform``: ``'cuda'`` or ``'rocm'`` (jax names both backends ``gpu``);
  ``kind``: jax's ``device_kind``; ``compute_capability``: (major, minor),
  None where the device does not say.
  """

  platform: str
  kind: str
  compute_capability: tuple[int, int] | None

  @classmethod
  def of(cls, device: Any) -> 'Device':
    """The facts of a jax device."""
    version = str(getattr(device.client, 'platform_version', '')).lower()
    platform = ('rocm' if 'rocm' in version or 'hip' in version else
                'cuda' if 'cuda' in version else device.platform)
    try:
      capability = tuple(int(part) for part in str(
          device.compute_capability).split('.')[:2])
    except (AttributeError, ValueError):
      capability = None
    return cls(platform, device.device_kind,
               capability if capability and len(capability) == 2 else None)


# Triton compiles the kernels' dots for tensor cores from Ampere (sm_80) on.
MIN_COMPUTE_CAPABILITY = (8, 0)
# The shared memory one block may use (opt-in), KiB, per compute capability:
# the CUDA C++ Programming Guide's table of technical specifications.
SHARED_MEMORY_KIB = {(7, 0): 96, (7, 2): 96, (7, 5): 64, (8, 0): 163,
                     (8, 6): 99, (8, 7): 163, (8, 9): 99, (9, 0): 227,
                     (10, 0): 227, (10, 3): 227, (12, 0): 99, (12, 1): 99}
# Beside the weights, the kernels stage a few KiB (tiles of h, c and gates):
# with it the estimate matches the sm_90a compile table
# (experiments/results/gpu-kernel/compile_sm90a.md) or is above it.
STAGING_BYTES = 8 * 1024


def shared_memory_bytes(hidden: int, precision: str, tiling: Tiling) -> int:
  """The shared memory a block of the kernels needs: the recurrent weights'
  four gate blocks when held across the loop, one when read per step, and
  the staging."""
  blocks = 4 if tiling.resident else 1
  return blocks * hidden * hidden * _operand_bytes(precision) + STAGING_BYTES


def pallas_knows(kind: str) -> bool:
  """Whether the installed jax's Pallas Triton lowering knows ``kind``.

  Recent jax looks the device kind up in a fixed table (and derives other
  NVIDIA parts from their name), raising "Unsupported GPU device kind" for
  the rest; older jax reads the compute capability from the device, so it
  knows every kind.
  """
  try:  # pylint: disable=import-outside-toplevel
    from jax._src.pallas.triton import gpu_info
  except ImportError:
    return True
  find = getattr(gpu_info, 'gpu_version_from_device_kind', None)
  return find is None or kind.startswith('NVIDIA') or find(kind) is not None


def device_reason(device: Device, hidden_size: int, precision: str
                  ) -> str | None:
  """Why ``device`` cannot run the kernels at this size and precision (the
  default tiling), or None if it can: the platform, the compute capability,
  the device kinds Pallas knows and the shared memory, in that order."""
  if device.platform != 'cuda':
    return ('the kernels are compiled by Triton for NVIDIA GPUs (CUDA); this '
            f'GPU ({device.kind}) runs {device.platform}')
  capability = device.compute_capability
  if capability is None or capability < MIN_COMPUTE_CAPABILITY:
    have = ('an unknown compute capability' if capability is None else
            'compute capability {}.{}'.format(*capability))
    return ("Triton's tensor-core dots need compute capability "
            '{}.{} or newer; this {} has {}'.format(
                *MIN_COMPUTE_CAPABILITY, device.kind, have))
  if not pallas_knows(device.kind):
    return (f"the installed jax's Pallas (Triton) does not know the device "
            f'kind {device.kind!r}')
  need = shared_memory_bytes(hidden_size, precision,
                             default_tiling(hidden_size, precision))
  have = SHARED_MEMORY_KIB.get(capability)
  if have is None or need > have * 1024:
    known = f'{have} KiB' if have is not None else 'an unknown amount'
    return (f'at hidden_size={hidden_size} and matmul_precision='
            f'{precision!r} its tiling needs {-(-need // 1024)} KiB of shared '
            f'memory a block; this {device.kind} (sm_'
            f'{capability[0]}{capability[1]}) has {known}')
  return None


def why_not(hidden_size: int, dtype: str, precision: str,
            backend: str | None, sharded: bool = False,
            device: Device | None = None) -> str | None:
  """Why the GPU kernels cannot run an LSTM layer here, or None if they
  can: their limits, stated once (``seqclf.kernels.paths`` asks).

  Args:
    hidden_size, dtype, precision: the layer's.
    backend: the backend's name; None checks only what holds on every
      backend (no device).
    sharded: the layer runs under a sharded ``jax.jit``.
    device: the GPU to check on the gpu backend (default: the first).

  Returns:
    A reason, or None.
  """
  if backend is not None and backend != 'gpu':
    return f'the GPU kernels run on the gpu backend only, this is {backend}'
  if dtype != 'float32':
    return (f'it keeps float32 parameters and sets the matmul operands by '
            f"matmul_precision, got dtype={dtype!r} (use dtype='float32' "
            f"with matmul_precision='bfloat16')")
  if precision not in PRECISIONS:
    return f'matmul_precision must be one of {PRECISIONS}, got {precision!r}'
  top = max_hidden(precision)
  if (hidden_size < MIN_HIDDEN or hidden_size > top
      or hidden_size & (hidden_size - 1)):
    return (f'at matmul_precision={precision!r} it needs hidden_size to be a '
            f'power of two from {MIN_HIDDEN} to {top}, got {hidden_size}')
  if sharded:
    return ('a sharded jax.jit would replicate its kernels on every device, '
            'not partition them')
  if backend == 'gpu':
    return device_reason(device or Device.of(jax.local_devices()[0]),
                         hidden_size, precision)
  return None


def default_tiling(hidden: int, precision: str) -> Tiling:
  """The launch the layers use: 16-row tiles (the most programs per batch,
  Triton's smallest dot), 8 warps, the weights held across the loop when
  they fit ``RESIDENT_BYTES``. Chosen from compiling every option for sm_90a
  on a CPU (``experiments/gpu_kernel_compile.py``, ``docs/gpu_kernel.md``:
  the fewest register spills, shared memory within an H100/H200's), not yet
  from timing them (``experiments/gpu_kernel_tune.py`` does, on a GPU)."""
  resident = 4 * hidden * hidden * _operand_bytes(precision) <= RESIDENT_BYTES
  return Tiling(block_rows=16, resident=resident, num_warps=8)


def lstm_recurrence(projected: Array, w_h: Array, c0: Array, h0: Array,
                    forget_bias: float = 1.0, lengths: Array | None = None,
                    matmul_precision: str = 'float32',
                    interpret: bool = False, tiling: Tiling | None = None
                    ) -> tuple[tuple[Array, Array], Array]:
  """Runs the LSTM over time-major inputs that are already projected.

  ``fast_lstm.lstm_recurrence``'s contract, as GPU kernels.

  Args:
    projected: (T, B, 4H) float32 input half of the gates, ``x_t @ W_x + b``.
    w_h: (H, 4H) float32 recurrent kernel.
    c0, h0: (B, H) initial state (computed in float32).
    forget_bias: added to the forget gate's pre-activation.
    lengths: (B,) int, or None: row b's steps from ``lengths[b]`` on are
      padding, where its state is kept (its ``(c_T, h_T)`` is the state after
      its last valid step) and its outputs are zero.
    matmul_precision: the recurrent matmuls' operands (``PRECISIONS``):
      float32, TF32 or bfloat16, accumulated in float32.
    interpret: run the kernels in Pallas' interpreter (any backend; tests).
    tiling: the kernels' launch, default ``default_tiling``.

  Returns:
    ``((c_T, h_T), hs)`` with hs of shape (T, B, H), float32.
  """
  steps, batch = projected.shape[:2]
  hidden = w_h.shape[0]
  reason = why_not(hidden, jnp.dtype(w_h.dtype).name, matmul_precision,
                   backend=None)
  if reason is None and jnp.dtype(projected.dtype) != jnp.float32:
    reason = f'projected must be float32, got {projected.dtype}'
  if reason:
    raise ValueError(f"impl='gpu' cannot run this layer: {reason}.")
  c0, h0 = c0.astype(jnp.float32), h0.astype(jnp.float32)
  if not steps or not batch:
    return (c0, h0), jnp.zeros((steps, batch, hidden), jnp.float32)
  padded = lengths is not None
  lengths = (jnp.clip(jnp.asarray(lengths, jnp.int32), 0, steps) if padded
             else jnp.zeros((batch,), jnp.int32))
  spec = kernels.Spec(steps, batch, hidden, float(forget_bias),
                      matmul_precision, padded,
                      tiling or default_tiling(hidden, matmul_precision),
                      interpret)
  return _recurrence(projected, w_h, c0, h0, lengths, spec)


def _operand(w: Array, spec: kernels.Spec) -> Array:
  return w.astype(kernels.matmul_dtype(spec.precision))


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _recurrence(projected, w_h, c0, h0, lengths, spec):
  hs, c, h = kernels.forward(spec, projected, _operand(w_h, spec), c0, h0,
                             lengths, train=False)
  return (c, h), hs


def _fwd(projected, w_h, c0, h0, lengths, spec):
  hs, c, h, ts, c_prev, tanh_c = kernels.forward(
      spec, projected, _operand(w_h, spec), c0, h0, lengths, train=True)
  return ((c, h), hs), (w_h, h0, lengths, hs, ts, c_prev, tanh_c)


def _bwd(spec, saved, cotangents):
  w_h, h0, lengths, hs, ts, c_prev, tanh_c = saved
  (dc, dh), dhs = cotangents
  dgates, dc0, dh0 = kernels.backward(
      spec, dhs, dc, dh, ts, c_prev, tanh_c, _operand(w_h.T, spec), lengths)
  # The state entering step t is the output of step t-1 wherever step t is
  # valid (padding comes only after a row's valid steps, and its gate
  # gradients are zero), so hs shifted by one step stands in for it.
  h_prev = jnp.concatenate([h0[None], hs[:-1]])
  # One (H, T·B) @ (T·B, 4H) GEMM instead of T accumulations in the loop.
  dw_h = jnp.einsum('tbh,tbg->hg', _operand(h_prev, spec),
                    _operand(dgates, spec),
                    precision=kernels.LAX_PRECISION[spec.precision],
                    preferred_element_type=jnp.float32)
  return dgates, dw_h.astype(w_h.dtype), dc0, dh0, None


_recurrence.defvjp(_fwd, _bwd)
