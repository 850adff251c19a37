"""An LSTM layer as hand-written CPU kernels (XLA FFI custom calls).

XLA:CPU runs every time step of a scanned LSTM as a dozen small kernels and
cannot fuse them (``fast_lstm``'s docstring). ``csrc/lstm_kernel.cc`` runs a
whole layer's forward pass, and its whole backward pass, as one custom call
each: per time step one register-blocked matmul of ``[x_t, h]`` with
``[w_x; w_h]`` and one pass over the gates; the backward also forms the weight
gradients while each step's data is in cache. The batch is split over the
intra-op thread pool (rows of an LSTM never interact). The arithmetic is
``fast_lstm``'s, so the two agree to float rounding.

The C++ is compiled by an explicit build (``make kernel``, ``main()``,
``build()``, or the first call of a layer forced to ``impl='kernel'``) with
the machine's C++ compiler
(``$CXX``, else ``c++``) for the machine's own CPU (``-march=native``, or
``$SEQCLF_KERNEL_MARCH``: e.g. ``x86-64-v3`` builds the AVX2 variant on an
AVX-512 machine) and cached in ``$SEQCLF_KERNEL_CACHE`` (default
``~/.cache/seqclf/kernels``), keyed by the source, flags, compiler, jaxlib and
CPU, so later runs load it in milliseconds. The source picks its vector
width and register block from the target's ISA (AVX-512, AVX2 + FMA, NEON,
or portable 128-bit vectors); ``build_info`` says which a build got. Float32 and CPU only; its matmuls run in float32, or with
``precision='bfloat16'`` as bfloat16 products with float32 accumulation,
on Intel AMX tiles or AVX512_BF16 dot products (the build's ISA decides:
``-march=cooperlake`` is the AVX512_BF16 variant on an AMX machine). First derivatives only: forward mode (``jax.jvp``) and a
second derivative are errors naming the path that has them (``'scan'``:
every transform). ``seqclf.nn.LSTM(impl='kernel')`` is the way in, ``available()``
says whether it can run here: it only looks for an existing build, so
asking (``impl='auto'``, config validation) never compiles.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np

from seqclf.errors import SeqclfError

Array = jax.Array
SOURCE = Path(__file__).parent / 'csrc' / 'lstm_kernel.cc'
FLAGS = ('-O3', '-ffp-contract=fast', '-std=c++17', '-shared', '-fPIC')
MARCH_ENV = 'SEQCLF_KERNEL_MARCH'  # the -march to build for; default native
_TARGETS = {'forward': 'SeqclfLstmForward',
            'forward_train': 'SeqclfLstmForwardTrain',
            'backward': 'SeqclfLstmBackward'}
LANES = 16  # H must be a multiple: whole vectors on every ISA the C++ knows
# Matmul precisions, named as jax.default_matmul_precision names them:
# float32 FMAs, or bfloat16 operands with float32 accumulation (AVX512_BF16
# or Intel AMX).
PRECISIONS = ('float32', 'bfloat16')
# What runs a build's bfloat16 matmuls, by SeqclfBf16Engine()'s answer.
BF16_ENGINES = {0: None, 1: 'avx512_bf16', 2: 'amx'}
# Where a CPU has neither (named in errors, once).
NO_BF16 = ('bfloat16 matmuls need AVX512_BF16 or Intel AMX, which this CPU '
           '(or its Linux kernel, or the kernel build) does not offer')


class KernelError(SeqclfError, RuntimeError):
  """The CPU kernel cannot be built or used here (message says why and what to do)."""


def cache_dir() -> Path:
  return Path(os.environ.get('SEQCLF_KERNEL_CACHE',
                             Path.home() / '.cache' / 'seqclf' / 'kernels'))


def default_march() -> str:
  """``$SEQCLF_KERNEL_MARCH``, else ``native``: the build the layers use."""
  return os.environ.get(MARCH_ENV) or 'native'


def _compiler() -> str:
  cxx = os.environ.get('CXX', 'c++')
  if shutil.which(cxx) is None:
    raise KernelError(
        f"impl='kernel' compiles a C++ kernel on first use, but no C++ "
        f'compiler {cxx!r} was found. Install one (e.g. `apt install g++`) or '
        f"set $CXX, or use impl='fused' or 'scan'.")
  return cxx


def cpu_signature() -> str:
  """What -march=native depends on: the CPU model and its feature flags."""
  try:
    lines = Path('/proc/cpuinfo').read_text().splitlines()
  except OSError:
    return platform.processor() or platform.machine()
  keep = [l for l in lines if l.startswith(('model name', 'flags', 'Features',
                                            'CPU part'))]
  return '\n'.join(sorted(set(keep)))


def _flags(march: str) -> list[str]:
  return [*FLAGS, f'-march={march}']


@functools.cache
def _build_key(cxx: str, march: str) -> str:
  """What a build depends on: source, flags, compiler, jaxlib and CPU."""
  version = subprocess.run([cxx, '--version'], capture_output=True,
                           text=True, check=False).stdout
  return hashlib.sha256('\0'.join([
      SOURCE.read_text(), ' '.join(_flags(march)), version,
      jaxlib.__version__, cpu_signature()]).encode()).hexdigest()[:16]


def _library_path(cxx: str, march: str) -> Path:
  return cache_dir() / f'lstm_kernel-{_tag(march)}-{_build_key(cxx, march)}.so'


def _tag(march: str) -> str:
  """``march`` as a name part of files and FFI targets."""
  return ''.join(c if c.isalnum() else '_' for c in march)


def build(march: str | None = None) -> Path:
  """Compiles the kernel for ``-march=march`` (default ``default_march()``)
  unless an identical build is cached; returns its path."""
  march = march or default_march()
  cxx = _compiler()
  path = _library_path(cxx, march)
  if path.exists():
    return path
  path.parent.mkdir(parents=True, exist_ok=True)
  # Written to a temporary name and renamed, so concurrent builds (test
  # workers, several runs) never load a half-written library.
  fd, tmp = tempfile.mkstemp(suffix='.so', dir=path.parent)
  os.close(fd)
  cmd = [cxx, *_flags(march), '-isystem', jax.ffi.include_dir(), str(SOURCE),
         '-o', tmp]
  result = subprocess.run(cmd, capture_output=True, text=True, check=False)
  if result.returncode:
    os.unlink(tmp)
    raise KernelError(
        f"Compiling the impl='kernel' CPU kernel failed ({' '.join(cmd)}):\n"
        f"{result.stderr[-2000:]}\nUse impl='fused' or 'scan' instead.")
  os.replace(tmp, path)
  return path


# cpuinfo flags a build needs, by the macros its -march defines.
_ISA_FLAGS = {'__AVX__': 'avx', '__AVX2__': 'avx2', '__FMA__': 'fma',
              '__F16C__': 'f16c', '__BMI2__': 'bmi2', '__AVX512F__': 'avx512f',
              '__AVX512BW__': 'avx512bw', '__AVX512DQ__': 'avx512dq',
              '__AVX512VL__': 'avx512vl', '__AVX512CD__': 'avx512cd',
              '__AVX512BF16__': 'avx512_bf16', '__AMX_TILE__': 'amx_tile',
              '__AMX_BF16__': 'amx_bf16'}


@functools.cache
def runs_here(march: str) -> bool:
  """Whether a build for ``-march=march`` can run on this CPU: every x86 ISA
  extension the compiler enables for it is in /proc/cpuinfo's flags (asked
  without building; ``native`` always runs)."""
  if march == 'native':
    return True
  try:
    macros = subprocess.run(
        [_compiler(), f'-march={march}', '-dM', '-E', '-x', 'c++', '/dev/null'],
        capture_output=True, text=True, check=True).stdout
    flags = set(cpu_signature().split())
  except (KernelError, subprocess.CalledProcessError, OSError):
    return False
  defined = {line.split()[1] for line in macros.splitlines()
             if line.startswith('#define ')}
  return all(flag in flags for macro, flag in _ISA_FLAGS.items()
             if macro in defined)


def library_path(march: str | None = None) -> Path:
  """Where the build for ``march`` (default ``default_march()``) is or would
  be cached; finding it never compiles."""
  march = march or default_march()
  return _library_path(_compiler(), march)


@functools.cache
def _open(march: str) -> ctypes.CDLL:
  """Loads the existing build for ``march`` and registers its FFI targets,
  once per process: a target name registers once, and any later build for
  ``march`` with the same key is the same library."""
  library = ctypes.cdll.LoadLibrary(str(library_path(march)))
  for name, symbol in _TARGETS.items():
    jax.ffi.register_ffi_target(_target(name, march),
                                jax.ffi.pycapsule(getattr(library, symbol)),
                                platform='cpu')
  return library


def _load(march: str, compile_now: bool) -> ctypes.CDLL | str:
  """The loaded library for ``march``, or why it cannot be had. Without
  ``compile_now`` only an existing build is used: a missing one is a reason,
  never a compile."""
  if not runs_here(march):
    return f'a kernel built for -march={march} cannot run on this CPU.'
  try:
    path = build(march) if compile_now else library_path(march)
  except KernelError as e:
    return str(e)
  if not path.exists():
    return (f"the CPU kernel for -march={march} is not built yet: run `make "
            f"kernel` (or `python -c 'from seqclf.kernels import lstm_kernel; "
            f"lstm_kernel.main()'`), or force impl='kernel', which builds it "
            f"on first use.")
  try:
    return _open(march)
  except OSError as e:
    return str(e)


def _target(name: str, march: str) -> str:
  return f'seqclf_lstm_{name}_{_tag(march)}'


def _register(march: str) -> ctypes.CDLL:
  """The library for ``march``, built now if need be (an explicit use)."""
  if isinstance(library := _load(march, compile_now=True), str):
    raise KernelError(library)
  return library


def available(precision: str = 'float32', march: str | None = None) -> bool:
  """True when a build of the kernel for this process's CPU exists and loads
  and runs matmuls at ``precision`` (the bfloat16 ones need AVX512_BF16 or
  Intel AMX). Never compiles: without a build the answer is False until
  ``make kernel``."""
  library = _load(march or default_march(), compile_now=False)
  if isinstance(library, str) or precision not in PRECISIONS:
    return False
  return precision == 'float32' or bool(library.SeqclfBf16Engine())


def build_info(march: str | None = None) -> dict[str, object]:
  """What the build for ``march`` is: its file, vector width in floats and
  register block (rows x vectors) as its ISA macros chose them, and what
  runs its bfloat16 matmuls in this process (``'amx'``, ``'avx512_bf16'``,
  or None: it has none)."""
  march = march or default_march()
  library = _register(march)
  return {'march': march, 'library': str(build(march)),
          'lanes': library.SeqclfKernelLanes(),
          'block': (library.SeqclfKernelBlockRows(),
                    library.SeqclfKernelBlockVecs()),
          'bfloat16': BF16_ENGINES[library.SeqclfBf16Engine()]}


def check_precision(precision: str, march: str | None = None) -> None:
  """Raises unless the kernel can run matmuls at ``precision`` here."""
  if precision not in PRECISIONS:
    raise ValueError(f'matmul_precision must be one of {PRECISIONS}, got '
                     f'{precision!r}.')
  _register(march or default_march())
  if not available(precision, march):
    raise KernelError(
        f"impl='kernel' with matmul_precision={precision!r}: {NO_BF16} "
        f"(-march={march or default_march()}); use matmul_precision="
        f"'float32', or impl='fused', which runs bfloat16 matmuls anywhere.")


def why_not(hidden_size: int, dtype: str, precision: str,
            backend: str | None, sharded: bool = False, *,
            need_build: bool = False) -> str | None:
  """Why the kernel cannot run an LSTM layer here, or None if it can: the
  kernel's limits, stated once (``seqclf.kernels.paths`` asks for every
  layer). ``backend`` None checks only what holds on every backend;
  ``need_build`` also requires an existing build (never compiles)."""
  if backend is not None and backend != 'cpu':
    return f'the CPU kernel runs on the CPU backend only, this is {backend}'
  if hidden_size % LANES:
    return (f'it needs hidden_size to be a multiple of {LANES}, got '
            f'{hidden_size}')
  if dtype != 'float32':
    return f'it computes in float32, got dtype={dtype!r}'
  if precision not in PRECISIONS:
    return (f'its matmuls run in one of {PRECISIONS}, not '
            f'matmul_precision={precision!r}')
  if sharded:
    return ('a sharded jax.jit would replicate its custom call on every '
            'device, not partition it')
  if backend is not None and need_build and not available(precision):
    return ('it is not built here (`make kernel`)' if not available()
            else f'matmul_precision={precision!r}: {NO_BF16}')
  return None


def check_shapes(w_h: Array, *arrays: Array) -> None:
  """Raises what the kernel cannot do with these arrays, naming the fix."""
  dtypes = {str(a.dtype) for a in (w_h, *arrays)} - {'float32'}
  reason = why_not(w_h.shape[0], min(dtypes, default='float32'), 'float32',
                   backend=None)
  if reason:
    raise ValueError(f"impl='kernel' cannot run this layer: {reason}; use "
                     "impl='fused' or 'scan'.")


def _call(name: str, march: str, results, *args, **attrs):
  _register(march)
  call = jax.ffi.ffi_call(_target(name, march), results,
                          vmap_method='sequential')
  return _first_order(functools.partial(call, **attrs), *args)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _first_order(call, *args):
  """``call(*args)``; differentiating it, which only a second derivative of
  the layer does, is a clear error rather than XLA's about an FFI call."""
  return call(*args)


def _first_order_fwd(call, *args):
  return call(*args), None


def _no_second_derivative(call, saved, cotangents):
  del call, saved, cotangents
  raise KernelError(
      "impl='kernel' has first derivatives only (its backward pass is a "
      "compiled kernel): for grad of grad or jax.hessian use impl='fused' "
      "(reverse over reverse) or impl='scan' (every transform).")


_first_order.defvjp(_first_order_fwd, _no_second_derivative)


def _forward(x, w_x, b, w_h, c0, h0, lengths, forget_bias, precision, march,
             train):
  steps, batch, _ = x.shape
  hidden, gates = w_h.shape
  shape = lambda *s: jax.ShapeDtypeStruct(s, jnp.float32)
  results = [shape(steps, batch, hidden), shape(batch, hidden)]
  if train:
    results += [shape(steps, batch, gates), shape(steps, batch, hidden),
                shape(steps, batch, hidden)]
  return _call('forward_train' if train else 'forward', march, results, x,
               w_x, b, w_h, c0, h0, lengths,
               forget_bias=np.float32(forget_bias),
               bf16=np.int32(precision == 'bfloat16'))


def lstm_layer(x: Array, w_x: Array, b: Array, w_h: Array, c0: Array,
               h0: Array, forget_bias: float = 1.0,
               precision: str = 'float32', march: str | None = None,
               lengths: Array | None = None
               ) -> tuple[tuple[Array, Array], Array]:
  """An LSTM layer over time-major ``x``: ``fast_lstm.lstm_recurrence`` of
  ``x @ w_x + b`` with the input projection inside the kernel.

  Args:
    x: (T, B, I) float32 inputs.
    w_x, b, w_h: (I, 4H), (4H,), (H, 4H) float32 weights.
    c0, h0: (B, H) float32 initial state.
    forget_bias: added to the forget gate's pre-activation.
    precision: the matmuls' (``PRECISIONS``): ``'float32'``, or
      ``'bfloat16'``: operands rounded to bfloat16 and multiplied on Intel
      AMX or with AVX512_BF16 with float32 accumulation; state, gates and
      the elementwise arithmetic stay float32 either way.
    march: the build (default ``default_march()``, read when traced).
    lengths: (B,) int: row b's steps from ``lengths[b]`` on are padding, its
      state kept from its last valid step and its outputs zero; None: every
      step is valid.

  Returns:
    ``((c_T, h_T), hs)`` with hs of shape (T, B, H).
  """
  steps, batch = x.shape[:2]
  padded = lengths is not None
  if lengths is None:
    lengths = jnp.full((batch,), steps, jnp.int32)
  lengths = jnp.clip(jnp.asarray(lengths, jnp.int32), 0, steps)
  return _layer(x, w_x, b, w_h, c0, h0, lengths, forget_bias, precision,
                march or default_march(), padded)


def _last_h(hs, h0, lengths, padded):
  """Each row's h after its last valid step (h0 for an empty row)."""
  if not padded:
    return hs[-1]
  last = jnp.take_along_axis(
      hs, jnp.maximum(lengths - 1, 0)[None, :, None], axis=0)[0]
  return jnp.where((lengths > 0)[:, None], last, h0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(7, 8, 9, 10))
def _layer(x, w_x, b, w_h, c0, h0, lengths, forget_bias, precision, march,
           padded):
  check_shapes(w_h, x, w_x, b)
  check_precision(precision, march)
  hs, c = _forward(x, w_x, b, w_h, c0, h0, lengths, forget_bias, precision,
                   march, train=False)
  return (c, _last_h(hs, h0, lengths, padded)), hs


def _fwd(x, w_x, b, w_h, c0, h0, lengths, forget_bias, precision, march,
         padded):
  check_shapes(w_h, x, w_x, b)
  check_precision(precision, march)
  hs, c, ts, c_prev, tanh_cs = _forward(x, w_x, b, w_h, c0, h0, lengths,
                                        forget_bias, precision, march,
                                        train=True)
  return (((c, _last_h(hs, h0, lengths, padded)), hs),
          (x, w_x, w_h, h0, lengths, hs, ts, c_prev, tanh_cs))


def _bwd(forget_bias, precision, march, padded, saved, cotangents):
  del forget_bias, padded
  x, w_x, w_h, h0, lengths, hs, ts, c_prev, tanh_cs = saved
  (dc_last, dh_last), dhs = cotangents
  shape = lambda a: jax.ShapeDtypeStruct(a.shape, jnp.float32)
  dgates, dw_x, db, dw_h, dc0, dh0 = _call(
      'backward', march, [shape(ts), shape(w_x), jax.ShapeDtypeStruct(
          (w_h.shape[1],), jnp.float32), shape(w_h), shape(h0), shape(h0)],
      dhs, dc_last, dh_last, ts, c_prev, tanh_cs, x, hs, h0, w_x, w_h,
      lengths, bf16=np.int32(precision == 'bfloat16'))
  # The input gradient as an XLA matmul, which XLA drops where nothing uses
  # it (the first layer, whose input is data).
  dx = jnp.einsum('tbg,ig->tbi', dgates, w_x)
  return dx, dw_x, db, dw_h, dc0, dh0, None


_layer.defvjp(_fwd, _bwd)




def main() -> None:
  """Builds now rather than on first use (``make setup`` calls this)."""
  try:
    info = build_info()
    print(f"seqclf: CPU LSTM kernel for -march={info['march']} at "
          f"{info['library']} ({info['lanes']}-float vectors, "
          f"{info['block'][0]}x{info['block'][1]} register block, bfloat16 "
          f"matmuls: {info['bfloat16'] or 'none'})")
  except KernelError as e:  # Optional: impl='auto' then uses 'scan'.
    print(f'seqclf: note: {e}')
