"""The NNX modules' docstring examples run as written."""

import doctest

import pytest

from seqclf.nnx import classifier, recurrent


@pytest.mark.parametrize('module', [recurrent, classifier],
                         ids=lambda m: m.__name__)
def test_docstring_examples_run(module):
  result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
  assert result.attempted > 0 and result.failed == 0, result
