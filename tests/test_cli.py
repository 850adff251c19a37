"""The command line: bad input gives one clear line and exit status 2."""

import json

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli

# Every test runs `seqclf` in a subprocess.
pytestmark = pytest.mark.slow

TRAIN = ('train', '--config', 'configs/default.py')


@pytest.mark.parametrize('args, message', [
    (('--config.hiden_size=3',), 'Did you mean "hidden_size"'),
    (('--config.batch_size=abc',), 'batch_size=abc'),
    (('--config.batch_size=0',), '`batch_size` must be > 0'),
    (('--config.num_train_steps=-5',), '`num_train_steps` must be > 0'),
    (('--config.learning_rate=nan',), '`learning_rate` must be a finite'),
    (('--config.input_std=0.0',), 'input_std > 0'),
    (('--config.cell=gru', '--config.impl=kernel'),
     "impl`='kernel' runs only the LSTM cell, got cell='gru'"),
])
def test_bad_config_fails_before_work(tmp_path, args, message):
  out = run_cli(*TRAIN, '--workdir', str(tmp_path / 'w'), *args)
  assert out.returncode == 2, out.stderr
  assert message in out.stderr
  assert 'Traceback' not in out.stderr
  assert not (tmp_path / 'w' / 'checkpoints').exists()


def test_bad_config_files(tmp_path):
  out = run_cli('train', '--config', str(tmp_path / 'nope.py'), '--workdir',
                str(tmp_path))
  assert out.returncode == 2 and 'No such file' in out.stderr, out.stderr
  bad = tmp_path / 'bad.py'
  bad.write_text('x = 1\n')
  out = run_cli('train', '--config', str(bad), '--workdir', str(tmp_path))
  assert out.returncode == 2 and 'get_config' in out.stderr, out.stderr


def test_evaluate_without_checkpoint(tmp_path):
  out = run_cli('evaluate', '--workdir', str(tmp_path))
  assert out.returncode == 2 and 'No checkpoint' in out.stderr, out.stderr


def test_predict_and_evaluate_on_trained_workdir(trained_workdir, mnist,
                                                 tmp_path):
  digit = mnist['test']['image'][0]
  Image.fromarray(digit).save(tmp_path / 'digit.png')
  Image.fromarray(np.stack([digit] * 3, -1)).resize((56, 56)).save(
      tmp_path / 'big.png')
  out = run_cli('predict', '--workdir', str(trained_workdir),
                str(tmp_path / 'digit.png'), str(tmp_path / 'big.png'))
  assert out.returncode == 0, out.stderr
  label = int(mnist['test']['label'][0])
  assert f'digit.png: class {label}' in out.stdout
  assert 'converted RGB to grayscale' in out.stderr
  assert 'resized 56x56 to 28x28' in out.stderr
  out = run_cli('evaluate', '--workdir', str(trained_workdir))
  assert out.returncode == 0 and '"test"' in out.stdout, out.stderr


def test_predict_bad_inputs(trained_workdir, tmp_path):
  text = tmp_path / 'notes.txt'
  text.write_text('not an image')
  cases = [((str(text),), 'not a readable image'),
           ((str(tmp_path / 'missing.png'),), 'no such file'),
           ((), 'needs one or more image files')]
  for paths, message in cases:
    out = run_cli('predict', '--workdir', str(trained_workdir), *paths)
    assert out.returncode == 2 and message in out.stderr, out.stderr


def test_no_command_is_usage_error():
  out = run_cli()
  assert out.returncode != 0 and 'Give a command' in out.stderr


def test_compilation_cache_is_reused_and_changes_no_result(tmp_path):
  cache = tmp_path / 'cache'
  short = ('--config.num_train_steps=20', '--config.steps_per_call=10',
           '--config.eval_every=20', '--config.checkpoint_every=20',
           '--config.eval_batch_size=5000', '--quiet', '--noreport',
           f'--compilation_cache={cache}')
  results = []
  for run in ('first', 'second'):
    out = run_cli(*TRAIN, '--workdir', str(tmp_path / run), *short,
                  env={'JAX_COMPILATION_CACHE_DIR': ''})
    assert out.returncode == 0, out.stderr
    results.append(json.loads((tmp_path / run / 'results.json').read_text()))
    entries = sorted(p.name for p in cache.iterdir())
    if run == 'first':
      filled = entries
  assert filled and entries == filled  # the second run compiled nothing new
  for key in ('test_accuracy', 'test_loss', 'val_loss'):
    assert results[0][key] == results[1][key]
