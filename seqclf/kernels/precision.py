"""Matmul precision by name: what every path's matmuls run at.

``float32`` is true float32 (``Precision.HIGHEST``): on a GPU, XLA would
otherwise run float32 matmuls as TF32 by default. ``tensorfloat32`` is TF32
(``Precision.HIGH``), which only GPUs that have it run
(``seqclf.kernels.paths`` refuses it elsewhere). ``bfloat16`` rounds both
operands of every matmul, forward and backward, to bfloat16 and accumulates
and returns float32, on any backend (the CPU kernel: on AMX or AVX512_BF16). The
names are ``jax.default_matmul_precision``'s. Autodiff keeps a matmul's
precision in the matmuls of its gradient. Cell state, gates and every
elementwise op stay float32 whichever is chosen.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array
PRECISIONS = ('float32', 'tensorfloat32', 'bfloat16')
_LAX = {'float32': jax.lax.Precision.HIGHEST,
        'tensorfloat32': jax.lax.Precision.HIGH}


def check(name: str) -> None:
  """A ValueError unless ``name`` is one of ``PRECISIONS``."""
  if name not in PRECISIONS:
    raise ValueError(f'matmul_precision must be one of {PRECISIONS}, got '
                     f'{name!r}.')


def _bf16(x: Array) -> Array:
  return x.astype(jnp.bfloat16)


def _f32_dot(lhs: Array, rhs: Array, dims: Any) -> Array:
  return jax.lax.dot_general(lhs, rhs, dims,
                             preferred_element_type=jnp.float32)


@jax.custom_vjp
def _bf16_matmul(x: Array, w: Array) -> Array:
  """``x @ w`` (x: (..., K), w: (K, N)) with bfloat16 operands and float32
  accumulation and result, in its gradient's two matmuls too."""
  return _f32_dot(_bf16(x), _bf16(w), (((x.ndim - 1,), (0,)), ((), ())))


def _bf16_matmul_fwd(x, w):
  # Zero-size arrays carry the operands' dtypes (residuals must be arrays).
  return _bf16_matmul(x, w), (_bf16(x), _bf16(w), jnp.zeros((0,), x.dtype),
                              jnp.zeros((0,), w.dtype))


def _bf16_matmul_bwd(saved, ct):
  x, w, x_dtype, w_dtype = saved
  x_dtype, w_dtype = x_dtype.dtype, w_dtype.dtype
  ct = _bf16(ct)
  dx = _f32_dot(ct, w, (((ct.ndim - 1,), (1,)), ((), ())))
  rows = x.reshape(-1, x.shape[-1])
  dw = _f32_dot(rows, ct.reshape(-1, ct.shape[-1]), (((0,), (0,)), ((), ())))
  return dx.astype(x_dtype), dw.astype(w_dtype)


_bf16_matmul.defvjp(_bf16_matmul_fwd, _bf16_matmul_bwd)


def dot_general(name: str) -> Callable[..., Array]:
  """``lax.dot_general`` at precision ``name``, for flax's ``dot_general``.

  The returned function ignores a ``precision`` it is passed (flax's layers
  pass their own, None by default) and uses ``name``'s. For ``bfloat16`` it
  takes the matmuls layers do (the lhs's last axis with a 2-D rhs's first)
  and returns float32.
  """
  check(name)

  def dot(lhs: Array, rhs: Array, dimension_numbers: Any,
          precision: Any = None, preferred_element_type: Any = None) -> Array:
    del precision
    if name != 'bfloat16':
      return jax.lax.dot_general(
          lhs, rhs, dimension_numbers, precision=_LAX[name],
          preferred_element_type=preferred_element_type)
    if (rhs.ndim != 2 or
        dimension_numbers != (((lhs.ndim - 1,), (0,)), ((), ()))):
      raise ValueError('bfloat16 matmuls take the last axis of the left '
                       'operand with a 2-D right operand, got dimension '
                       f'numbers {dimension_numbers}.')
    return _bf16_matmul(lhs, rhs)

  return dot


def matmul(a: Array, b: Array, name: str) -> Array:
  """``a @ b`` (a's last axis with 2-D b's first) at precision ``name``: the
  operands' dtype, or float32 for ``bfloat16``."""
  return dot_general(name)(a, b, (((a.ndim - 1,), (0,)), ((), ())))


def einsum(subscripts: str, a: Array, b: Array, name: str,
           preferred_element_type: Any = None) -> Array:
  """``jnp.einsum(subscripts, a, b)`` at precision ``name`` (``bfloat16``:
  the operands rounded, a float32 result); not differentiated."""
  check(name)
  if name == 'bfloat16':
    return jnp.einsum(subscripts, _bf16(a), _bf16(b),
                      preferred_element_type=jnp.float32)
  return jnp.einsum(subscripts, a, b, precision=_LAX[name],
                    preferred_element_type=preferred_element_type)
