"""`seqclf predict`'s images: conversions, MNIST-like adjustments, bad files."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from seqclf import errors, inference


def png_header_only(path, width, height):
  """A PNG whose header declares ``width`` x ``height`` and holds no pixels:
  PIL's size check sees a huge image without one being made."""
  buf = io.BytesIO()
  Image.new('L', (1, 1)).save(buf, 'PNG')
  data = bytearray(buf.getvalue())
  ihdr = bytearray(data[12:29])  # b'IHDR' and its 13 bytes
  ihdr[4:12] = struct.pack('>II', width, height)
  data[12:29] = ihdr
  data[29:33] = struct.pack('>I', zlib.crc32(bytes(ihdr)))
  path.write_bytes(bytes(data))


def test_mnist_digits_are_left_as_they_are(mnist):
  for image in mnist['test']['image']:
    pixels, notes = inference.match_mnist(image)
    assert not notes
    assert pixels is image


def test_black_on_white_digit_is_inverted_with_a_note(mnist, tmp_path):
  digit = mnist['test']['image'][0]
  Image.fromarray(255 - digit).save(tmp_path / 'inverted.png')
  pixels, note = inference.load_image(tmp_path / 'inverted.png')
  np.testing.assert_array_equal(pixels, digit)
  assert note.startswith('inverted it: its border is light (mean grey 255)')


def test_low_contrast_digit_is_stretched_with_a_note(mnist, tmp_path):
  digit = mnist['test']['image'][0]
  faint = (digit // 4 + 60).astype(np.uint8)
  Image.fromarray(faint).save(tmp_path / 'faint.png')
  pixels, note = inference.load_image(tmp_path / 'faint.png')
  assert note == 'stretched its grey levels 60-123 to 0-255 (low contrast)'
  assert (pixels.min(), pixels.max()) == (0, 255)
  assert np.corrcoef(pixels.ravel(), digit.ravel())[0, 1] > 0.99


def test_blank_image_is_noted(tmp_path):
  Image.new('L', (28, 28), 0).save(tmp_path / 'blank.png')
  _, note = inference.load_image(tmp_path / 'blank.png')
  assert note == 'every pixel is 0: there is no digit to classify'


def test_image_too_large_is_one_error(tmp_path):
  path = tmp_path / 'huge.png'
  png_header_only(path, 15000, 15000)
  with pytest.raises(errors.ImageError) as e:
    inference.load_image(path)
  assert str(e.value).startswith(f'{path}: too large to open (Image size '
                                 '(225000000 pixels) exceeds limit')
  assert str(e.value).endswith('Crop or shrink it to the digit, ideally 28x28.')


def test_directory_is_one_error(tmp_path):
  with pytest.raises(errors.ImageError, match=rf'^{tmp_path} is a directory: '
                     rf'give image files, e\.g\. {tmp_path}/\*\.png\.$'):
    inference.load_image(tmp_path)
