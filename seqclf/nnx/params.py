"""One parameter layout for both APIs: NNX modules that hold a linen module's
parameters and run its ``apply``.

A ``LinenParams`` module initializes a seqclf linen module eagerly from
``rngs`` (one key from ``rngs.params()``, given to the linen ``init``: the
same key gives the same values as linen) and keeps each parameter as an
``nnx.Param`` at the linen tree's path (``cell/input/kernel``, ``lstm_0/…``,
``head/bias``). Calling it runs the linen module's pure ``apply`` on those
values, so NNX and linen compute the same program on every path and agree
bitwise: there is one implementation of the numerics. Between the APIs,
``to_linen_params`` and ``from_linen_params`` are therefore only a change of
container, exact both ways.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx
from flax import traverse_util

from seqclf.errors import UsageError
from seqclf.kernels import paths


def resolve_impl(impl: str, cell: str, hidden_size: int, dtype: Any,
                 param_dtype: Any, matmul_precision: str) -> str:
  """``impl``, with ``'auto'`` resolved untimed, checked on this backend.

  ``'auto'`` is the first path of ``paths.PREFERENCE`` that can run the
  layer here (the CPU kernel only if already built, ``make kernel``); for a
  timed choice resolve it first with ``seqclf.training.autotune``. A forced
  path that cannot run is one ``ConfigError`` line, at construction rather
  than at the first call.

  Args:
    impl: ``'auto'`` or one of ``paths.IMPLS``.
    cell: the config's cell name (``'lstm'``, ``'gru'``, ``'elman'``).
    hidden_size, dtype, param_dtype, matmul_precision: the layer's fields.

  Returns:
    The path to run, one of ``paths.IMPLS``.
  """
  layer = paths.Layer(cell=cell, hidden_size=hidden_size,
                      dtype=jnp.dtype(dtype or param_dtype).name,
                      matmul_precision=matmul_precision)
  backend = jax.default_backend()
  if impl == 'auto':
    found = paths.eligible(layer, backend)
    impl = found[0] if found else 'kernel'  # Built on first use, if it can.
  paths.check(impl, layer, backend)
  return impl


M = TypeVar('M', bound=nnx.Module)


def _is_variable(x: Any) -> bool:
  return isinstance(x, nnx.Variable)


class LinenParams(nnx.Module):
  """An NNX module whose parameters are a linen module's, in its layout.

  Subclasses call ``init_params`` in their constructor and ``apply`` in
  ``__call__``. ``linen_module`` is the linen module that runs (static):
  ``model.linen_module.apply({'params': to_linen_params(model)}, …)``
  equals calling the model.
  """

  linen_module: nn.Module

  def init_params(self, module: nn.Module, cell: str, in_features: int,
                  rngs: nnx.Rngs) -> None:
    """Draws ``module``'s parameters (one key from ``rngs.params()``) for
    inputs of ``in_features`` and keeps them as ``nnx.Param`` at their
    linen paths; ``apply`` then runs ``module`` with its ``impl`` resolved
    (``resolve_impl``; ``cell``: its config name). Every path has the same
    parameters, so they are drawn on ``scan``."""
    module = module.clone(impl=resolve_impl(
        module.impl, cell, module.hidden_size, module.dtype,
        module.param_dtype, module.matmul_precision))
    init = module.clone(impl='scan', matmul_precision='float32')
    example = jnp.zeros((1, 1, in_features), jnp.float32)
    # Jitted: eager, nn.scan's init dispatches op by op.
    params = jax.jit(init.init)(rngs.params(), example)['params']
    self.linen_module = module
    self._linen_names = tuple(params)
    for name, tree in params.items():
      if hasattr(self, name):
        raise AttributeError(f'{type(self).__name__} already has an '
                             f'attribute {name!r}, a parameter of its layout.')
      setattr(self, name, nnx.data(jax.tree.map(nnx.Param, tree)))

  def params_dict(self) -> dict[str, Any]:
    """The parameters' values as the linen params dict (no copy)."""
    return {name: jax.tree.map(lambda v: v[...], getattr(self, name),
                               is_leaf=_is_variable)
            for name in self._linen_names}

  def apply(self, *args: Any, **kwargs: Any) -> Any:
    """``linen_module.apply({'params': …}, *args, **kwargs)`` on this
    module's parameters."""
    return self.linen_module.apply({'params': self.params_dict()}, *args,
                                   **kwargs)


def to_linen_params(model: nnx.Module) -> dict[str, Any]:
  """The linen params dict of ``model``'s ``nnx.Param`` values.

  For seqclf's NNX modules it is exactly their linen twin's (``LSTM``:
  ``{'cell': {'input': {'kernel', 'bias'}, 'hidden': {'kernel'}}}``;
  ``LSTMClassifier``: ``{'lstm_0': …, 'head': …}``), so
  ``seqclf.nn.LSTM(…).apply({'params': to_linen_params(layer)}, x)`` gives
  what ``layer(x, return_carry=True)`` gives. Any NNX module works: the dict
  follows its attribute paths.

  Args:
    model: an NNX module.

  Returns:
    A nested dict of arrays, ``nnx.to_pure_dict(nnx.state(model, nnx.Param))``.
  """
  return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def from_linen_params(model: M | Callable[[], M], params: Any) -> M:
  """``model`` with its parameters set from a linen params dict.

  Args:
    model: an NNX module, updated in place; or a function building one,
      built abstractly (``nnx.eval_shape``: no initializer runs) when all
      its state is parameters, else (a dropout stream) concretely.
    params: the linen params (``variables['params']``, a checkpoint's
      ``params``), with exactly ``to_linen_params(model)``'s paths and
      shapes.

  Returns:
    The model, holding ``params``.

  Raises:
    UsageError: a path or shape differs (every difference named).
  """
  if not isinstance(model, nnx.Module):
    factory, model = model, nnx.eval_shape(model)
    if jax.tree.leaves(nnx.state(model, nnx.Not(nnx.Param))):
      model = factory()  # Its other state (rng keys) needs values.
  state = nnx.state(model, nnx.Param)
  want = {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(
      nnx.to_pure_dict(state), sep='/').items()}
  got = {k: tuple(jnp.shape(v)) for k, v in traverse_util.flatten_dict(
      dict(params), sep='/').items()}
  problems = [f'{k}: params {got.get(k, "absent")} vs model '
              f'{want.get(k, "absent")}' for k in sorted(set(want) | set(got))
              if want.get(k) != got.get(k)]
  if problems:
    raise UsageError(
        f'These params do not fit the {type(model).__name__}: '
        + '; '.join(problems[:6]) + ('; …' if len(problems) > 6 else '')
        + ': build the model with the options the params were made with.',
        arg='params')
  nnx.replace_by_pure_dict(state, jax.tree.map(jnp.asarray, params))
  nnx.update(model, state)
  return model
