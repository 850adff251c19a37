"""Restore a trained model from a workdir and classify sequences or images
with it (sequence files: ``seqclf.sequence_files``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import traverse_util

from seqclf import checkpoint
from seqclf import datasets
from seqclf import errors
from seqclf import input_pipeline
from seqclf import models
from seqclf.config import ConfigError, base_config
from seqclf.kernels import autotune
from seqclf.models import LSTMClassifier


def _config_of(saved: dict[str, Any]) -> ml_collections.ConfigDict:
  """The run's config from its saved dict, runnable here."""
  config = base_config()
  config.update(saved)
  if config.matmul_precision != 'float32':
    try:
      autotune.choose_impl(config, mode='forward')
    except ConfigError:  # A speed choice, not part of the model: the same
      config.matmul_precision = 'float32'  # params run in float32 here.
  return config


def load_model(workdir: str | Path, step: int | None = None
               ) -> tuple[LSTMClassifier, Any, ml_collections.ConfigDict]:
  """(model, params, config) of the checkpoint at ``step`` (default: latest).

  The model is rebuilt from the config saved beside the params, so this needs
  only the workdir, not the config file the run was started with. Without
  ``step``, a damaged newest checkpoint (any part) is skipped for the newest
  readable one, with one line saying so (``checkpoint.restore``).
  """
  mngr = checkpoint.manager(workdir, create=False, process_local=True)
  if not mngr.all_steps():
    raise checkpoint.CheckpointError(
        f'No checkpoint in {mngr.directory}: train first with '
        f'`seqclf train --workdir {Path(workdir)}`.')

  def abstract_params(saved: dict[str, Any],
                      shapes: dict[str, tuple[int, ...]]) -> Any:
    # Every impl has the same parameters: the abstract ones need no choice.
    config = _config_of(saved)
    shape = checkpoint.input_shape_from(shapes, config)
    return jax.eval_shape(
        lambda: models.from_config(config, 'scan').init(
            jax.random.key(0), jax.numpy.zeros((1, *shape))))['params']

  state, saved = checkpoint.restore(mngr, None, step, params=abstract_params)
  config = _config_of(saved)
  impl = autotune.resolve_impl(config, mode='forward')
  return models.from_config(config, impl), state['params'], config


def takes_images(config: ml_collections.ConfigDict) -> bool:
  """Whether a model's callers (``seqclf predict``, the exported function)
  give it 28 x 28 images, read as its run's ``task`` says
  (``datasets.view``), or sequences of its input width and any length."""
  return config.dataset in datasets.IMAGES


def input_shape(params: Any, config: ml_collections.ConfigDict
                ) -> tuple[int, int]:
  """One example's (T, F) as callers give it to ``load_model``'s model: an
  image's where ``takes_images``, else (1, F), F the width its params read
  (``checkpoint.input_shape_from``; T is free)."""
  if takes_images(config):
    return datasets.IMAGE_SHAPE
  shapes = {name: leaf.shape for name, leaf
            in traverse_util.flatten_dict(params, sep='.').items()}
  return checkpoint.input_shape_from(shapes, config)


def predict_probabilities(model: LSTMClassifier, params: Any,
                          images: np.ndarray,
                          batch_size: int = 1000,
                          lengths: np.ndarray | None = None) -> np.ndarray:
  """Class probabilities for (N, T, F) sequences (uint8 images or float).

  ``lengths`` (N,) ints: each sequence's valid steps (the model reads each
  up to its length, as the trainer does for data with lengths).

  Runs ``batch_size`` images at a time (the last batch zero-padded, so one
  compiled program serves all): the whole test set at once would hold
  (N, 28, 512) gate activations, over half a gigabyte for N = 10,000.
  """
  apply = jax.jit(lambda x, n: jax.nn.softmax(model.apply(
      {'params': params}, x, seq_lengths=n)))
  images = np.asarray(images)
  split = {'image': images, 'label': np.zeros(len(images), np.int32)}
  if lengths is not None:
    split['lengths'] = np.asarray(lengths, np.int32)
  size = max(1, min(batch_size, len(images)))
  out = [np.asarray(apply(batch['image'], batch.get('lengths')))[batch['mask']]
         for batch in input_pipeline.eval_batches(split, size)]
  return np.concatenate(out) if out else np.zeros((0, model.num_classes),
                                                  np.float32)


# What MNIST digits look like: a dark background (its border pixels are 0)
# and strokes reaching full white. An image unlike that is adjusted, with a
# note: a bright border means a dark digit on a light ground (inverted); a
# narrow range of grey levels is stretched to 0-255 (PIL's autocontrast).
BRIGHT_BORDER = 128  # mean of the outermost rows and columns, 0-255
LOW_CONTRAST = 128   # max - min grey level below this is stretched


def match_mnist(pixels: np.ndarray) -> tuple[np.ndarray, list[str]]:
  """``pixels`` (28x28 uint8) made to look like an MNIST digit, and a note
  for each change; an MNIST-like image comes back unchanged."""
  from PIL import Image, ImageOps  # pylint: disable=g-import-not-at-top
  notes = []
  border = np.concatenate([pixels[0], pixels[-1], pixels[1:-1, 0],
                           pixels[1:-1, -1]])
  if border.mean() >= BRIGHT_BORDER:
    pixels = 255 - pixels
    notes.append(f'inverted it: its border is light (mean grey '
                 f'{border.mean():.0f}), MNIST digits are light on dark')
  low, high = int(pixels.min()), int(pixels.max())
  if low == high:
    notes.append(f'every pixel is {low}: there is no digit to classify')
  elif high - low < LOW_CONTRAST:
    pixels = np.asarray(ImageOps.autocontrast(Image.fromarray(pixels)),
                        np.uint8)
    notes.append(f'stretched its grey levels {low}-{high} to 0-255 (low '
                 'contrast)')
  return pixels, notes


def load_image(path: str | Path) -> tuple[np.ndarray, str | None]:
  """A 28x28 uint8 grayscale array from an image file, and a note if changed.

  MNIST digits are white on black; other images are converted to grayscale,
  resized and adjusted (``match_mnist``), never silently.
  """
  from PIL import Image, UnidentifiedImageError  # pylint: disable=g-import-not-at-top
  path = Path(path)
  if path.is_dir():
    raise errors.ImageError(f'{path} is a directory: give image files, e.g. '
                            f'{path}/*.png.')
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
      pixels, adjusted = match_mnist(np.asarray(image, np.uint8))
      return pixels, '; '.join(notes + adjusted) or None
  except Image.DecompressionBombError as e:
    raise errors.ImageError(
        f'{path}: too large to open ({e}). Crop or shrink it to the digit, '
        'ideally 28x28.') from e
  except (UnidentifiedImageError, OSError) as e:
    raise errors.ImageError(f'{path}: not a readable image ({e}); give '
                            'PNG/JPEG/… files of 28x28 grayscale digits.') from e
