"""A trained model from its workdir: restore it, evaluate it, classify with it.

``load_model`` needs only the workdir: the model is rebuilt from the config
saved beside the params, restored without the optimizer; ``load_nnx_model``
gives the same model as a ``seqclf.nnx`` module, and ``save_nnx_model``
writes an NNX model's params back as the checkpoint its workdir then serves
(refusing where a reader would get another model). What the model is given
comes from files through ``seqclf.data.sequence_files`` and
``seqclf.data.images``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
import optax
from flax import nnx
from flax import traverse_util

from seqclf import errors
from seqclf import nnx as seqnnx
from seqclf.config import base_config
from seqclf.config import validate as validate_config
from seqclf.data import order, registry, splits as splits_lib, stream, views
from seqclf.data.splits import Split
from seqclf.errors import CheckpointError, ConfigError, UsageError
from seqclf.kernels import paths
from seqclf.nn import classifier
from seqclf.nn.classifier import LSTMClassifier
from seqclf.nnx import classifier as nnx_classifier
from seqclf.training import autotune, checkpoint, optim, steps
from seqclf.training.state import TrainState


def _config_of(saved: dict[str, Any]) -> ml_collections.ConfigDict:
  """The run's config from its saved dict, runnable here: a matmul
  precision no path runs on this backend is a speed choice, not part of the
  model, so the same params run in float32 instead."""
  config = base_config()
  config.update(saved)
  if not paths.eligible(autotune.layer_of(config), jax.default_backend()):
    config.matmul_precision = 'float32'
  return config


def which_checkpoint(workdir: str | Path, step: int | None = None
                     ) -> tuple[Any, int | None, str]:
  """The checkpoint inference reads, and words saying which.

  Args:
    workdir: a run's directory.
    step: a training checkpoint's step, else the best one of that step;
      None: the run's best checkpoint (``checkpoints/best/``, a run with a
      ``monitor``) where it has one, else the latest.

  Returns:
    ``(manager, step, description)``: step None means the newest readable
    step of the manager. A ``CheckpointError`` lists the steps there are.
  """
  mngr = checkpoint.manager(workdir, create=False, process_local=True)
  best = checkpoint.best_step(workdir)
  if not mngr.all_steps() and best is None:
    if (Path(workdir) / 'sweep.json').exists():
      raise CheckpointError(
          f'{workdir} holds a sweep, not a run: read one of the models it '
          f'chose, {Path(workdir) / "chosen"}/seedS.',
          arg='workdir')
    raise CheckpointError(
        f'No checkpoint in {mngr.directory}: train a model in this workdir '
        'first.', arg='workdir')
  best_mngr = (checkpoint.manager(workdir, create=False, process_local=True,
                                  best=True) if best is not None else None)
  if step is None and best is not None:
    return best_mngr, best, f'the best checkpoint {best_mngr.directory}/{best}'
  if step is None:
    return mngr, None, f'the latest checkpoint in {mngr.directory}'
  if step in mngr.all_steps():
    return mngr, step, f'checkpoint {mngr.directory}/{step}'
  if best_mngr is not None and step in best_mngr.all_steps():
    return best_mngr, step, f'the best checkpoint {best_mngr.directory}/{step}'
  steps_there = sorted(set(mngr.all_steps())
                       | set(best_mngr.all_steps() if best_mngr else ()))
  raise CheckpointError(
      f'No checkpoint of step {step} in {mngr.directory}: use one of '
      f'{", ".join(map(str, steps_there))}.', arg='step')


def _warn_if_best_lost(mngr: Any) -> None:
  """One line where the newest training checkpoint names a best step that
  ``checkpoints/best/`` lacks (deleted, or never copied): the latest is
  read instead, not without a word, whether or not ``quiet``."""
  latest = mngr.latest_step()
  progress = checkpoint.saved_progress(mngr, latest) if latest else None
  lost = (progress or {}).get('best_step')
  if lost is not None:
    print(f'warning: {mngr.directory}/{latest} names best step {lost}, '
          f'which {mngr.directory}/{checkpoint.BEST_DIR} lacks: using the '
          f'latest checkpoint, step {latest}, instead (restore the best '
          'one there to use it).', file=sys.stderr)


def load_model(workdir: str | Path, step: int | None = None, *,
               impl: str = 'auto', quiet: bool = False
               ) -> tuple[LSTMClassifier, Any, ml_collections.ConfigDict]:
  """The model of the checkpoint at ``step``, ready to apply.

  Without ``step``, the run's best checkpoint where it has one (a run with a
  ``monitor``: ``which_checkpoint``), saying so on stderr; else the latest,
  a damaged newest checkpoint (any part) skipped for the newest readable
  one, with one line saying so (``checkpoint.restore``).

  Args:
    workdir: a run's directory.
    step: the checkpoint (default: the best, else the latest).
    impl: the path the recurrent layers run here; ``'auto'`` (default) times
      the forward pass of the paths that can run it (``autotune``), as the
      path is a choice of speed on this machine, not part of the model.
    quiet: do not say which checkpoint was read.

  Returns:
    ``(model, params, config)``: ``model.apply({'params': params}, x)``
    gives logits; ``config`` is the run's.
  """
  if impl != 'auto' and impl not in paths.IMPLS:
    raise ConfigError(f"impl must be 'auto' or one of {paths.IMPLS}, got "
                      f'{impl!r}.', arg='impl')
  mngr, step, what = which_checkpoint(workdir, step)
  if not quiet and mngr.directory.name == checkpoint.BEST_DIR:
    print(f'note: using {what}.', file=sys.stderr)
  if step is None:  # The latest, though the run may name a best one.
    _warn_if_best_lost(mngr)

  def abstract_params(saved: dict[str, Any],
                      shapes: dict[str, tuple[int, ...]]) -> Any:
    # Every impl has the same parameters: the abstract ones need no choice.
    config = _config_of(saved)
    shape = checkpoint.input_shape_from(shapes, config)
    return jax.eval_shape(
        lambda: classifier.from_config(config, 'scan').init(
            jax.random.key(0), jax.numpy.zeros((1, *shape))))['params']

  state, saved = checkpoint.restore(mngr, None, step, params=abstract_params)
  config = _config_of(saved)
  config.impl = impl
  if 'normalize' not in saved and config.dataset in registry.TIMESERIES:
    print(f'note: {workdir} was trained on archive series standardized in '
          'the prepared data (seqclf_* 1.0.0), which are now prepared raw: '
          'give this model standardized values, or train it again.',
          file=sys.stderr)
  # Timed on inputs as wide as the model reads (its per-channel statistics
  # are that wide).
  shape = views.image_sequence_shape(config)
  if not takes_images(config):
    shape = (shape[0], input_shape(state['params'], config)[-1])
  impl = autotune.resolve_impl(config, mode='forward', sequence_shape=shape)
  return classifier.from_config(config, impl), state['params'], config


def load_nnx_model(workdir: str | Path, step: int | None = None, *,
                   impl: str = 'auto', quiet: bool = False
                   ) -> tuple[seqnnx.LSTMClassifier, ml_collections.ConfigDict]:
  """``load_model``'s model as a ``seqclf.nnx.LSTMClassifier``.

  The same parameters (the NNX module holds the linen layout) on the same
  path, so its logits are bitwise ``load_model``'s. It is returned in
  evaluation mode (``model.eval()``; ``model.train()`` to fine-tune).

  Args:
    workdir, step, impl, quiet: as ``load_model``'s.

  Returns:
    ``(model, config)``: ``model(x)`` gives logits; ``config`` is the run's.
  """
  linen, params, config = load_model(workdir, step, impl=impl, quiet=quiet)
  in_features = classifier.features_of(
      params[f'{config.cell}_0']['cell']['input']['kernel'].shape[0],
      config.missing)
  model = seqnnx.from_linen_params(
      lambda: nnx_classifier.from_config(config, in_features,
                                         rngs=nnx.Rngs(config.seed),
                                         impl=linen.impl), params)
  model.eval()
  return model, config


def save_nnx_model(model: seqnnx.LSTMClassifier, workdir: str | Path, *,
                   config: ml_collections.ConfigDict | None = None,
                   step: int | None = None) -> int:
  """Saves an NNX classifier's params as the checkpoint ``workdir`` serves.

  The checkpoint is the trainer's (orbax ``state`` and ``config``) and the
  newest step, so ``seqclf evaluate``, ``predict``, ``export``,
  ``load_model`` and ``load_nnx_model`` read it by default. In a workdir
  that holds a run, the latest checkpoint's state (its optimizer state),
  config and ``progress`` are kept and only the params replaced, saved as a
  new step; in a fresh one, ``config`` describes the run (default
  ``base_config()``: MNIST read by rows) with a fresh optimizer state.
  Either way the saved config's model keys are set from ``model``
  (``seqclf.nnx.classifier.config_fields``).

  Refused, with nothing written, where a reader would not get this model: a
  run with a best checkpoint (``monitor``), which readers take instead (save
  into a new workdir with the run's config); a ``step`` not after the
  latest, or a model of other shapes than the run's (``UsageError``); a
  model whose input features, classes or
  channel statistics differ from the data the config describes, or a saved
  config the trainer would refuse (``ConfigError`` naming ``config=``).

  Args:
    model: the classifier.
    workdir: the run directory (created if needed).
    config: the run's config, for a fresh workdir only.
    step: the step to save as (default: the latest + 1, or 0 in a fresh
      workdir); after the latest.

  Returns:
    The step saved.
  """
  workdir = Path(workdir).expanduser().resolve()
  mngr = checkpoint.manager(workdir, create=False)
  latest = mngr.latest_step()
  _refuse_best(workdir)
  run = _run_config(model, *_data_config(workdir, mngr, latest, config))
  step = _next_step(latest, step)
  params = seqnnx.to_linen_params(model)
  state = TrainState.create(apply_fn=None, params=params,
                            tx=optim.optimizer(run))
  progress = None
  if latest is not None:  # Its step count, optimizer state and progress.
    if differ := checkpoint.shape_differences(
        checkpoint.saved_param_shapes(mngr, latest), params):
      raise UsageError(
          f'{workdir} holds a run of another model ({differ}): save this '
          'one into a fresh workdir, with config= for the data it reads.')
    state = checkpoint.restore(mngr, state, latest)[0].replace(params=params)
    progress = checkpoint.saved_progress(mngr, latest)
  errors.writable_dir(workdir)
  mngr = checkpoint.manager(workdir)
  checkpoint.save(mngr, state.replace(step=step), run, progress)
  checkpoint.wait(mngr)
  return step


def _refuse_best(workdir: Path) -> None:
  """Readers take a run's best checkpoint (``which_checkpoint``), never a
  newer step, so a step saved beside it would silently not be served."""
  best = checkpoint.best_step(workdir)
  if best is not None:
    where = checkpoint.checkpoint_dir(workdir) / checkpoint.BEST_DIR / str(best)
    raise UsageError(
        f'{workdir} holds a run whose best checkpoint {where} is what '
        'evaluate, predict, export and load_model read, not a saved step: '
        'save into a new workdir with its config, save_nnx_model(model, '
        f"NEW_WORKDIR, config=load_nnx_model('{workdir}')[1]).",
        arg='workdir')


def _data_config(workdir: Path, mngr: Any, latest: int | None,
                 config: ml_collections.ConfigDict | None
                 ) -> tuple[ml_collections.ConfigDict, str, str]:
  """The config a saved model joins (the run's, ``config`` or the default),
  what to call it and how to fix a model it does not describe."""
  if latest is not None and config is not None:
    raise UsageError(f'{workdir} already holds a run, whose '
                     'config the new checkpoint keeps: omit config, or use a '
                     'fresh workdir.', arg='config')
  if latest is not None:
    saved = checkpoint.saved_config(mngr, latest)
    if saved is None:
      raise CheckpointError(f'The config of {mngr.directory}/{latest} cannot '
                            'be read: use a fresh workdir.', arg='workdir')
    source = f'the config of the run in {workdir}'
    fix = ('save a model of that run (load_nnx_model), or save into a new '
           "workdir with config= describing the model's data")
  elif config is not None:
    saved, source = config.to_dict(), 'config='
    fix = "give config= describing the data the model was built for"
  else:
    saved, source = {}, 'the default config (base_config(): MNIST by rows)'
    fix = "pass config= describing the model's data"
  data = base_config()
  data.update(saved)
  return data, source, fix


def _model_mismatches(model: seqnnx.LSTMClassifier,
                      data: ml_collections.ConfigDict) -> list[str]:
  """How ``model`` differs from the data ``data`` describes: its input
  features (where the config says: an image dataset's view, or fitted
  channel statistics), its classes, its channel statistics' count."""
  features = (views.image_sequence_shape(data)[1] if takes_images(data)
              else len(data.channel_mean) or None)
  found = []
  if features is not None and model.in_features != features:
    found.append(f'input features: model {model.in_features}, data '
                 f'{features}')
  if model.num_classes != data.num_classes:
    found.append(f'classes: model {model.num_classes}, config num_classes='
                 f'{data.num_classes}')
  channels = len(model.linen_module.channel_mean)
  if channels and features is not None and channels != features:
    found.append(f'channel statistics: model {channels}, data {features} '
                 'features')
  return found


def _run_config(model: seqnnx.LSTMClassifier,
                data: ml_collections.ConfigDict, source: str,
                fix: str) -> ml_collections.ConfigDict:
  """``data`` with ``model``'s keys: the config saved with it. Refused (one
  ``ConfigError``) unless it describes the model's data and is valid, so
  every saved run is one that evaluate, predict, export and train read."""
  found = _model_mismatches(model, data)
  if found:
    raise ConfigError(f'The model does not fit {source}: {"; ".join(found)}: '
                      f'{fix}.', arg='config')
  run = ml_collections.ConfigDict(data.to_dict())
  run.update(nnx_classifier.config_fields(model))
  try:
    validate_config(run)
  except ConfigError as e:
    raise ConfigError(f'{str(e).rstrip(".")} (in {source} with the model\'s '
                      f'keys, which would be saved): {fix}.',
                      arg='config') from None
  return run


def _next_step(latest: int | None, step: int | None) -> int:
  """The step to save as: readers take the newest, so after ``latest``."""
  first = 0 if latest is None else latest + 1
  if step is None:
    return first
  if step < first:
    raise UsageError(f'step={step} would not be the newest step, which '
                     f'readers take: omit step, or give one >= {first}.',
                     arg='step')
  return step


def takes_images(config: ml_collections.ConfigDict) -> bool:
  """Whether a model's callers (``seqclf predict``, the exported function)
  give it images or sequences.

  Args:
    config: the model's run's config.

  Returns:
    True for 28 x 28 images, read as the run's ``task`` says
    (``views.view``); False for sequences of its input width, any length.
  """
  return config.dataset in registry.IMAGES


def input_shape(params: Any, config: ml_collections.ConfigDict
                ) -> tuple[int, int]:
  """One example's (T, F) as callers give it to ``load_model``'s model.

  Args:
    params: the model's parameters.
    config: its run's config.

  Returns:
    An image's (28, 28) where ``takes_images``, else (1, F): F the width the
    params read (``checkpoint.input_shape_from``), T free.
  """
  if takes_images(config):
    return views.IMAGE_SHAPE
  shapes = {name: leaf.shape for name, leaf
            in traverse_util.flatten_dict(params, sep='.').items()}
  return checkpoint.input_shape_from(shapes, config)


def evaluate(workdir: str | Path, splits: tuple[str, ...] = ('validation',
                                                           'test'),
             data_dir: str | None = None, step: int | None = None, *,
             dataset: str | None = None,
             quiet: bool = False) -> dict[str, dict[str, Any]]:
  """Metrics of a workdir's checkpoint (``load_model``'s) on its data.

  Args:
    workdir: a run's directory.
    splits: the splits of the run's dataset to evaluate.
    data_dir: where the prepared data is (default: the run's config's).
    step: the checkpoint (default: the best, else the latest).
    dataset: the run's ``npz:`` data where it is now, if it moved (read
      only if it is that data: ``run_data``); default: the run's config's.
    quiet: as ``load_model``'s.

  Returns:
    ``{split: metrics}`` (``steps.evaluate``'s: loss, accuracy, macro_f1,
    balanced_accuracy, per-class precision/recall/f1, confusion, count);
    no validation split for a model that trained on it (``run_data``).
  """
  model, params, config = load_model(workdir, step, quiet=quiet)
  config.data_dir = data_dir or config.data_dir
  config.dataset = dataset or config.dataset
  return evaluate_on(model, params, config, run_data(config, splits))


def run_data(config: ml_collections.ConfigDict,
             splits: tuple[str, ...]) -> dict[str, Split]:
  """A run's ``splits`` of the data its config names, refused where that is
  no longer the data it trained on: scores of other data (another file at
  its path, another carve of one) would pass for the run's.

  Args:
    config: the run's config (``load_model``'s); its ``data_digest`` (none
      in runs older than it: not compared) is ``splits.digest`` of the data
      it trained on, or of train and validation together with the test split
      (a sweep's ``--cv`` chosen model).
    splits: the splits to return (every split is read for the comparison).

  Returns:
    ``{split: arrays}``, as ``registry.load`` gives them, without the
    validation split where the run trained on it (a ``--cv`` chosen model):
    its figures there would not be held out.
  """
  # registry.load's own fixes name config keys, which a trained run's
  # commands cannot take: the fix here is the run's data.
  elsewhere = '(`seqclf evaluate --data FILE` scores other labelled data)'
  if (config.dataset.startswith(registry.NPZ_PREFIX)
      and not Path(config.dataset[len(registry.NPZ_PREFIX):]).exists()):
    raise errors.DataError(f'{config.dataset}: no such file or directory, '
                           'and this run trained on it: put it back, or name '
                           'where it is now with --dataset=npz:PATH '
                           f'{elsewhere}.')
  changed = errors.DataError(
      f'{config.dataset} is not the data this run trained on (its labels, '
      'lengths or sequence shape differ): give the file it trained on, or '
      f'train a run on this one {elsewhere}.')
  try:  # Shards' sequences stay on disk: the digest reads labels and shapes.
    data = registry.load(config, lazy=registry.is_shard_dir(config.dataset))
  except errors.DataError as e:
    if e.arg == 'config.num_classes':  # labels the run cannot have seen
      raise changed from None
    raise
  refit = False  # trained on train and validation: a --cv chosen model
  if (config.get('data_digest')
      and config.data_digest != splits_lib.digest(data)):
    if config.data_digest != splits_lib.refit_digest(data):
      raise changed
    refit = True
  return {name: stream.materialize(data[name]) for name in splits
          if not (refit and name == 'validation')}


def evaluate_on(model: LSTMClassifier, params: Any,
                config: ml_collections.ConfigDict,
                data: dict[str, Split]) -> dict[str, dict[str, Any]]:
  """``evaluate``'s metrics of a loaded model (``load_model``'s) on ``data``:
  ``{name: split}``, the run's splits or other labelled data
  (``sequence_files.labelled``), as the data held them (it views them)."""
  state = TrainState.create(apply_fn=model.apply, params=params,
                            tx=optax.identity())
  return {name: steps.evaluate(state, split, config.eval_batch_size)
          for name, split in views.view_splits(config, data).items()}


def predict_probabilities(model: LSTMClassifier, params: Any,
                          images: np.ndarray,
                          batch_size: int = 1000,
                          lengths: np.ndarray | None = None) -> np.ndarray:
  """Class probabilities for (N, T, F) sequences (uint8 images or float).

  Runs ``batch_size`` sequences at a time (the last batch zero-padded, so
  one compiled program serves all): the whole test set at once would hold
  (N, 28, 512) gate activations, over half a gigabyte for N = 10,000.

  Args:
    model: from ``load_model``.
    params: its parameters.
    images: (N, T, F) sequences as the model reads them.
    batch_size: sequences per call.
    lengths: (N,) ints, each sequence's valid steps (read up to its length,
      as the trainer does for data with lengths), or None.

  Returns:
    (N, num_classes) probabilities.
  """
  # The parameters as an argument, not compiled in as constants: one
  # program (and compilation-cache entry) for every checkpoint of a model.
  apply = jax.jit(lambda p, x, n: jax.nn.softmax(model.apply(
      {'params': p}, x, seq_lengths=n)))
  images = np.asarray(images)
  split = {'image': images, 'label': np.zeros(len(images), np.int32)}
  if lengths is not None:
    split['lengths'] = np.asarray(lengths, np.int32)
  size = max(1, min(batch_size, len(images)))
  out = [np.asarray(apply(params, batch['image'],
                          batch.get('lengths')))[batch['mask']]
         for batch in order.eval_batches(split, size)]
  return np.concatenate(out) if out else np.zeros((0, model.num_classes),
                                                  np.float32)
