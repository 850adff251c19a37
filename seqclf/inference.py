"""Restore a trained model from a workdir and classify images with it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from seqclf import checkpoint
from seqclf import datasets
from seqclf import errors
from seqclf import input_pipeline
from seqclf import models
from seqclf.config import ConfigError, base_config
from seqclf.kernels import autotune
from seqclf.models import LSTMClassifier


def load_model(workdir: str | Path, step: int | None = None
               ) -> tuple[LSTMClassifier, Any, ml_collections.ConfigDict]:
  """(model, params, config) of the checkpoint at ``step`` (default: latest).

  The model is rebuilt from the config saved beside the params, so this needs
  only the workdir, not the config file the run was started with.
  """
  mngr = checkpoint.manager(workdir, create=False, process_local=True)
  latest = mngr.latest_step() if step is None else step
  if latest is None:
    raise checkpoint.CheckpointError(
        f'No checkpoint in {mngr.directory}: train first with '
        f'`seqclf train --workdir {Path(workdir)}`.')
  try:
    saved = mngr.restore(latest, args=ocp.args.Composite(
        config=ocp.args.JsonRestore()))['config']
  except Exception as e:  # pylint: disable=broad-except
    # Damage, as checkpoint.restore treats it: orbax raises many types.
    raise checkpoint.CheckpointError(
        f'The config of checkpoint {mngr.directory}/{latest} is unreadable '
        f'({type(e).__name__}: {e}). Delete that step directory, or train '
        'again in a fresh workdir.') from e
  config = base_config()
  config.update(saved)
  if config.matmul_precision != 'float32':
    try:
      autotune.choose_impl(config, mode='forward')
    except ConfigError:  # A speed choice, not part of the model: the same
      config.matmul_precision = 'float32'  # params run in float32 here.
  # Every impl has the same parameters: the abstract ones need no choice.
  shape = models.INPUT_SHAPE
  if config.dataset.startswith(datasets.NPZ_PREFIX):
    # The user's (T, F): F is the first layer's input size (T is free).
    saved_shapes = checkpoint.saved_param_shapes(mngr, latest)
    shape = (1, saved_shapes[f'{config.cell}_0.cell.input.kernel'][0])
  abstract = jax.eval_shape(
      lambda: models.from_config(config, 'scan').init(
          jax.random.key(0), jax.numpy.zeros((1, *shape))))
  # step=None lets restore fall back past a damaged newest checkpoint.
  params = checkpoint.restore_params(mngr, abstract['params'], step)
  impl = autotune.resolve_impl(config, mode='forward')
  return models.from_config(config, impl), params, config


def predict_probabilities(model: LSTMClassifier, params: Any,
                          images: np.ndarray,
                          batch_size: int = 1000) -> np.ndarray:
  """Class probabilities for uint8 images of shape (N, 28, 28).

  Runs ``batch_size`` images at a time (the last batch zero-padded, so one
  compiled program serves all): the whole test set at once would hold
  (N, 28, 512) gate activations, over half a gigabyte for N = 10,000.
  """
  apply = jax.jit(lambda x: jax.nn.softmax(model.apply({'params': params}, x)))
  images = np.asarray(images)
  split = {'image': images, 'label': np.zeros(len(images), np.int32)}
  size = max(1, min(batch_size, len(images)))
  out = [np.asarray(apply(batch['image']))[batch['mask']]
         for batch in input_pipeline.eval_batches(split, size)]
  return np.concatenate(out) if out else np.zeros((0, model.num_classes),
                                                  np.float32)


def load_image(path: str | Path) -> tuple[np.ndarray, str | None]:
  """A 28x28 uint8 grayscale array from an image file, and a note if converted.

  MNIST digits are white on black; other images are converted to grayscale
  and resized, never silently.
  """
  from PIL import Image, UnidentifiedImageError  # pylint: disable=g-import-not-at-top
  path = Path(path)
  if not path.is_file():
    raise errors.ImageError(f'{path}: no such file.')
  try:
    with Image.open(path) as image:
      image.load()
      notes = []
      if image.mode != 'L':
        notes.append(f'converted {image.mode} to grayscale')
        image = image.convert('L')
      if image.size != (28, 28):
        notes.append(f'resized {image.size[0]}x{image.size[1]} to 28x28')
        image = image.resize((28, 28), Image.Resampling.BILINEAR)
      return np.asarray(image, np.uint8), '; '.join(notes) or None
  except (UnidentifiedImageError, OSError) as e:
    raise errors.ImageError(f'{path}: not a readable image ({e}); give '
                            'PNG/JPEG/… files of 28x28 grayscale digits.') from e
