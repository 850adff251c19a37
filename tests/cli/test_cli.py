"""The command line: bad input gives one clear line and exit status 2."""

import importlib.metadata
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import packaged_configs, png_header_only, REPO, run_cli
from seqclf.cli import common as cli_common, main as cli_main

# Every test runs `seqclf` in a subprocess.
pytestmark = pytest.mark.slow

TRAIN = ('train', '--config', 'configs/default.py')


@pytest.mark.parametrize('args, message', [
    (('--config.hiden_size=3',), 'seqclf train: error: Unknown config key '
     '`hiden_size`. Did you mean `hidden_size`? Valid keys: augment_hflip'),
    (('--config.foo=1',), 'Unknown config key `foo`. Valid keys: '
     'augment_hflip, batch_size'),
    (('--config.batch_size=abc',), 'batch_size=abc'),
    (('--config.batch_size=0',), '`batch_size` must be > 0'),
    (('--config.num_train_steps=-5',), '`num_train_steps` must be > 0'),
    (('--config.learning_rate=nan',), '`learning_rate` must be a finite'),
    (('--config.input_std=0.0',), 'input_std > 0'),
    (('--config.cell=gru', '--config.impl=kernel'),
     "impl='kernel' cannot run this layer: it runs only seqclf's LSTMCell"),
    (('--config.batch_size=100000',),
     'batch_size=100000 exceeds the 55000 training examples'),
    (('--config.data_dir=/nonexistent',), 'mnist is not prepared in'),
    (('--config.matmul_precision=tensorfloat32',),
     "seqclf train: error: matmul_precision='tensorfloat32' runs TF32 "
     "matmuls, which only GPUs have (this is the cpu backend): use 'float32' "
     "or 'bfloat16' (--config.matmul_precision).\n"),
])
def test_bad_config_fails_before_anything_is_written(tmp_path, args, message):
  out = run_cli(*TRAIN, '--workdir', str(tmp_path / 'w'), *args)
  assert out.returncode == 2, out.stderr
  assert message in out.stderr
  assert len(out.stderr.strip().splitlines()) == 1, out.stderr
  assert not (tmp_path / 'w').exists()  # no workdir, no TensorBoard file


def test_bad_config_files(tmp_path):
  out = run_cli('train', '--config', str(tmp_path / 'nope.py'), '--workdir',
                str(tmp_path))
  assert out.returncode == 2 and 'does not exist' in out.stderr, out.stderr
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
  huge = tmp_path / 'huge.png'
  png_header_only(huge, 15000, 15000)
  cases = [((str(text),), 'not a readable image'),
           ((str(tmp_path / 'missing.png'),), 'no such file'),
           ((), 'needs one or more files to classify'),
           ((str(huge),), 'too large to open'),
           ((str(tmp_path),), 'is a directory: give image files')]
  for paths, message in cases:
    out = run_cli('predict', '--workdir', str(trained_workdir), *paths)
    assert out.returncode == 2 and message in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_predict_inverts_a_black_on_white_digit_with_a_note(trained_workdir,
                                                            mnist, tmp_path):
  digit = mnist['test']['image'][0]
  Image.fromarray(digit).save(tmp_path / 'digit.png')
  Image.fromarray(255 - digit).save(tmp_path / 'inverted.png')
  out = run_cli('predict', '--workdir', str(trained_workdir),
                str(tmp_path / 'digit.png'), str(tmp_path / 'inverted.png'))
  assert out.returncode == 0, out.stderr
  assert out.stderr.strip() == (
      f'note: {tmp_path}/inverted.png: inverted it: its border is light '
      '(mean grey 255), MNIST digits are light on dark')
  first, second = out.stdout.strip().splitlines()
  assert first.split(': ', 1)[1] == second.split(': ', 1)[1]


@pytest.mark.parametrize('args, message', [
    (('evaluate',), '`seqclf evaluate` needs --workdir'),
    (('train', '--workdir', 'W'), '`seqclf train` needs --config'),
    ((*TRAIN, '--workdir', 'W', '--num_processes', '0'),
     '--num_processes must be >= 1, got 0'),
    ((*TRAIN, '--workdir', 'W', '--num_processes', '2', '--process_id', '5'),
     '--process_id must be in 0..1, got 5'),
    ((*TRAIN, '--workdir', 'W', '--coordinator', 'nohost'),
     "--coordinator must be HOST:PORT, got 'nohost'"),
    (('inspect-data', '--indices', 'x'), '--indices takes whole numbers'),
    (('sweep', '--config', 'default', '--workdir', 'W', '--learning_rates',
      'abc'), '--learning_rates takes numbers'),
], ids=['evaluate_without_workdir',
        'train_without_config', 'num_processes_0', 'process_id_out_of_range',
        'coordinator_without_port', 'indices_not_numbers',
        'learning_rates_not_numbers'])
def test_usage_errors_are_one_line(tmp_path, args, message):
  workdir = tmp_path / 'w'
  out = run_cli(*(str(workdir) if a == 'W' else a for a in args))
  assert out.returncode == 2, out.stderr
  line = out.stderr.strip()
  assert len(line.splitlines()) == 1 and message in line, line
  assert not workdir.exists()


def test_a_multi_process_job_without_a_coordinator_is_one_line(tmp_path):
  """Before any device exists, so in a process of its own."""
  out = run_cli(*TRAIN, '--workdir', str(tmp_path / 'w'), '--process_id', '1',
                process=True)
  assert out.returncode == 2, out.stderr
  assert out.stderr == (
      'seqclf train: error: Cannot join a multi-process job: '
      'coordinator_address should be defined: give --coordinator HOST:PORT of '
      'process 0 (or set $JAX_COORDINATOR_ADDRESS), --num_processes and '
      '--process_id.\n')


def test_version():
  out = run_cli('--version')
  assert out.returncode == 0
  assert out.stdout.strip() == f'seqclf {importlib.metadata.version("seqclf")}'


def test_packaged_config_by_name_from_any_directory(tmp_path):
  assert {'default', 'gru_row', 'smnist'} <= set(cli_common.config_names())
  # configs/NAME.py in a checkout is the packaged file (a link to it).
  assert (REPO / 'configs' / 'default.py').resolve() == (
      Path(cli_common.resolve_config('default')).resolve())
  assert Path(cli_common.resolve_config('default')).is_relative_to(
      Path(cli_main.__file__).parents[1])
  for config in ('default', str(REPO / 'configs' / 'gru_row.py')):
    # A bad override fails in validation, so the config was found and loaded.
    out = run_cli('train', '--config', config, '--workdir',
                  str(tmp_path / 'w'), '--config.batch_size=0', cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert '`batch_size` must be > 0' in out.stderr


def test_unknown_config_name_lists_the_names(tmp_path):
  out = run_cli('train', '--config', 'defualt', '--workdir', str(tmp_path))
  assert out.returncode == 2
  assert ("Unknown config 'defualt': use one of "
          + ', '.join(packaged_configs()) + ', or a path') in out.stderr
  assert len(out.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize('text, message', [
    ('x = 1\n', 'must define get_config()'),
    ('def get_config(:\n', ', line 1: invalid syntax'),
    ('\ndef get_config():\n  return 1 / 0\n',
     ', line 3: ZeroDivisionError: division by zero'),
])
def test_bad_config_file_is_one_line_naming_the_file(tmp_path, text, message):
  path = tmp_path / 'mine.py'
  path.write_text(text)
  for extra in ((), ('--config.batch_size=7',)):  # loaded lazily or eagerly
    out = run_cli('train', '--config', str(path), '--workdir',
                  str(tmp_path / 'w'), *extra)
    assert out.returncode == 2, out.stderr
    line = out.stderr.strip()
    assert len(line.splitlines()) == 1 and 'Traceback' not in line, line
    assert f'Config file {path}' in line and message in line and 'config_config' not in line, line


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
