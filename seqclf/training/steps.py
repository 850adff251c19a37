"""The pure training and evaluation steps.

``train_step`` is one update; with ``axis_name`` set it averages gradients
and metrics with ``lax.pmean``, so the same function runs under ``jax.pmap``.
``train_steps`` scans it over a chunk of batches gathered from the
device-resident training set, so the host dispatches once per chunk, not
once per step (``seqclf.training.loop`` runs the chunks). ``evaluate`` sums
one model's (or a stacked sweep's) metrics over a split.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from seqclf import errors
from seqclf.data import ops, order
from seqclf.data.splits import Split
from seqclf.training import metrics as metrics_lib, parallel
from seqclf.training.state import TrainState

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


def train_key(seed: int) -> jax.Array:
  """Base key of a run's training noise (dropout, jitter, flips), not its
  ``key(seed)``."""
  return jax.random.fold_in(jax.random.key(seed), 1)


def uses_noise(config: ml_collections.ConfigDict) -> bool:
  """Whether training draws random numbers (dropout, input noise, flips)."""
  return bool(config.dropout_rate or config.input_noise
              or config.augment_hflip)


def noise_kwargs(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """``train_steps`` keyword arguments for the config's dropout, input noise
  and flips."""
  if not uses_noise(config):
    return {}
  return {'rng': train_key(config.seed), 'hflip': config.augment_hflip}


def _length_kwargs(batch: Batch) -> dict[str, jax.Array]:
  """``seq_lengths`` for the model when the batch has ``lengths``; else
  nothing, so data without lengths traces exactly the program it always did."""
  return {'seq_lengths': batch['lengths']} if 'lengths' in batch else {}


def class_weights(spec: Any, labels: np.ndarray,
                  num_classes: int) -> np.ndarray | None:
  """The per-class loss weights config key ``class_weight`` asks for.

  Args:
    spec: ``'none'``, ``'balanced'`` (n_samples / (n_classes * count), as
      sklearn's ``compute_class_weight``: the mean weight over the training
      examples is then 1) or one positive number per class.
    labels: the training split's labels (what 'balanced' counts).
    num_classes: the model's classes.

  Returns:
    (num_classes,) float32 weights, or None for ``'none'`` (the unweighted
    program, unchanged). A class without training examples under
    'balanced' is a one-line ``DataError``.
  """
  if isinstance(spec, str) and spec == 'none':
    return None
  if isinstance(spec, str):  # 'balanced' (validate admits nothing else)
    counts = np.bincount(np.asarray(labels), minlength=num_classes)
    empty = np.flatnonzero(counts == 0)
    if len(empty):
      raise errors.DataError(
          f"class_weight='balanced' needs training examples of every class; "
          f'class(es) {", ".join(map(str, empty))} have none: give '
          '`class_weight` as a list of one weight per class.',
          arg='config.class_weight')
    return (len(labels) / (num_classes * counts.astype(np.float64))
            ).astype(np.float32)
  return np.asarray(spec, np.float64).astype(np.float32)


def train_step(state: TrainState, batch: Batch, *,
               axis_name: str | None = None,
               rng: jax.Array | None = None,
               hflip: bool = False,
               class_weight: jax.Array | None = None
               ) -> tuple[TrainState, Metrics]:
  """One optimizer step on mean softmax cross-entropy; pmap-ready.

  Args:
    state: the model's state.
    batch: ``image`` (B, T, F) floats, ``label`` (B,) ints and optionally
      ``lengths`` (B,), passed as the model's ``seq_lengths``.
    axis_name: average gradients and metrics over this mapped axis
      (``lax.pmean``: ``jax.pmap``).
    rng: run the model in training mode (dropout) with a key folded from it,
      the step and the replica; needed for dropout or ``hflip``.
    hflip: mirror a random half of the batch's images left-right first.
    class_weight: (C,) per-class weights: the objective is then the batch
      mean of ``class_weight[label] * cross_entropy`` (Keras' reduction, not
      ``sum(w l) / sum(w)``: the mean of per-replica means is the global
      mean, so every parallelism mode computes the same update).

  Returns:
    The new state and the step's ``loss`` (the unweighted mean cross-entropy)
    and ``accuracy``; with ``class_weight`` also ``weighted_loss``, the
    objective minimized.
  """
  kwargs, images = _length_kwargs(batch), batch['image']
  if rng is not None:
    rng = jax.random.fold_in(rng, state.step)
    if axis_name is not None:
      rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
    if hflip:
      images = ops.random_hflip(images, jax.random.fold_in(rng, 1))
    kwargs = {**kwargs, 'train': True, 'rngs': {'dropout': rng}}
  elif hflip:
    raise ValueError('hflip=True needs an `rng` to draw the flips from.')

  def loss_fn(params):
    logits = state.apply_fn({'params': params}, images, **kwargs)
    losses = optax.softmax_cross_entropy_with_integer_labels(
        logits, batch['label'])
    if class_weight is None:
      return losses.mean(), (logits, None)
    weights = jnp.asarray(class_weight)[batch['label']]
    return (losses * weights).mean(), (logits, losses.mean())

  (loss, (logits, plain)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params)
  metrics = {'loss': loss,
             'accuracy': jnp.mean(jnp.argmax(logits, -1) == batch['label'])}
  if class_weight is not None:
    metrics = {**metrics, 'loss': plain, 'weighted_loss': loss}
  if axis_name is not None:
    grads = jax.lax.pmean(grads, axis_name)
    metrics = jax.lax.pmean(metrics, axis_name)
  return state.apply_gradients(grads=grads), metrics


def train_steps(state: TrainState, images: jax.Array, labels: jax.Array,
                indices: jax.Array, *,
                axis_name: str | None = None,
                rng: jax.Array | None = None,
                hflip: bool = False,
                lengths: jax.Array | None = None,
                class_weight: jax.Array | None = None
                ) -> tuple[TrainState, Metrics]:
  """``len(indices)`` steps in one ``lax.scan``; batch k is ``images[indices[k]]``.

  Args:
    state: the model's state.
    images: (N, T, F) the device-resident training sequences.
    labels: (N,) their labels.
    indices: (steps, B) example indices of each step's batch.
    axis_name, rng, hflip, class_weight: as ``train_step``.
    lengths: (N,) the training set's valid steps per example, gathered with
      the images (``train_steps_with_lengths`` takes them positionally, for
      the chunk runners).

  Returns:
    The new state and per-step metrics stacked along axis 0.
  """

  def body(state, idx):
    batch = {'image': ops.to_float(images[idx]),
             'label': labels[idx]}
    if lengths is not None:
      batch['lengths'] = lengths[idx]
    return train_step(state, batch, axis_name=axis_name,
                      rng=rng, hflip=hflip, class_weight=class_weight)

  return jax.lax.scan(body, state, indices)


def train_steps_with_lengths(state: TrainState, images: jax.Array,
                             labels: jax.Array, lengths: jax.Array,
                             indices: jax.Array, **kwargs: Any
                             ) -> tuple[TrainState, Metrics]:
  """``train_steps`` with the lengths a positional (device-placed, sharded
  like the labels) argument before the indices, as ``loop.Chunks`` passes
  its data arguments."""
  return train_steps(state, images, labels, indices, lengths=lengths, **kwargs)


def train_steps_streamed(state: TrainState, images: jax.Array,
                         labels: jax.Array, *lengths: jax.Array,
                         **kwargs: Any) -> tuple[TrainState, Metrics]:
  """``train_steps`` on batches read on the host (``data_placement=
  'stream'``): ``images`` (steps, B, T, F), ``labels`` (steps, B) and
  optionally ``lengths`` (steps, B), one batch per step; the same
  ``train_step`` on the same batches, so the same result."""

  def body(state, batch):
    batch = {'image': ops.to_float(batch[0]), 'label': batch[1],
             **({'lengths': batch[2]} if len(batch) > 2 else {})}
    return train_step(state, batch, **kwargs)

  return jax.lax.scan(body, state, (images, labels, *lengths))


def data_args(split: Split) -> tuple[np.ndarray, ...]:
  """The arrays a chunk function gathers batches from: images, labels and,
  when the split has them, lengths (then ``steps_fn(True)`` takes them)."""
  arrays = (split['image'], split['label'])
  return (*arrays, split['lengths']) if 'lengths' in split else arrays


def steps_fn(has_lengths: bool) -> Any:
  """The chunk function for data with or without ``lengths``."""
  return train_steps_with_lengths if has_lengths else train_steps


def keyed(chunk_fn: Any, hflip: bool) -> Any:
  """``chunk_fn`` taking its noise key as a data argument, last before the
  indices (``fn(state, *data, key_data, indices)``, ``loop.Chunks``'
  convention; ``jax.random.key_data`` of the key, which every placement
  takes): a key bound as a keyword would be a constant of the compiled
  program, one program (and one compile) per seed.

  Args:
    chunk_fn: from ``steps_fn``.
    hflip: as ``train_step``'s.

  Returns:
    The function; other keywords (``axis_name``, ``class_weight``) pass
    through.
  """

  def train_steps_keyed(state: TrainState, *args: jax.Array,
                        **kwargs: Any) -> tuple[TrainState, Metrics]:
    *data, key_data, indices = args
    return chunk_fn(state, *data, indices,
                    rng=jax.random.wrap_key_data(key_data), hflip=hflip,
                    **kwargs)

  return train_steps_keyed


def eval_step(state: TrainState, batch: Batch) -> Metrics:
  """Summed metrics of one evaluation batch.

  Args:
    state: anything with ``apply_fn`` and ``params`` (a ``TrainState``).
    batch: ``image``, ``label``, optionally ``mask`` (False: a padding
      example) and ``lengths`` (each row read up to its length).

  Returns:
    ``loss`` (summed), ``correct``, ``count`` and ``confusion`` (C, C
    counts, ``metrics.confusion``) over the unmasked examples.
  """
  logits = state.apply_fn({'params': state.params}, batch['image'],
                          **_length_kwargs(batch))
  mask = batch.get('mask', jnp.ones(batch['label'].shape, bool))
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch['label'])
  correct = jnp.argmax(logits, -1) == batch['label']
  return {'loss': jnp.sum(jnp.where(mask, loss, 0.0)),
          'correct': jnp.sum(correct & mask),
          'count': jnp.sum(mask),
          'confusion': metrics_lib.confusion(logits, batch['label'],
                                             logits.shape[-1], mask)}


_jit_eval_step = jax.jit(eval_step)
_jit_eval_stacked = jax.jit(jax.vmap(eval_step, in_axes=(0, None)))
_jit_eval_each = jax.jit(lambda states, batch: jax.lax.map(
    lambda state: eval_step(state, batch), states))


def evaluate(state: TrainState, split: Split, batch_size: int,
             devices: Sequence[jax.Device] | None = None, *,
             stacked: bool = False, sequential: bool = False
             ) -> dict[str, Any]:
  """Loss and accuracy over every example of ``split`` exactly once.

  Args:
    state: the model's state (anything with ``apply_fn`` and ``params``).
    split: the split's arrays (``seqclf.data.splits``).
    batch_size: examples per call (the last batch padded and masked).
    devices: this process's devices to split each batch across (e.g. the
      CPU split by ``parallel.configure_cpu_devices``), the parameters
      replicated, so evaluation uses every core as training does.
    stacked: ``state`` is a stack of models (``seqclf.sweep``), each
      evaluated on the same batches by the same ``eval_step``: vmapped, or
      with ``sequential`` one model after another (each the single model's
      program, so its sums are the single model's bits).

  Returns:
    ``loss`` (mean unweighted cross-entropy), ``accuracy``, ``count``,
    ``balanced_accuracy``, ``macro_f1``, per-class ``precision``,
    ``recall``, ``f1``, ``support`` lists and the ``confusion`` matrix
    (``metrics.summary``; numpy arrays with one entry per model when
    stacked).
  """
  put = lambda batch: batch
  if devices is not None and len(devices) > 1 and batch_size % len(devices) == 0:
    mesh = parallel.make_mesh(list(devices))
    state = jax.device_put(state, NamedSharding(mesh, P()))
    put = functools.partial(jax.device_put,
                            device=NamedSharding(mesh, P(parallel.AXIS)))
  # Summed on the host: adding device arrays would compile a program per
  # sharding, which costs more than the whole evaluation on CPU.
  step = (_jit_eval_step if not stacked else
          _jit_eval_each if sequential else _jit_eval_stacked)
  sums = jax.device_get([step(state, put(batch)) for batch in
                         order.eval_batches(split, batch_size)])
  totals = jax.tree.map(
      lambda *parts: np.sum(parts, axis=0, dtype=np.float64), *sums)
  count = int(np.ravel(totals['count'])[0])
  matrix = totals['confusion'].astype(np.int64)
  more = {k: v for k, v in metrics_lib.summary(matrix).items()
          if k != 'accuracy'}  # computed as before, from `correct`
  if stacked:
    return {'loss': totals['loss'] / count,
            'accuracy': totals['correct'] / count, 'count': count,
            **more, 'confusion': matrix}
  return {'loss': float(totals['loss']) / count,
          'accuracy': float(totals['correct']) / count, 'count': count,
          **more, 'confusion': matrix.tolist()}
