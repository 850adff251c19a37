"""`seqclf predict`'s images: conversions, MNIST-like adjustments, bad files."""


import numpy as np
import pytest
from PIL import Image

from conftest import png_header_only
from seqclf import errors
from seqclf.data import images as images_lib


def test_mnist_digits_are_left_as_they_are(mnist):
  for image in mnist['test']['image']:
    pixels, notes = images_lib.match_mnist(image)
    assert not notes
    assert pixels is image


def test_black_on_white_digit_is_inverted_with_a_note(mnist, tmp_path):
  digit = mnist['test']['image'][0]
  Image.fromarray(255 - digit).save(tmp_path / 'inverted.png')
  pixels, note = images_lib.load_image(tmp_path / 'inverted.png')
  np.testing.assert_array_equal(pixels, digit)
  assert note.startswith('inverted it: its border is light (mean grey 255)')


def test_low_contrast_digit_is_stretched_with_a_note(mnist, tmp_path):
  digit = mnist['test']['image'][0]
  faint = (digit // 4 + 60).astype(np.uint8)
  Image.fromarray(faint).save(tmp_path / 'faint.png')
  pixels, note = images_lib.load_image(tmp_path / 'faint.png')
  assert note == 'stretched its grey levels 60-123 to 0-255 (low contrast)'
  assert (pixels.min(), pixels.max()) == (0, 255)
  assert np.corrcoef(pixels.ravel(), digit.ravel())[0, 1] > 0.99


def test_blank_image_is_noted(tmp_path):
  Image.new('L', (28, 28), 0).save(tmp_path / 'blank.png')
  _, note = images_lib.load_image(tmp_path / 'blank.png')
  assert note == 'every pixel is 0: there is no digit to classify'


def test_image_too_large_is_one_error(tmp_path):
  path = tmp_path / 'huge.png'
  png_header_only(path, 15000, 15000)
  with pytest.raises(errors.ImageError) as e:
    images_lib.load_image(path)
  assert str(e.value).startswith(f'{path}: too large to open (Image size '
                                 '(225000000 pixels) exceeds limit')
  assert str(e.value).endswith('Crop or shrink it to the digit, ideally 28x28.')


def test_directory_is_one_error(tmp_path):
  with pytest.raises(errors.ImageError, match=rf'^{tmp_path} is a directory: '
                     rf'give image files, e\.g\. {tmp_path}/\*\.png\.$'):
    images_lib.load_image(tmp_path)
