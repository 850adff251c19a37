"""The two Pallas kernels of ``impl='gpu'``: an LSTM's whole time loop each.

One program runs a tile of ``block_rows`` batch rows (rows never interact)
through all T steps inside one ``lax.fori_loop``: the forward kernel from
step 0 up, the backward kernel from T-1 down. Per step the only matmul is
the recurrent one, per gate a (rows, H) @ (H, H) product; the input half of
the gates (``x @ W_x + b``) arrives already projected, as one large GEMM
done by XLA before the loop (``gpu_lstm``), and the recurrent weight
gradient is one large GEMM after the backward loop. The recurrent weights
are either loaded once before the loop and held by the kernel across all
steps (``resident``) or loaded per step and gate (then from L1/L2).

The arithmetic is ``fast_lstm``'s, operation for operation: one tanh per
gate (sigmoid(x) = tanh(x/2)/2 + 1/2), gate order i, j, f, o, the forget
bias added inside the f gate's tanh, float32 cell state and nonlinearities,
padding (a step at or past a row's length) keeping the state with zero
outputs, and in the backward no gate gradient there while (dc, dh) pass
through. Written for Pallas' Triton backend (``docs/gpu_kernel.md`` says
why): every array a power of two in size, row tiles of at least 16, and
masked loads and stores for the last tile of a batch that ``block_rows``
does not divide. ``interpret=True`` runs the same kernels on any backend
(``tests/kernels/test_gpu_lstm.py`` does, on the CPU).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

Array = jax.Array

# matmul_precision -> how the recurrent matmul's operands are multiplied
# (float32 accumulation always). On Pallas Triton, HIGHEST is IEEE float32
# FMAs, HIGH TF32 tensor cores; bfloat16 operands are cast before the dot.
LAX_PRECISION = {'float32': lax.Precision.HIGHEST,
                 'tensorfloat32': lax.Precision.HIGH,
                 'bfloat16': lax.Precision.DEFAULT}
GATES = 4  # i, j, f, o


@dataclasses.dataclass(frozen=True)
class Tiling:
  """How the kernels run: static, part of the compiled kernel.

  ``block_rows`` batch rows per program (a power of two, >= 16: Triton's
  smallest dot); ``resident``: the recurrent weights are loaded once before
  the time loop rather than per step; ``num_warps``/``num_stages``: Triton's
  launch parameters (ignored when interpreted).
  """

  block_rows: int = 16
  resident: bool = True
  num_warps: int = 8
  num_stages: int = 1


@dataclasses.dataclass(frozen=True)
class Spec:
  """One layer's static shape and arithmetic (hashable: a custom_vjp's
  nondiff argument)."""

  steps: int
  batch: int
  hidden: int
  forget_bias: float
  precision: str  # a key of LAX_PRECISION
  padded: bool  # lengths given: steps past a row's length are padding
  tiling: Tiling
  interpret: bool = False


def matmul_dtype(precision: str, dtype=jnp.float32):
  """The dtype the recurrent matmul's operands are cast to."""
  return jnp.bfloat16 if precision == 'bfloat16' else dtype


def _dot(a: Array, b: Array, precision: str) -> Array:
  """``a @ b`` with ``a`` rounded to the operand dtype (``b`` already is),
  accumulated in float32."""
  return lax.dot_general(a.astype(b.dtype), b, (((1,), (0,)), ((), ())),
                         precision=LAX_PRECISION[precision],
                         preferred_element_type=jnp.float32)


class _Rows:
  """Loads and stores of one program's rows; masked where the last tile
  runs past the batch (Triton would otherwise touch memory past it)."""

  def __init__(self, spec: Spec):
    rows = spec.tiling.block_rows
    self.mask = None
    if spec.batch % rows:
      index = pl.program_id(0) * rows + lax.broadcasted_iota(
          jnp.int32, (rows, 1), 0)
      self.mask = index < spec.batch

  def _mask(self, shape):
    if len(shape) == 1:
      return self.mask[:, 0]
    return jnp.broadcast_to(self.mask, shape)

  def load(self, ref) -> Array:
    if self.mask is None:
      return ref[...]
    return pltriton.load(ref, mask=self._mask(ref.shape), other=0)

  def store(self, ref, value: Array) -> None:
    if self.mask is None:
      ref[...] = value.astype(ref.dtype)
    else:
      pltriton.store(ref, value.astype(ref.dtype),
                     mask=self._mask(ref.shape))


def _gate(g: int, hidden: int):
  return pl.ds(g * hidden, hidden)


def _scales(forget_bias: float):
  """Per gate (i, j, f, o): pre-activation scale and shift inside the tanh,
  and the activation's offset: act = scale·tanh(scale·x + shift) + offset;
  d act / dx = scale²·(1 - t²) (0.25 or 1, ``fast_lstm``'s k)."""
  return ((0.5, 0.0, 0.5), (1.0, 0.0, 0.0), (0.5, 0.5 * forget_bias, 0.5),
          (0.5, 0.0, 0.5))


def _weights(w_ref, spec: Spec, *, by_rows: bool) -> Callable[[int], Array]:
  """Gate g's (H, H) block of the recurrent weights (columns of W_h, or
  rows of W_hᵀ), loaded once now (``resident``) or at each use."""
  h = spec.hidden
  block = ((lambda g: w_ref[_gate(g, h), :]) if by_rows
           else (lambda g: w_ref[:, _gate(g, h)]))
  if not spec.tiling.resident:
    return block
  held = [block(g) for g in range(GATES)]
  return lambda g: held[g]


def _forward_kernel(p_ref, w_ref, c0_ref, h0_ref, len_ref, hs_ref, c_ref,
                    h_ref, *saved_refs, spec: Spec):
  """One row tile's forward pass; ``saved_refs`` (training): each step's
  gate tanh values (T, rows, 4H), cell state before it and tanh of the cell
  state after it (T, rows, H)."""
  rows, h = _Rows(spec), spec.hidden
  weight = _weights(w_ref, spec, by_rows=False)
  lengths = rows.load(len_ref)[:, None] if spec.padded else None
  scales = _scales(spec.forget_bias)

  def projected(t):
    return [rows.load(p_ref.at[t, :, _gate(g, h)]) for g in range(GATES)]

  def step(t, carry):
    c, hid, p = carry
    # The next step's input half does not depend on this step: load it now,
    # so its latency hides behind this step's matmul.
    p_next = projected(jnp.minimum(t + 1, spec.steps - 1))
    ts, act = [], []
    for g, (scale, shift, offset) in enumerate(scales):
      gates = p[g] + _dot(hid, weight(g), spec.precision)
      ts.append(jnp.tanh(gates * scale + shift))
      act.append(ts[-1] * scale + offset)
    i, j, f, o = act
    c_new = f * c + i * j
    tanh_c = jnp.tanh(c_new)
    h_new = o * tanh_c
    y = h_new
    if lengths is not None:
      valid = t < lengths
      c_new = jnp.where(valid, c_new, c)
      h_new = jnp.where(valid, h_new, hid)
      y = jnp.where(valid, y, 0.0)
    rows.store(hs_ref.at[t], y)
    if saved_refs:
      ts_ref, c_prev_ref, tanh_c_ref = saved_refs
      for g in range(GATES):
        rows.store(ts_ref.at[t, :, _gate(g, h)], ts[g])
      rows.store(c_prev_ref.at[t], c)
      rows.store(tanh_c_ref.at[t], tanh_c)
    return c_new, h_new, p_next

  c, hid, _ = lax.fori_loop(
      0, spec.steps, step,
      (rows.load(c0_ref), rows.load(h0_ref), projected(jnp.int32(0))))
  rows.store(c_ref, c)
  rows.store(h_ref, hid)


def _backward_kernel(dhs_ref, dc_ref, dh_ref, ts_ref, c_prev_ref, tanh_c_ref,
                     w_t_ref, len_ref, dg_ref, dc0_ref, dh0_ref, *,
                     spec: Spec):
  """One row tile's backward pass, T-1 down to 0: each step's gate
  gradients (the projected input's), and the state's gradient at step 0."""
  rows, h = _Rows(spec), spec.hidden
  weight_t = _weights(w_t_ref, spec, by_rows=True)
  lengths = rows.load(len_ref)[:, None] if spec.padded else None
  scales = _scales(spec.forget_bias)

  def step(k, carry):
    t = spec.steps - 1 - k
    dc_in, dh_in = carry
    ts = [rows.load(ts_ref.at[t, :, _gate(g, h)]) for g in range(GATES)]
    c_before = rows.load(c_prev_ref.at[t])
    tanh_c = rows.load(tanh_c_ref.at[t])
    i, j, f, o = (tg * scale + offset
                  for tg, (scale, _, offset) in zip(ts, scales))
    dh = dh_in + rows.load(dhs_ref.at[t])
    dc = dc_in + dh * o * (1.0 - tanh_c * tanh_c)
    upstream = (dc * j, dc * i, dc * c_before, dh * tanh_c)
    valid = None if lengths is None else t < lengths
    dh_prev = None
    for g, (up, tg, (scale, _, _)) in enumerate(zip(upstream, ts, scales)):
      dgate = up * (scale * scale * (1.0 - tg * tg))
      if valid is not None:  # Padding: no gate gradient.
        dgate = jnp.where(valid, dgate, 0.0)
      rows.store(dg_ref.at[t, :, _gate(g, h)], dgate)
      part = _dot(dgate, weight_t(g), spec.precision)
      dh_prev = part if dh_prev is None else dh_prev + part
    dc_prev = dc * f
    if valid is not None:  # Padding: the state's gradient passes through.
      dc_prev = jnp.where(valid, dc_prev, dc_in)
      dh_prev = jnp.where(valid, dh_prev, dh_in)
    return dc_prev, dh_prev

  dc, dh = lax.fori_loop(0, spec.steps, step,
                         (rows.load(dc_ref), rows.load(dh_ref)))
  rows.store(dc0_ref, dc)
  rows.store(dh0_ref, dh)


def _call(kernel, spec: Spec, in_blocks, out_blocks, out_shape):
  """``pallas_call`` of ``kernel`` over a grid of row tiles; each block
  spec is a shape with ``None`` on the batch axis (tiled there), or without
  one (the whole array in every program)."""
  rows = spec.tiling.block_rows

  def block(shape):
    axis = shape.index(None) if None in shape else -1
    full = tuple(rows if d is None else d for d in shape)
    return pl.BlockSpec(
        full, lambda b, axis=axis, n=len(shape): tuple(
            b if a == axis else 0 for a in range(n)))

  tiling = spec.tiling
  params = pltriton.CompilerParams(num_warps=tiling.num_warps,
                                   num_stages=tiling.num_stages)
  return pl.pallas_call(
      functools.partial(kernel, spec=spec),
      grid=(pl.cdiv(spec.batch, rows),),
      in_specs=[block(s) for s in in_blocks],
      out_specs=[block(s) for s in out_blocks],
      out_shape=out_shape,
      compiler_params=params,
      interpret=spec.interpret,
      name='seqclf_lstm_' + kernel.__name__.strip('_'))


def forward(spec: Spec, projected: Array, w_h: Array, c0: Array, h0: Array,
            lengths: Array, train: bool) -> tuple[Array, ...]:
  """``(hs, c_T, h_T)``, and with ``train`` also ``(ts, c_prev, tanh_c)``.

  Args: projected (T, B, 4H) float32; w_h (H, 4H) in the operand dtype;
  c0, h0 (B, H) float32; lengths (B,) int32 (read only if ``spec.padded``).
  """
  t, b, h = spec.steps, spec.batch, spec.hidden
  f32 = lambda *s: jax.ShapeDtypeStruct(s, jnp.float32)
  out_blocks = [(t, None, h), (None, h), (None, h)]
  out_shape = [f32(t, b, h), f32(b, h), f32(b, h)]
  if train:
    out_blocks += [(t, None, GATES * h), (t, None, h), (t, None, h)]
    out_shape += [f32(t, b, GATES * h), f32(t, b, h), f32(t, b, h)]
  w_block = (h, GATES * h)
  return tuple(_call(
      _forward_kernel, spec,
      [(t, None, GATES * h), w_block, (None, h), (None, h), (None,)],
      out_blocks, out_shape)(projected, w_h, c0, h0, lengths))


def backward(spec: Spec, dhs: Array, dc: Array, dh: Array, ts: Array,
             c_prev: Array, tanh_c: Array, w_t: Array, lengths: Array
             ) -> tuple[Array, Array, Array]:
  """``(dgates, dc0, dh0)``: the gradient of the projected input (T, B, 4H)
  and of the initial state, given the outputs' and final state's gradients
  and the forward's saved values; ``w_t`` is W_hᵀ (4H, H) in the operand
  dtype."""
  t, b, h = spec.steps, spec.batch, spec.hidden
  f32 = lambda *s: jax.ShapeDtypeStruct(s, jnp.float32)
  state = (None, h)
  return tuple(_call(
      _backward_kernel, spec,
      [(t, None, h), state, state, (t, None, GATES * h), (t, None, h),
       (t, None, h), (GATES * h, h), (None,)],
      [(t, None, GATES * h), state, state],
      [f32(t, b, GATES * h), f32(b, h), f32(b, h)])(
          dhs, dc, dh, ts, c_prev, tanh_c, w_t, lengths))

