"""Image files as MNIST-like digits, for classifying a user's own images.

A 28 x 28 grayscale uint8 array from any image file PIL reads: converted to
grayscale, resized and adjusted to look like an MNIST digit (white on black,
full contrast), each change reported, never silent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from seqclf import errors

# What MNIST digits look like: a dark background (its border pixels are 0)
# and strokes reaching full white. An image unlike that is adjusted, with a
# note: a bright border means a dark digit on a light ground (inverted); a
# narrow range of grey levels is stretched to 0-255 (PIL's autocontrast).
BRIGHT_BORDER = 128  # mean of the outermost rows and columns, 0-255
LOW_CONTRAST = 128   # max - min grey level below this is stretched


def match_mnist(pixels: np.ndarray) -> tuple[np.ndarray, list[str]]:
  """``pixels`` (28x28 uint8) made to look like an MNIST digit, and a note
  for each change; an MNIST-like image comes back unchanged."""
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
