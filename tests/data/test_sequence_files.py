"""Series beyond MNIST in the CLI: predict on sequence files, inspect-data on
series, export of a series model (seqclf.sequence_files, report, export)."""

import csv
import json
import shlex
import subprocess
import sys
import zipfile

import jax
import numpy as np
import pytest

from conftest import REPO, perturbed, run_cli, small_config
from seqclf import export, inference
from seqclf.cli import inspect_data, plots
from seqclf.data import normalization, registry, sequence_files
from seqclf.errors import SequenceError
from seqclf.training import checkpoint, state as state_lib

STEPS, FEATURES, CLASSES = 9, 3, 4


def _series(n, seed, steps=STEPS, features=FEATURES):
  rng = np.random.default_rng(seed)
  y = rng.integers(0, CLASSES, n)
  x = rng.normal(0, 0.3, (n, steps, features)).astype(np.float32)
  x[np.arange(n), :, y % features] += np.linspace(0, 2, steps)
  return x, y


def _truncated_npz(path):
  """A valid .npz cut short, as an interrupted copy leaves it."""
  np.savez(path, x=np.zeros((4, 5, FEATURES), np.float32))
  with open(path, 'r+b') as f:
    f.truncate(300)


@pytest.fixture(scope='module')
def series_npz(tmp_path_factory):
  """An npz dataset with lengths: (N, STEPS, FEATURES) float32, 4 classes."""
  x, y = _series(60, 0)
  lengths = np.arange(60) % STEPS + 1
  x *= np.arange(STEPS)[None, :, None] < lengths[:, None, None]
  path = tmp_path_factory.mktemp('data') / 'series.npz'
  np.savez(path, x=x, y=y, lengths=lengths)
  return path


@pytest.fixture(scope='module')
def series_workdir(tmp_path_factory, series_npz):
  """A workdir with one checkpoint of a fresh (perturbed) model of the npz
  data: every prediction test needs a checkpoint, none a trained one."""
  config = small_config(impl='scan', hidden_size=8, num_classes=CLASSES,
                        dataset=f'npz:{series_npz}')
  state = state_lib.create_train_state(config, jax.random.key(3),
                                   sequence_shape=(STEPS, FEATURES))
  state = state.replace(params=perturbed(state.params, 4, scale=0.5))
  workdir = tmp_path_factory.mktemp('series') / 'run'
  mngr = checkpoint.manager(workdir)
  checkpoint.save(mngr, state, config)
  mngr.wait_until_finished()
  return workdir


def _csv(path, x, header=None):
  lines = ([header] if header else []) + [
      ','.join(repr(float(v)) for v in row) for row in x]
  path.write_text('\n'.join(lines) + '\n')
  return path


def test_each_file_kind_reads_its_sequences(tmp_path):
  x, _ = _series(3, 1)
  np.save(tmp_path / 'one.npy', x[0])
  np.save(tmp_path / 'batch.npy', x)
  np.savez(tmp_path / 'len.npz', x=x, lengths=[9, 4, 1])
  _csv(tmp_path / 'plain.csv', x[1])
  _csv(tmp_path / 'head.csv', x[2], header='a,b,c')
  one, = sequence_files.read(tmp_path / 'one.npy')
  assert one.name == str(tmp_path / 'one.npy') and one.length == STEPS
  np.testing.assert_array_equal(one.values, x[0])
  batch = sequence_files.read(tmp_path / 'batch.npy')
  assert [e.name for e in batch] == [f'{tmp_path}/batch.npy[{i}]'
                                     for i in range(3)]
  assert [e.length for e in sequence_files.read(tmp_path / 'len.npz')] == [
      9, 4, 1]
  # As spreadsheets save them: a byte-order mark before the first row, a
  # header in Latin-1 (not UTF-8).
  bom = tmp_path / 'bom.csv'
  bom.write_bytes(b'\xef\xbb\xbf' + _csv(tmp_path / 'tmp', x[1]).read_bytes())
  latin1 = tmp_path / 'latin1.csv'
  latin1.write_bytes('p (hPa),flow,t (\u00b0C)\n'.encode('latin-1')
                     + _csv(tmp_path / 'tmp', x[2]).read_bytes())
  for name, row in (('plain.csv', 1), ('head.csv', 2), ('bom.csv', 1),
                    ('latin1.csv', 2)):
    got, = sequence_files.read(tmp_path / name)
    np.testing.assert_array_equal(got.values, x[row])


def test_missing_values_are_counted_on_valid_steps_only(tmp_path):
  """NaN in the padding past a length is never read, so it is no missing
  value; an empty CSV field is one (NaN), as pandas reads it."""
  x, _ = _series(2, 3)
  x[0, 4:] = np.nan  # padding of a length-4 row
  np.savez(tmp_path / 'pad.npz', x=x, lengths=[4, STEPS])
  short, full = sequence_files.read(tmp_path / 'pad.npz')
  assert short.length == 4 and full.length == STEPS
  x[1, 2, 0] = np.nan  # now a gap on a valid step
  np.savez(tmp_path / 'gap.npz', x=x, lengths=[4, STEPS])
  with pytest.raises(SequenceError, match=r"holds 1 NaN value\(s\)"):
    sequence_files.read(tmp_path / 'gap.npz')
  assert len(sequence_files.read(tmp_path / 'gap.npz', allow_missing=True)) == 2
  (tmp_path / 'gap.csv').write_text('1,,3\n4,5,6\n')
  got, = sequence_files.read(tmp_path / 'gap.csv', allow_missing=True)
  np.testing.assert_array_equal(got.values, [[1, np.nan, 3], [4, 5, 6]])
  with pytest.raises(SequenceError, match='an empty CSV field is one'):
    sequence_files.read(tmp_path / 'gap.csv')


def test_fit_pads_shorter_sequences_with_their_lengths(tmp_path):
  x, _ = _series(2, 2)
  np.save(tmp_path / 'long.npy', x[0])
  np.save(tmp_path / 'short.npy', x[1, :4])
  examples = [*sequence_files.read(tmp_path / 'long.npy'),
              *sequence_files.read(tmp_path / 'short.npy')]
  inputs, lengths = sequence_files.fit(examples, (1, FEATURES), False, 'd')
  assert inputs.shape == (2, STEPS, FEATURES) and lengths.tolist() == [9, 4]
  np.testing.assert_array_equal(inputs[1, :4], x[1, :4])
  assert not inputs[1, 4:].any()
  same, none = sequence_files.fit(examples[:1], (1, FEATURES), False, 'd')
  assert none is None and same.shape == (1, STEPS, FEATURES)
  pixels = sequence_files.Example('p', np.full((28, 28), 255, np.uint8), 28)
  scaled, _ = sequence_files.fit([pixels], (28, 28), True, 'mnist')
  np.testing.assert_array_equal(scaled, np.ones((1, 28, 28), np.float32))


@pytest.mark.parametrize('make, message', [
    (lambda p: np.save(p / 'f.npy', np.zeros((5, 2), np.float32)),
     '2 features per step, but this model (trained on d) reads 3'),
    (lambda p: np.save(p / 'f.npy', np.zeros((3, 7), np.float32)),
     'the file looks transposed'),
    (lambda p: np.save(p / 'f.npy', np.zeros((5, 3), np.int64)),
     'must be float'),
    (lambda p: np.save(p / 'f.npy', np.zeros(5, np.float32)),
     'reshape univariate (T,) data to (T, 1)'),
    (lambda p: np.savez(p / 'f.npz', x=np.zeros((0, 5, 3), np.float32)),
     "'x' holds no sequences (shape (0, 5, 3)): give it at least one."),
    (lambda p: np.save(p / 'f.npy', np.full((5, 3), np.nan, np.float32)),
     "holds 15 NaN value(s): this model was not trained with "
     "missing='impute'"),
    (lambda p: (p / 'f.csv').write_text('1,,3\n4,5,6\n'),
     'holds 1 NaN value(s) (an empty CSV field is one)'),
    (lambda p: np.save(p / 'f.npy', np.full((5, 3), np.inf, np.float32)),
     "holds inf or values beyond float32's range"),
    (lambda p: np.save(p / 'f.npy', np.full((5, 3), 1e39)),
     "holds inf or values beyond float32's range"),
    (lambda p: np.savez(p / 'f.npz', y=np.zeros(3)), "needs an array 'x'"),
    (lambda p: np.savez(p / 'f.npz', x=np.zeros((2, 5, 3), np.float32),
                        seq_lengths=[5, 4]),
     "arrays ['seq_lengths'] are none of the names seqclf reads"),
    (lambda p: np.savez(p / 'f.npz', x=np.zeros((2, 5, 3), np.float32),
                        lengths=[5, 6]), 'lengths must be in [1, T=5]'),
    (lambda p: (p / 'f.csv').write_text('1,2,3\n4,x,6\n'),
     'not T rows of F comma-separated numbers'),
    (lambda p: (p / 'f.csv').write_text('a,b,c\n'), 'no rows of numbers'),
    (lambda p: (p / 'f.csv').write_text('1,2.x,3\n4,5,6\n'),
     "could not convert string '2.x' to float"),
    (lambda p: (p / 'f.csv').write_bytes(b'1,2,3\n4,\xb05,6\n'),
     'it is not UTF-8 text: save it as UTF-8 CSV'),
    (lambda p: (p / 'f.csv').write_bytes(bytes(range(256)) * 4),
     'it is not UTF-8 text'),
    (lambda p: (p / 'f.npy').write_text('not numpy'),
     'not a readable .npy file: not what numpy.save/savez write (and seqclf '
     'loads no pickles); write it with numpy.save/savez.'),
    (lambda p: np.save(p / 'f.npy', np.zeros((0, 3), np.float32)),
     'with T, F >= 1, got shape (0, 3).'),
    (lambda p: (p / 'f.csv').write_text('1,2,3\n4,5\n'),
     'the number of columns changed from 3 to 2 at row 2).'),
    (lambda p: _truncated_npz(p / 'f.npz'),
     'not a readable .npz'),
    (lambda p: (p / 'f.png').write_bytes(b''), 'not a sequence file'),
    (lambda p: np.save(p / 'f.npy', np.array([np.zeros((4, 3)), np.zeros(
        (5, 3))], object)), 'sequences of different lengths?'),
], ids=['width', 'transposed', 'int', 'ndim', 'empty', 'nan', 'csv_nan', 'inf',
        'beyond_float32', 'no_x', 'misnamed_lengths', 'lengths',
        'csv_text', 'csv_empty', 'csv_typo_in_row_1', 'csv_latin1_value',
        'csv_binary', 'npy_junk', 'npy_no_steps', 'csv_ragged', 'npz_truncated',
        'image_for_series', 'ragged'])
def test_bad_files_are_one_error_naming_the_file(tmp_path, make, message):
  make(tmp_path)
  path, = tmp_path.iterdir()
  with pytest.raises(SequenceError, match='^' + str(path)) as e:
    sequence_files.fit(sequence_files.read(path), (1, FEATURES), False, 'd')
  assert message in str(e.value)


def test_fixed_shape_models_need_that_shape(tmp_path):
  np.save(tmp_path / 'rows.npy', np.zeros((20, 28), np.uint8))
  with pytest.raises(SequenceError, match=r'a \(20, 28\) sequence, but this '
                     r'model \(trained on mnist\) reads \(28, 28\)'):
    sequence_files.fit(sequence_files.read(tmp_path / 'rows.npy'), (28, 28),
                       True, 'mnist')


def test_predict_inputs_match_predicting_the_arrays(series_workdir, tmp_path):
  """Files in, the same probabilities as the arrays given to the model, each
  shorter sequence read as the trainer reads data with lengths."""
  x, _ = _series(3, 5)
  np.save(tmp_path / 'b.npy', x)
  np.savez(tmp_path / 'c.npz', x=x[0, :5])
  _csv(tmp_path / 'd.csv', x[1, :7], header='f0,f1,f2')
  model, params, config = inference.load_model(series_workdir)
  assert inference.input_shape(params, config) == (1, FEATURES)
  names, inputs, lengths, notes = sequence_files.predict_inputs(
      [str(tmp_path / n) for n in ('b.npy', 'c.npz', 'd.csv')],
      inference.input_shape(params, config), inference.takes_images(config),
      config.dataset)
  assert len(names) == 5 and not notes and lengths.tolist() == [9, 9, 9, 5, 7]
  probs = inference.predict_probabilities(model, params, inputs,
                                          lengths=lengths)
  full = inference.predict_probabilities(model, params, x)
  short = inference.predict_probabilities(model, params, x[None, 0, :5])
  np.testing.assert_allclose(probs[:3], full, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(probs[3], short[0], rtol=1e-5, atol=1e-6)
  assert not np.allclose(probs[3], full[0], atol=1e-3)  # lengths were read
  np.save(tmp_path / 'counts.npy', np.full((4, FEATURES), 200, np.uint8))
  *_, notes = sequence_files.predict_inputs(
      [str(tmp_path / 'b.npy'), str(tmp_path / 'counts.npy')],
      (1, FEATURES), False, config.dataset)
  assert notes == [f'{tmp_path}/counts.npy: uint8 values, read as pixels / '
                   '255 (as seqclf reads uint8 training data); if they are '
                   'not pixels, save them as float.']


@pytest.mark.slow
def test_cli_predicts_series_files_and_rejects_a_wrong_width(series_workdir,
                                                             tmp_path):
  x, _ = _series(2, 6)
  np.save(tmp_path / 'b.npy', x)
  _csv(tmp_path / 'one.csv', x[0, :6])
  out = run_cli('predict', '--workdir', str(series_workdir),
                str(tmp_path / 'b.npy'), str(tmp_path / 'one.csv'))
  assert out.returncode == 0, out.stderr
  lines = out.stdout.strip().splitlines()
  assert [line.split(': class ')[0] for line in lines] == [
      f'{tmp_path}/b.npy[0]', f'{tmp_path}/b.npy[1]', f'{tmp_path}/one.csv']
  assert all('top-3' in line for line in lines)
  np.save(tmp_path / 'wide.npy', np.zeros((6, 5), np.float32))
  out = run_cli('predict', '--workdir', str(series_workdir),
                str(tmp_path / 'wide.npy'))
  assert out.returncode == 2, out.stderr
  assert len(out.stderr.strip().splitlines()) == 1, out.stderr
  assert out.stderr.startswith(f'seqclf predict: error: {tmp_path}/wide.npy')
  assert '5 features per step' in out.stderr and 'reads 3' in out.stderr
  (tmp_path / 'digit.png').write_bytes(b'')
  out = run_cli('predict', '--workdir', str(series_workdir),
                str(tmp_path / 'digit.png'))
  assert out.returncode == 2 and 'not a sequence file' in out.stderr


@pytest.mark.slow
def test_cli_predictions_piped_into_head_end_quietly(series_workdir,
                                                     tmp_path):
  """``seqclf predict ... | head -1``: the reader closing the pipe early is
  not an error (no BrokenPipeError traceback)."""
  x, _ = _series(3000, 7)  # more lines than a pipe buffers
  np.save(tmp_path / 'many.npy', x)
  out = subprocess.run(
      f'{shlex.quote(sys.executable)} -m seqclf predict --workdir '
      f'{shlex.quote(str(series_workdir))} {tmp_path / "many.npy"} | head -1',
      shell=True, cwd=REPO, capture_output=True, text=True, timeout=300,
      executable='/bin/bash')
  assert out.stdout.count('\n') == 1 and 'many.npy[0]' in out.stdout
  assert 'Traceback' not in out.stderr and 'Error' not in out.stderr, (
      out.stderr[-2000:])


@pytest.mark.slow
def test_cli_writes_predictions_to_csv_and_npz(series_workdir, tmp_path):
  """--out: one row per input with every class's probability, equal to the
  lines' predictions; a format it cannot write is one line."""
  x, _ = _series(3, 6)
  np.save(tmp_path / 'b.npy', x)
  lines = run_cli('predict', '--workdir', str(series_workdir),
                  str(tmp_path / 'b.npy')).stdout.strip().splitlines()
  out = run_cli('predict', '--workdir', str(series_workdir), '--out',
                str(tmp_path / 'p.csv'), str(tmp_path / 'b.npy'))
  assert out.returncode == 0, out.stderr
  assert out.stdout.strip() == f'Wrote 3 predictions to {tmp_path}/p.csv.'
  with open(tmp_path / 'p.csv', newline='', encoding='utf-8') as f:
    rows = list(csv.reader(f))
  _, _, config = inference.load_model(series_workdir, quiet=True)
  classes = config.num_classes
  assert rows[0] == ['input', 'class', 'name'] + [f'p_{c}'
                                                  for c in range(classes)]
  for row, line in zip(rows[1:], lines):
    probs = [float(v) for v in row[3:]]
    assert line.startswith(f'{row[0]}: class {row[1]} (p={max(probs):.3f}')
    assert sum(probs) == pytest.approx(1, abs=1e-5)
  assert len(rows) == 4
  assert run_cli('predict', '--workdir', str(series_workdir), '--out',
                 str(tmp_path / 'p.npz'), str(tmp_path / 'b.npy')
                 ).returncode == 0
  with np.load(tmp_path / 'p.npz') as saved:
    assert saved['probabilities'].shape == (3, classes)
    np.testing.assert_array_equal(saved['classes'],
                                  saved['probabilities'].argmax(1))
    np.testing.assert_allclose(saved['probabilities'],
                               [[float(v) for v in r[3:]] for r in rows[1:]],
                               rtol=1e-5)
    assert list(saved['inputs']) == [r[0] for r in rows[1:]]
  out = run_cli('predict', '--workdir', str(series_workdir), '--out',
                str(tmp_path / 'p.txt'), str(tmp_path / 'b.npy'))
  assert out.returncode == 2 and out.stderr.strip() == (
      f'seqclf predict: error: --out {tmp_path}/p.txt: give a .csv or .npz '
      'file name.')
  # An input named as --out (here by another spelling) is not replaced.
  np.savez(tmp_path / 'c.npz', x=np.load(tmp_path / 'b.npy'))
  kept = (tmp_path / 'c.npz').read_bytes()
  out = run_cli('predict', '--workdir', str(series_workdir), '--out',
                str(tmp_path / '.' / 'c.npz'), str(tmp_path / 'c.npz'))
  assert out.returncode == 2 and out.stderr.strip() == (
      f'seqclf predict: error: --out {tmp_path}/c.npz is one of the files '
      'to classify, which writing would replace: give another file name.')
  assert (tmp_path / 'c.npz').read_bytes() == kept


def test_series_description_and_figures(series_npz, tmp_path):
  data = registry.read(f'npz:{series_npz}', None, 0.2)
  text = inspect_data.describe_series(data, 'npz:d', 'test', [0, 1])
  lengths = np.load(series_npz)['lengths']
  assert f'({len(data["test"]["label"])}, {STEPS}, {FEATURES})' in text
  test_lengths = data['test']['lengths']
  assert (f'{test_lengths.min()} / {np.median(test_lengths):g} / '
          f'{test_lengths.max()}') in text
  assert f'Sample: 1 - Class: {data["test"]["label"][1]} - Length: ' \
         f'{test_lengths[1]}' in text
  train = data['train']
  valid = np.arange(STEPS)[None] < train['lengths'][:, None]
  mean = train['image'][valid].mean(axis=0)
  assert 'train mean       ' + ''.join(f'{v:>10.3g}' for v in mean) in text
  assert len(lengths) == sum(len(d['label']) for d in data.values())
  paths = inspect_data.write_series_figures(data, 'test', [0, 1], tmp_path)
  assert sorted(paths) == ['class_balance', 'sample_series',
                           'sample_series_standardized']
  for path in paths.values():
    assert path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  # The standardized panels draw each valid step as the model reads it with
  # normalize='per_channel'; a constant channel has no such view.
  stats = normalization.fit_channels(train)
  fig = plots.sample_series(data['test']['image'], data['test']['label'],
                            [1], test_lengths, standardize=stats)
  line = fig.axes[0].get_lines()[FEATURES - 1]
  x = data['test']['image'][1, :test_lengths[1], FEATURES - 1]
  np.testing.assert_allclose(line.get_ydata(),
                             (x - stats[0][-1]) / stats[1][-1], rtol=1e-6)
  # String labels' names stand for the numbers, in the text and the plots.
  names = [f'c{k}' for k in range(registry.classes_used(data))]
  label = data['test']['label'][1]
  assert (f'Sample: 1 - Class: {label} (c{label}) - Length: '
          in inspect_data.describe_series(data, 'npz:d', 'test', [1],
                                          class_names=names))
  fig = plots.sample_series(data['test']['image'], data['test']['label'],
                            [1], test_lengths, names=names)
  assert fig.axes[0].get_title().startswith(f'#1: label c{label} (')
  fig = plots.class_balance({'test': data['test']['label']}, len(names),
                            names=names)
  assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == names
  for split in data.values():
    split['image'][..., 0] = 3.0
  assert 'sample_series_standardized' not in inspect_data.write_series_figures(
      data, 'test', [0], tmp_path, class_names=names)


def test_series_description_of_data_with_gaps(series_npz):
  data = registry.read(f'npz:{series_npz}', None, 0.2)
  assert 'NaN' not in inspect_data.describe_series(data, 'd', 'test', [0])
  train = data['train']
  train['image'][::2, 0, 1] = np.nan  # a gap at the first step of half
  text = inspect_data.describe_series(data, 'd', 'test', [0])
  valid = np.arange(STEPS)[None] < train['lengths'][:, None]
  values = train['image'][valid][:, 1].astype(np.float64)
  observed = values[~np.isnan(values)]
  row = [train['image'][valid][:, c].mean() for c in range(FEATURES)]
  row[1] = observed.mean()
  assert 'train mean       ' + ''.join(f'{v:>10.3g}' for v in row) in text
  share = 100 * np.isnan(values).mean()
  assert f'train NaN %      {0:>10.3g}{share:>10.3g}' in text
  assert 'validation NaN %' not in text
  assert (f'Missing values (NaN) on valid steps: train '
          f'{int(np.isnan(values).sum())}.') in text
  assert "'impute' fills them" in text


@pytest.mark.slow
def test_cli_inspect_data_on_npz_writes_its_pngs(series_npz, tmp_path):
  out = run_cli('inspect-data', f'--dataset=npz:{series_npz}', '--indices',
                '0', '2', f'--out={tmp_path / "plots"}')
  assert out.returncode == 0, out.stderr
  assert 'lengths min / median / max' in out.stdout
  assert {p.name for p in (tmp_path / 'plots').iterdir()} == {
      'sample_series.png', 'sample_series_standardized.png',
      'class_balance.png'}
  # No --indices on a split smaller than the default 100..102: its first
  # three, as the README's own `inspect-data --dataset npz:mine.npz` runs.
  out = run_cli('inspect-data', f'--dataset=npz:{series_npz}',
                f'--out={tmp_path / "plots"}')
  assert out.returncode == 0, out.stderr
  assert all(f'Sample: {i} - Class:' in out.stdout for i in (0, 1, 2))
  out = run_cli('inspect-data', '--dataset=npz:', f'--out={tmp_path}')
  assert out.returncode == 2 and "or 'npz:PATH'" in out.stderr, out.stderr
  out = run_cli('prepare-data', f'--dataset=npz:{series_npz}')
  assert out.returncode == 2 and 'need no preparing' in out.stderr


@pytest.mark.slow
def test_exported_series_model_takes_lengths(series_workdir, tmp_path):
  meta = export.export_model(series_workdir, tmp_path / 'served')
  assert meta['input']['shape'] == ['batch', 'T', FEATURES]
  assert meta['input']['arguments'] == ['inputs', 'seq_lengths']
  assert meta['class_names'] == ['0', '1', '2', '3']
  assert json.loads((tmp_path / 'served' / export.METADATA).read_text()) == (
      json.loads(json.dumps(meta)))
  exported = jax.export.deserialize(bytearray(
      (tmp_path / 'served' / export.ARTIFACT).read_bytes()))
  model, params, _ = inference.load_model(series_workdir)
  for n, steps in ((5, STEPS), (2, 13)):  # any batch, any T
    x, _ = _series(n, 7, steps=steps)
    lengths = np.arange(n, dtype=np.int32) % steps + 1
    logits = np.asarray(exported.call(x, lengths))
    probs = inference.predict_probabilities(model, params, x, lengths=lengths)
    np.testing.assert_array_equal(logits.argmax(-1), probs.argmax(-1))
    np.testing.assert_allclose(jax.nn.softmax(logits), probs, rtol=1e-5,
                               atol=1e-6)
  # A length past T reads all T steps (not past them, into NaN logits).
  x, _ = _series(2, 8)
  past = np.asarray(exported.call(x, np.array([STEPS + 5, 50], np.int32)))
  full = np.asarray(exported.call(x, np.full(2, STEPS, np.int32)))
  np.testing.assert_array_equal(past, full)


def _labelled(series_workdir, path):
  model, params, config = inference.load_model(series_workdir, quiet=True)
  split = sequence_files.labelled(
      path, inference.input_shape(params, config), False, config.dataset,
      registry.class_names(config), config.num_classes)
  return inference.evaluate_on(model, params, config, {'file': split})['file']


def test_evaluate_on_a_labelled_file_equals_the_runs_own_split(
    series_workdir, tmp_path):
  test = inference.evaluate(series_workdir, ('test',), quiet=True)['test']
  config = inference.load_model(series_workdir, quiet=True)[2]
  data = registry.load(config, ('test',))['test']
  path = tmp_path / 'new.npz'
  np.savez(path, x=data['image'], y=data['label'], lengths=data['lengths'])
  again = _labelled(series_workdir, path)
  assert again['count'] == len(data['label'])
  assert again['accuracy'] == test['accuracy'] and again['loss'] == test['loss']
  np.testing.assert_array_equal(again['confusion'], test['confusion'])
  for arrays, match in (
      (dict(x=data['image']), "needs labels 'y', one per sequence of x"),
      (dict(x=data['image'], y=data['label'][:2]), r'found shape \(2,\)'),
      (dict(x=data['image'], y=data['label'] + CLASSES),
       rf'labels must be in \[0, {CLASSES}\), this model\'s classes'),
      (dict(x=data['image'], y=np.full(len(data['label']), 'swim')),
       r"labels \['swim'\] are not classes of this model, whose classes are "
       r"\['0', '1', '2', '3'\]"),
      (dict(x=data['image'], y=data['label'].astype(object)),
       r'new.npz: it holds an object array')):
    np.savez(path, **arrays)
    with pytest.raises(SequenceError, match=match):
      _labelled(series_workdir, path)
  # y's bytes damaged (x readable): a failed CRC check, one line too.
  np.savez(path, x=data['image'], y=data['label'])
  member = zipfile.ZipFile(path).getinfo('y.npy')
  raw = bytearray(path.read_bytes())
  raw[member.header_offset + 30 + len(member.filename) + len(member.extra)
      + 130] ^= 0xFF
  path.write_bytes(raw)
  with pytest.raises(SequenceError, match=r'new.npz: not a readable .npz file '
                     r'without pickles \(Bad CRC-32'):
    _labelled(series_workdir, path)
  with pytest.raises(SequenceError, match='evaluate reads a labelled .npz'):
    _labelled(series_workdir, tmp_path / 'x.npy')


@pytest.mark.slow
def test_cli_evaluates_a_labelled_file(series_workdir, tmp_path):
  config = inference.load_model(series_workdir, quiet=True)[2]
  data = registry.load(config, ('test',))['test']
  np.savez(tmp_path / 'new.npz', x=data['image'], y=data['label'],
           lengths=data['lengths'])
  out = run_cli('evaluate', '--workdir', str(series_workdir), '--data',
                str(tmp_path / 'new.npz'))
  assert out.returncode == 0, out.stderr
  result = json.loads(out.stdout)[str(tmp_path / 'new.npz')]
  test = inference.evaluate(series_workdir, ('test',), quiet=True)['test']
  assert result['accuracy'] == test['accuracy']
  out = run_cli('evaluate', '--workdir', str(series_workdir), '--data',
                str(tmp_path / 'absent.npz'))
  assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
