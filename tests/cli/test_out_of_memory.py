"""A device out of memory is one line naming what to lower, exit status 2,
and loses nothing saved: XLA's RESOURCE_EXHAUSTED injected on the CPU."""

import sys
import textwrap

import jax
import pytest

from seqclf.cli import main as cli_main
from seqclf.training import checkpoint, loop, parallel, steps

pytestmark = pytest.mark.slow
OOM = jax.errors.JaxRuntimeError(
    'RESOURCE_EXHAUSTED: Out of memory while trying to allocate 4.00GiB.\n'
    'BufferAssignment OOM Debugging.')


@pytest.fixture
def train(tmp_path, capsys, monkeypatch):
  """``seqclf train --config FILE --workdir W`` in this process (no
  overrides: ml_collections defines those once per process)."""
  config = tmp_path / 'small.py'
  config.write_text(textwrap.dedent('''
      from seqclf.config import base_config
      def get_config():
        c = base_config()
        c.hidden_size, c.num_train_steps, c.steps_per_call = 16, 20, 10
        c.checkpoint_every = c.eval_every = 10
        return c
      '''))
  workdir = tmp_path / 'run'
  # This process's CPU devices exist already: keep them as they are.
  monkeypatch.setattr(parallel, 'configure_cpu_devices', lambda *a: None)

  def run():
    monkeypatch.setattr(sys, 'argv', ['seqclf', 'train', '--config',
                                      str(config), '--workdir', str(workdir),
                                      '--quiet'])
    try:
      cli_main.run()
      status = 0
    except SystemExit as e:
      status = e.code
    return status, capsys.readouterr().err
  return run, workdir


def _fail_second_call(monkeypatch, owner, name):
  real, calls = getattr(owner, name), []

  def fails(*args, **kwargs):
    calls.append(1)
    if len(calls) == 2:
      raise OOM
    return real(*args, **kwargs)
  monkeypatch.setattr(owner, name, fails)


@pytest.mark.parametrize('where', ['training', 'evaluation'])
def test_out_of_memory_is_one_line_and_the_run_resumes(train, monkeypatch,
                                                       where):
  run, workdir = train
  real_chunks, real_evaluate = loop.Chunks.__call__, steps.evaluate
  if where == 'training':
    _fail_second_call(monkeypatch, loop.Chunks, '__call__')
  else:
    _fail_second_call(monkeypatch, steps, 'evaluate')
  status, err = run()
  assert status == 2, err
  assert err.strip().splitlines() == [
      'seqclf train: error: the device ran out of memory (RESOURCE_EXHAUSTED: '
      'Out of memory while trying to allocate 4.00GiB.): lower '
      '--config.batch_size (the examples of a training step) or '
      '--config.eval_batch_size (of an evaluation batch), then run the same '
      'command to resume; checkpoints already saved are kept.']
  assert checkpoint.manager(workdir).latest_step() == 10
  monkeypatch.setattr(loop.Chunks, '__call__', real_chunks)
  monkeypatch.setattr(steps, 'evaluate', real_evaluate)
  status, err = run()
  assert status == 0, err
  assert checkpoint.manager(workdir).latest_step() == 20
