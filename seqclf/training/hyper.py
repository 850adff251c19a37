"""Per-model hyperparameters inside one training program.

A sweep trains a stack of models in one jitted step (one model after
another on the CPU, ``jax.vmap`` on accelerators); what differs between
them must then be data, not Python constants baked into the program.
``HyperState`` carries each model's numbers (``hparams``: the keys of
``PER_MODEL`` that vary in its group) beside its parameters, and
``steps_fn`` builds, inside the traced step, the optimizer and the dropout
those numbers describe. Each computes what the single run's Python-constant
version computes (``seqclf.training.optim``, flax's ``nn.Dropout``), so
model k follows ``seqclf train`` with its setting.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import struct

from seqclf.training import optim, state as state_lib, steps

# Config keys a model of a group may hold its own value of (numbers in
# the step, not shapes), and the dtype each travels in. `warmup_steps` only
# with lr_schedule='constant': the cosine decay's length depends on it.
PER_MODEL = {'learning_rate': np.float32, 'dropout_rate': np.float32,
             'grad_clip_norm': np.float32, 'warmup_steps': np.int32,
             'weight_decay': np.float32}


def per_model_keys(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The ``PER_MODEL`` keys that may vary inside one program for ``config``.

  ``grad_clip_norm`` only where ``config`` clips: not clipping (0) is
  another program, the one a run that never clips compiles (XLA fuses the
  gradients into their consumers, so a clip switched off inside the program
  would change the last bits); ``weight_decay`` likewise only where
  ``config`` decays (0 adds no decay to the optimizer at all).
  """
  keys = tuple(PER_MODEL)
  if config.lr_schedule != 'constant':
    keys = tuple(k for k in keys if k != 'warmup_steps')
  if not config.grad_clip_norm:
    keys = tuple(k for k in keys if k != 'grad_clip_norm')
  if not config.weight_decay:
    keys = tuple(k for k in keys if k != 'weight_decay')
  return keys


class HyperState(state_lib.TrainState):
  """A ``TrainState`` with the model's own hyperparameters (a dict of scalars)
  and, with early stopping, its watch (``watch``: active flag, best score,
  evaluations since it improved) and the parameters that scored best."""
  hparams: dict[str, Any] = struct.field(default_factory=dict)
  watch: dict[str, Any] = struct.field(default_factory=dict)
  best_params: Any = None


def new_watch() -> dict[str, np.ndarray]:
  """One model's early-stopping watch before its first evaluation."""
  return {'active': np.asarray(True), 'best': np.asarray(-np.inf, np.float64
                                                         ).astype(np.float32),
          'bad': np.asarray(0, np.int32), 'best_step': np.asarray(0, np.int32)}


@jax.jit
def observe(states: HyperState, score: jax.Array, patience: jax.Array,
            step: jax.Array) -> HyperState:
  """The stack after an evaluation whose ``score`` (higher is better) each
  model got: an improvement keeps its parameters as the best, ``patience``
  evaluations without one stop it (its state stops changing)."""
  w = states.watch
  better = w['active'] & (score > w['best'])
  bad = jnp.where(better, 0, w['bad'] + w['active'].astype(jnp.int32))
  pick = lambda new, old: jnp.where(
      better.reshape(better.shape + (1,) * (new.ndim - 1)), new, old)
  return states.replace(
      best_params=jax.tree.map(pick, states.params, states.best_params),
      watch={'active': w['active'] & (bad < patience),
             'best': jnp.where(better, score, w['best']), 'bad': bad,
             'best_step': jnp.where(better, step, w['best_step'])})


def hparams_of(config: ml_collections.ConfigDict,
               keys: tuple[str, ...]) -> dict[str, np.ndarray]:
  """``config``'s values of ``keys`` as the step reads them. Dropout travels
  as its keep probability, computed in double as ``nn.Dropout`` does."""
  out = {k: np.asarray(config[k], PER_MODEL[k]) for k in keys}
  if 'dropout_rate' in out:
    out['dropout_rate'] = np.asarray(1.0 - config.dropout_rate, np.float32)
  return out


def _warmup(peak: jax.Array, warmup: jax.Array):
  """optim's constant schedule after ``warmup`` steps of linear warmup (an
  ``optax.join_schedules`` of ``linear_schedule`` and a constant), the same
  operations for a traced ``warmup``; 0: the peak throughout."""

  def schedule(count):
    ramp_count = jnp.clip(count, 0, warmup)
    frac = 1 - ramp_count / warmup
    ramp = (0.0 - peak) * (frac**1) + peak
    warm = jnp.where(count < warmup, ramp, peak)
    return jnp.where(warmup > 0, warm, peak)

  return schedule


def optimizer(config: ml_collections.ConfigDict,
              hparams: dict[str, jax.Array]) -> optax.GradientTransformation:
  """``optim.optimizer(config)`` with ``hparams``' (traced) values in place of
  the config's; its state's structure does not depend on those values."""
  peak = hparams.get('learning_rate', config.learning_rate)
  if 'warmup_steps' in hparams:
    rate = _warmup(peak, hparams['warmup_steps'])
  else:
    rate = optim.learning_rate_schedule(config, peak)
  return optim.optimizer(config, rate, hparams.get('grad_clip_norm'),
                         hparams.get('weight_decay'))


def _dropout_apply(apply_fn: Any, keep: jax.Array) -> Any:
  """``apply_fn`` with every ``nn.Dropout`` keeping ``keep`` (traced) of its
  inputs, as ``nn.Dropout(1 - keep)`` would; keep = 1 returns the inputs."""

  def interceptor(next_fun, args, kwargs, context):
    module = context.module
    if not (isinstance(module, nn.Dropout) and context.method_name == '__call__'):
      return next_fun(*args, **kwargs)
    inputs = args[0]
    deterministic = nn.merge_param('deterministic', module.deterministic,
                                   kwargs.get('deterministic'))
    if deterministic:
      return inputs
    rng = module.make_rng(module.rng_collection)
    mask = jax.random.bernoulli(rng, p=keep, shape=inputs.shape)
    # XLA turns nn.Dropout's division by its constant into this product.
    dropped = jax.lax.select(mask, inputs * (1 / keep), jnp.zeros_like(inputs))
    return jnp.where(keep < 1, dropped, inputs)

  def apply(*args, **kwargs):
    with nn.intercept_methods(interceptor):
      return apply_fn(*args, **kwargs)

  return apply


def init_states(config: ml_collections.ConfigDict, seeds: list[int],
                hparams: list[dict[str, Any]], *, impl: str,
                sequence_shape: Any, watch: bool = False) -> HyperState:
  """The stacked states of a group: model k is its single run's state.

  The optimizer state's structure does not depend on the values, so one
  optimizer (the group config's values) initializes every model's.

  Args:
    config: the group's config.
    seeds: model k's parameters are ``create_train_state``'s for
      ``key(seeds[k])``.
    hparams: model k's ``hparams_of`` values (the same keys for all).
    impl: the path the recurrent layers run.
    sequence_shape: one example's (T, F) as the model reads it.
    watch: add an early-stopping watch (``new_watch``) and a copy of the
      parameters as the best so far.

  Returns:
    The ``HyperState``s stacked on a leading model axis.
  """
  keys = tuple(hparams[0])
  tx = optimizer(config, hparams_of(config, keys))

  def init(seed, hp):
    base = state_lib.create_train_state(config, jax.random.key(seed),
                                        impl=impl,
                                        sequence_shape=sequence_shape)
    return HyperState.create(
        apply_fn=base.apply_fn, params=base.params, tx=tx, hparams=hp,
        watch=new_watch() if watch else {},
        best_params=base.params if watch else None)

  # One model at a time: a vmapped init is a batched LAPACK QR (orthogonal
  # initializers), which deadlocked XLA's CPU threads for five or more
  # bidirectional models. One compiled init, so one tree for all.
  init = jax.jit(init)
  states = [init(jnp.uint32(s), hp) for s, hp in zip(seeds, hparams)]
  # Stacked by one program (stacking leaf by leaf compiles one per leaf).
  return jax.jit(lambda *trees: jax.tree.map(
      lambda *leaves: jnp.stack(leaves), *trees))(*states)


def steps_fn(config: ml_collections.ConfigDict, noise: bool, lengths: bool,
             class_weight: np.ndarray | None = None, *,
             sequential: bool = False):
  """``steps.train_steps`` of a stack of ``HyperState``s, one model after
  another or vmapped.

  Args:
    config: the group's config (the values its models share).
    noise: pass each model its key (dropout or flips).
    lengths: the data has lengths (a positional argument before the keys).
    class_weight: the group's per-class loss weights
      (``steps.class_weights``), or None: unweighted, the same program as
      before weights existed.
    sequential: run the models one after another (``lax.map``), each the
      program of its single run (on the CPU bitwise its result, where
      ``vmap``'s batched weight gradients sum in another order), rather than
      vmapped (one batched program: what an accelerator wants).

  Returns:
    ``fn(states, *data, rngs, indices, axis_name=None)``, ``loop.Chunks``'
    convention, compiled by ``parallel.DataParallel.chunk_fn``; with
    ``axis_name`` each model's gradients are averaged over that mapped axis,
    as ``seqclf train``'s are under ``pmap``.
  """
  run = steps.steps_fn(lengths)
  weighting = {} if class_weight is None else {'class_weight': class_weight}

  def every_model(states, *args, axis_name=None):
    *data, rngs, indices = args

    def one(state, rng, idx):
      hp = state.hparams
      apply_fn = state.apply_fn
      if 'dropout_rate' in hp:
        apply_fn = _dropout_apply(apply_fn, hp['dropout_rate'])
      inner = state.replace(tx=optimizer(config, hp), apply_fn=apply_fn)
      new, metrics = run(inner, *data, idx, rng=rng if noise else None,
                         hflip=config.augment_hflip, axis_name=axis_name,
                         **weighting)
      if state.watch:  # Stopped early: nothing changes but the step.
        keep = lambda n, o: jnp.where(state.watch['active'], n, o)
        new = new.replace(params=jax.tree.map(keep, new.params, state.params),
                          opt_state=jax.tree.map(keep, new.opt_state,
                                                 state.opt_state))
      return new.replace(tx=state.tx, apply_fn=state.apply_fn), metrics

    if sequential:
      return jax.lax.map(lambda model: one(*model), (states, rngs, indices))
    return jax.vmap(one)(states, rngs, indices)

  return every_model
