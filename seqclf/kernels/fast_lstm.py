"""The LSTM recurrence as one function with a hand-written backward pass.

Two things make autodiff of a scanned ``LSTMCell`` slow on XLA:CPU:

* it accumulates the recurrent weight gradient ``Σ_t h_{t-1}ᵀ dgates_t``
  inside the reverse loop, T small matmuls plus T read-modify-writes of an
  (H, 4H) buffer; here the reverse loop carries only ``dh, dc`` and the weight
  gradient is one (H, T·B) @ (T·B, 4H) matmul after it;
* slicing the gates before the nonlinearities (``jnp.split``) yields loop
  fusions XLA:CPU runs several times slower than the same arithmetic on the
  whole (B, 4H) tensor; here one ``tanh`` covers all four gates, using
  ``sigmoid(x) = (1 + tanh(x / 2)) / 2``, and its derivative has one form
  ``k·(1 - t²)`` for every gate.

The arithmetic is ``seqclf.nn.cells.LSTMCell.step``'s (gate order i, j, f, o;
matmul in the compute dtype; cell state and nonlinearities in float32), so
the two agree to float rounding; ``tests/kernels/test_fast_lstm.py`` checks values
and gradients against ``jax.grad`` of the ``nn.scan`` version.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from seqclf.kernels import precision

Array = jax.Array


def _gate_constants(hidden: int, forget_bias: float):
  """Per-column scale, shift and derivative factor of the one-tanh gates.

  Sigmoid gates (i, f, o) use tanh(x/2) (f shifted by forget_bias/2); the
  candidate j uses tanh(x). Activation = 0.5·t + 0.5 or t; d act/dx = k(1-t²)
  with k = 0.25 or 1.
  """
  one = np.ones(hidden, np.float32)
  scale = np.concatenate([0.5 * one, one, 0.5 * one, 0.5 * one])
  shift = np.concatenate([0 * one, 0 * one, 0.5 * forget_bias * one, 0 * one])
  k = np.concatenate([0.25 * one, one, 0.25 * one, 0.25 * one])
  return scale, shift, k


def _forward(projected, w_h, c0, h0, valid, forget_bias, unroll, keep,
             matmul_precision):
  """Scans the cell over time-major ``projected``; ``keep`` saves residuals.
  ``valid`` (T, B, 1) bool or None: where False, the state is kept and the
  output is zero."""
  hidden = h0.shape[-1]
  scale, shift, _ = _gate_constants(hidden, forget_bias)
  offset = 1.0 - scale  # 0.5 for sigmoid gates, 0 for j: act = scale·t + offset

  def step(carry, xs):
    p_t, valid_t = xs
    c, h = carry
    hidden_part = precision.matmul(h.astype(w_h.dtype), w_h, matmul_precision)
    gates = (p_t + hidden_part).astype(jnp.float32)
    t = jnp.tanh(gates * scale + shift)
    act = t * scale + offset
    i, j = act[..., :hidden], act[..., hidden:2 * hidden]
    f, o = act[..., 2 * hidden:3 * hidden], act[..., 3 * hidden:]
    c_new = f * c + i * j
    tanh_c = jnp.tanh(c_new)
    h_new = o * tanh_c
    if valid_t is not None:
      c_new, h_new, y = (jnp.where(valid_t, c_new, c),
                         jnp.where(valid_t, h_new, h),
                         jnp.where(valid_t, h_new, 0.0))
    else:
      y = h_new
    out = (y, (t, c, h, tanh_c)) if keep else y
    return (c_new, h_new), out

  return jax.lax.scan(step, (c0, h0), (projected, valid), unroll=unroll)


def lstm_recurrence(projected: Array, w_h: Array, c0: Array, h0: Array,
                    forget_bias: float = 1.0, unroll: int = 1,
                    lengths: Array | None = None,
                    matmul_precision: str = 'float32'
                    ) -> tuple[tuple[Array, Array], Array]:
  """Runs the LSTM over time-major inputs that are already projected.

  Args:
    projected: (T, B, 4H) input half of the gates, ``x_t @ W_x + b``, in the
      compute dtype.
    w_h: (H, 4H) recurrent kernel, already in the compute dtype.
    c0, h0: (B, H) float32 initial state.
    forget_bias: added to the forget gate's pre-activation.
    unroll: time steps per loop iteration (forward and backward scans).
    lengths: (B,) int, or None: row b's steps from ``lengths[b]`` on are
      padding, where its state is kept (its ``(c_T, h_T)`` is the state after
      its last valid step) and its outputs are zero.
    matmul_precision: the recurrent matmuls', forward and backward
      (``precision.PRECISIONS``).

  Returns:
    ``((c_T, h_T), hs)`` with hs of shape (T, B, H), float32.
  """
  valid = None
  if lengths is not None:
    valid = (jnp.arange(projected.shape[0])[:, None]
             < jnp.asarray(lengths)[None, :])[..., None]
  precision.check(matmul_precision)
  return _recurrence(projected, w_h, c0, h0, valid, forget_bias, unroll,
                     matmul_precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7))
def _recurrence(projected, w_h, c0, h0, valid, forget_bias, unroll,
                matmul_precision):
  return _forward(projected, w_h, c0, h0, valid, forget_bias, unroll,
                  False, matmul_precision)


def _fwd(projected, w_h, c0, h0, valid, forget_bias, unroll,
         matmul_precision):
  (c, h), (hs, res) = _forward(projected, w_h, c0, h0, valid, forget_bias,
                               unroll, True, matmul_precision)
  # A zero-size array carries the projection's dtype (residuals must be arrays).
  return ((c, h), hs), (jnp.zeros((0,), projected.dtype), w_h, valid, res)


def _bwd(forget_bias, unroll, matmul_precision, saved, cotangents):
  dtype_carrier, w_h, valid, (ts, c_prev, h_prev, tanh_cs) = saved
  projected_dtype = dtype_carrier.dtype
  (dc_last, dh_last), dhs = cotangents
  hidden = w_h.shape[0]
  scale, _, k = _gate_constants(hidden, forget_bias)
  offset = 1.0 - scale
  w_t = w_h.T

  def step(carry, xs):
    dc, dh = carry
    dh_out, t, c_before, tanh_c, valid_t = xs
    dc_in, dh_in = dc, dh
    act = t * scale + offset
    i, j = act[..., :hidden], act[..., hidden:2 * hidden]
    f, o = act[..., 2 * hidden:3 * hidden], act[..., 3 * hidden:]
    dh = dh + dh_out
    dc = dc + dh * o * (1.0 - tanh_c * tanh_c)
    upstream = jnp.concatenate([dc * j, dc * i, dc * c_before, dh * tanh_c], -1)
    # Rounded to the compute dtype where autodiff's matmul cotangent would be.
    dgates = (upstream * (k * (1.0 - t * t))).astype(projected_dtype)
    if valid_t is not None:  # Padding: no gate gradient, the state's passes.
      dgates = jnp.where(valid_t, dgates, jnp.zeros_like(dgates))
    dh_prev = precision.matmul(dgates.astype(w_t.dtype), w_t,
                               matmul_precision).astype(jnp.float32)
    dc_prev = dc * f
    if valid_t is not None:
      dc_prev = jnp.where(valid_t, dc_prev, dc_in)
      dh_prev = jnp.where(valid_t, dh_prev, dh_in)
    return (dc_prev, dh_prev), dgates

  (dc0, dh0), dgates = jax.lax.scan(
      step, (dc_last, dh_last), (dhs, ts, c_prev, tanh_cs, valid),
      reverse=True, unroll=unroll)
  # One (H, T·B) @ (T·B, 4H) matmul instead of T accumulations in the loop.
  dw_h = precision.einsum('tbh,tbg->hg', h_prev.astype(w_h.dtype),
                          dgates.astype(w_h.dtype), matmul_precision,
                          preferred_element_type=jnp.float32).astype(w_h.dtype)
  return dgates, dw_h, dc0, dh0, None


_recurrence.defvjp(_fwd, _bwd)
