"""The public API states its contract: Args and Returns (or Yields)."""

import importlib
import inspect
import re
import subprocess
import sys

import pytest

from conftest import REPO

# What users call (README "Library", docs/design.md): the entry points, the
# steps, the data interface, the decision and conversion helpers.
API = {
    'seqclf.train': ['train_and_evaluate'],
    'seqclf.sweep': ['run_sweep', 'run_unit', 'settings_of'],
    'seqclf.training.hyper': ['init_states', 'steps_fn'],
    'seqclf.inference': ['load_model', 'evaluate', 'predict_probabilities',
                         'input_shape', 'takes_images', 'which_checkpoint'],
    'seqclf.export': ['export_model'],
    'seqclf.config': ['base_config', 'validate', 'check_resume'],
    'seqclf.training.state': ['create_train_state'],
    'seqclf.training.steps': ['train_step', 'train_steps', 'eval_step',
                              'evaluate', 'class_weights'],
    'seqclf.training.metrics': ['confusion', 'per_class', 'summary',
                                'improved'],
    'seqclf.training.autotune': ['choose_impl', 'timed_choice'],
    'seqclf.data.registry': ['load', 'read', 'check'],
    'seqclf.data.views': ['view', 'as_sequence'],
    'seqclf.data.order': ['train_indices', 'eval_batches', 'train_batches',
                          'bucketed_epoch'],
    'seqclf.data.stream': ['placement'],
    'seqclf.data.npz_shards': ['prepare'],
    'seqclf.nn.classifier': ['from_config'],
    'seqclf.nn.convert': ['to_flax_lstm', 'from_flax_lstm'],
    'seqclf.kernels.paths': ['why_not', 'eligible', 'check'],
    'seqclf.kernels.fast_lstm': ['lstm_recurrence'],
    'seqclf.kernels.lstm_kernel': ['lstm_layer'],
}


@pytest.mark.parametrize('module,name', [(m, n) for m, names in API.items()
                                         for n in names])
def test_public_functions_document_args_and_returns(module, name):
  function = getattr(importlib.import_module(module), name)
  doc = inspect.getdoc(function) or ''
  if inspect.signature(function).parameters:
    assert '\nArgs:\n' in doc, f'{module}.{name} lacks Args:'
  assert '\nReturns:\n' in doc or '\nYields:\n' in doc, (
      f'{module}.{name} lacks Returns:')


@pytest.mark.slow
@pytest.mark.parametrize('section', ['Library', 'Flax NNX'])
def test_readme_snippets_run_as_written(section):
  """Each README section's Python block runs on its own, as a user pastes
  it (a block that leaned on another's imports failed so)."""
  readme = (REPO / 'README.md').read_text()
  text = readme.split(f'\n## {section}\n', 1)[1].split('\n## ', 1)[0]
  block = re.search(r'```python\n(.*?)```', text, re.S)
  assert block, f'README lost its {section} example'
  out = subprocess.run([sys.executable, '-c', block.group(1)], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
