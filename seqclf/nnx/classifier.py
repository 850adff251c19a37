"""The classifier as a native NNX module: ``seqclf.nn.LSTMClassifier``'s
options, parameters and numbers.

``LSTMClassifier(in_features, num_classes, *, rngs, **options)`` takes the
linen classifier's fields as its options (declared once, there: a new model
field is an NNX option too) and holds its parameters in the linen layout
(``lstm_0/cell/input/kernel``, ``lstm_0_reverse/…``, ``head/kernel``,
``head/bias``), so a checkpoint's params load into it unchanged
(``seqclf.inference.load_nnx_model``) and its params save as one
(``seqclf.inference.save_nnx_model``).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from seqclf.errors import UsageError
from seqclf.nn import classifier
from seqclf.nnx.params import LinenParams
from seqclf.nnx.recurrent import check_fields

Array = jax.Array


class LSTMClassifier(LinenParams):
  """Stacked recurrent layers and a dense head on each row's last valid step.

  ``seqclf.nn.LSTMClassifier`` as an NNX module. Its keyword options are the
  linen classifier's fields (``hidden_size=128``, ``num_layers=1``,
  ``cell='lstm'``, ``bidirectional``, ``dropout_rate``, ``impl`` (``'auto'``
  resolved here), ``dtype``, ``input_mean``, ``input_std``, ``channel_mean``,
  ``channel_std``, ``missing``, …), with their
  defaults. ``deterministic`` (default False, as ``nnx.Dropout``'s): no
  dropout; ``model.eval()`` sets it, ``model.train()`` clears it. With
  ``dropout_rate`` or ``input_noise`` > 0 the masks and noise are drawn from
  the ``dropout`` stream of the construction's ``rngs`` (or of the call's).

  >>> import jax.numpy as jnp
  >>> from flax import nnx
  >>> from seqclf import nnx as seqnnx
  >>> model = seqnnx.LSTMClassifier(4, 3, hidden_size=8, rngs=nnx.Rngs(0))
  >>> x = jnp.ones((2, 5, 4))                       # (batch, time, features)
  >>> model(x, seq_lengths=jnp.array([5, 2])).shape
  (2, 3)
  >>> sorted(seqnnx.to_linen_params(model))          # the linen layout
  ['head', 'lstm_0']
  """

  def __init__(self, in_features: int, num_classes: int = 10, *,
               rngs: nnx.Rngs, deterministic: bool = False, **options: Any):
    check_fields('LSTMClassifier', classifier.LSTMClassifier, options,
                 frozenset({'num_classes'}), ('deterministic',))
    module = classifier.LSTMClassifier(num_classes=num_classes, **options)
    if module.cell not in classifier.CELLS:
      raise UsageError(f'cell must be one of {classifier.CELLS}, got '
                       f'{module.cell!r}.', arg='cell')
    self.init_params(module, module.cell, in_features, rngs)
    self.in_features = in_features
    self.num_classes = num_classes
    self.deterministic = deterministic
    self.rngs = (rngs.dropout.fork() if module.stochastic
                 else nnx.data(None))

  @property
  def impl(self) -> str:
    """The path the recurrent layers run."""
    return self.linen_module.impl

  def __call__(self, inputs: Array, *, seq_lengths: Array | None = None,
               rngs: nnx.Rngs | None = None) -> Array:
    """(batch, num_classes) float32 logits of (batch, time, features) inputs.

    Args:
      inputs: (batch, time, features) floats, standardized inside as
        ``(x - input_mean) / input_std``, then per feature with
        ``channel_mean``/``channel_std``; NaN filled if ``missing='impute'``.
      seq_lengths: (batch,) ints, each row's valid steps (the head reads
        each row's last valid step, or their mean: ``pooling``); None: every
        step is valid.
      rngs: the dropout masks' stream for this call (default: the
        construction's), when not ``deterministic`` and ``dropout_rate`` or
        ``input_noise`` > 0.

    Returns:
      The logits, bitwise ``seqclf.nn.LSTMClassifier``'s on these params.
    """
    if self.deterministic or not self.linen_module.stochastic:
      return self.apply(inputs, False, seq_lengths)
    stream = rngs.dropout if rngs is not None else self.rngs
    return self.apply(inputs, True, seq_lengths,
                      rngs={'dropout': stream()})


# Config keys that are speed choices of the machine that runs the model,
# not part of the model (a saved config keeps its own).
_NOT_MODEL = frozenset({'impl'})


def from_config(config: Any, in_features: int, *, rngs: nnx.Rngs,
                impl: str | None = None) -> LSTMClassifier:
  """The NNX classifier a ``seqclf.config`` config describes.

  Args:
    config: a config (or mapping) with ``classifier.config_defaults``' keys.
    in_features: the inputs' width (28 for row-wise MNIST).
    rngs: where the parameters are drawn from.
    impl: the path (default ``config.impl``; ``'auto'`` is resolved
      untimed, ``params.resolve_impl``).

  Returns:
    The model, in training mode (``deterministic=False``).
  """
  linen = classifier.from_config(config, impl or config['impl'])
  options = {name: getattr(linen, name) for name in classifier.config_defaults()
             if name != 'num_classes'}
  return LSTMClassifier(in_features, linen.num_classes, rngs=rngs, **options)


def config_fields(model: LSTMClassifier) -> dict[str, Any]:
  """The config keys that describe ``model``, for its saved config.

  Args:
    model: an NNX classifier.

  Returns:
    ``classifier.config_defaults()``' keys but ``impl`` (a speed choice of
    the machine that runs it), valued as a config writes them (``dtype`` by
    name).
  """
  linen = model.linen_module
  fields = {name: getattr(linen, name) for name in classifier.config_defaults()
            if name not in _NOT_MODEL}
  fields['dtype'] = ('float32' if linen.dtype is None
                     else jnp.dtype(linen.dtype).name)
  return fields
