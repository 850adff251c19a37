"""seqclf.data.npz: the user's own (N, T, F) arrays from an .npz file."""

import json

import numpy as np
import pytest

from conftest import run_cli, small_config, toy_series
from seqclf import inference, train
from seqclf.config import ConfigError, validate
from seqclf.data import (npz, ops, order as order_lib, registry,
                         splits as splits_lib)
from seqclf.errors import CheckpointError, DataError
from seqclf.training import state as state_lib, steps as steps_lib


def _npz(path, **arrays):
  np.savez(path, **arrays)
  return f'npz:{path}'


def _config(dataset, **overrides):
  config = dict(dataset=dataset, num_classes=4, hidden_size=16, batch_size=20,
                eval_batch_size=50, impl='scan')
  return small_config(**{**config, **overrides})


def test_explicit_splits_train_evaluate_and_load(tmp_path):
  (x, y), (xt, yt) = toy_series(300, 0), toy_series(100, 1)
  name = _npz(tmp_path / 'd.npz', x_train=x, y_train=y, x_test=xt, y_test=yt)
  config = _config(name, num_train_steps=40, eval_every=40,
                   checkpoint_every=40, learning_rate=1e-2)
  data = registry.load(config)
  assert len(data['train']['label']) + len(data['validation']['label']) == 300
  assert len(data['validation']['label']) == 30  # validation_fraction=0.1
  np.testing.assert_array_equal(data['test']['image'], xt)  # not scaled
  results = train.train_and_evaluate(config, tmp_path / 'run', quiet=True)
  assert results['test_accuracy'] > 0.5  # chance is 0.25
  model, params, saved = inference.load_model(tmp_path / 'run')
  assert saved.dataset == name and params['lstm_0']['cell']['input'][
      'kernel'].shape == (3, 64)
  state = state_lib.TrainState(step=0, apply_fn=model.apply, params=params,
                           tx=None, opt_state=None)
  again = steps_lib.evaluate(state, data['test'], 50)
  assert again['accuracy'] == results['test_accuracy']


def test_single_set_is_split_stratified_by_class(tmp_path):
  x, y = toy_series(200, 2)
  x[:, 0, 0] = np.arange(200)  # tags each example
  name = _npz(tmp_path / 'one.npz', x=x, y=y)
  a = registry.load(_config(name, validation_fraction=0.2))
  b = registry.load(_config(name, validation_fraction=0.2))
  tags = {s: set(a[s]['image'][:, 0, 0].astype(int)) for s in a}
  assert set.union(*tags.values()) == set(range(200))
  assert sum(len(t) for t in tags.values()) == 200
  # Test takes a fifth of each class, validation a fifth of each rest.
  for c in range(4):
    n = int((y == c).sum())
    in_test = int((a['test']['label'] == c).sum())
    assert in_test == round(0.2 * n)
    assert (a['validation']['label'] == c).sum() == round(0.2 * (n - in_test))
  for split in splits_lib.SPLITS:
    np.testing.assert_array_equal(a[split]['image'], b[split]['image'])
    assert a[split]['label'].dtype == np.int32


def test_a_rare_class_is_carved_into_validation_and_test(tmp_path):
  # 3 of 300 examples in class 2: a plain 10% draw mostly misses it, and
  # balanced accuracy and `monitor` then never see the class.
  x, y = toy_series(300, 3)
  y = np.where(y == 2, 0, y)
  y[[7, 150, 299]] = 2
  name = _npz(tmp_path / 'rare.npz', x=x, y=y)
  data = registry.load(_config(name))
  assert [(data[s]['label'] == 2).sum() for s in splits_lib.SPLITS] == [1, 1, 1]
  name = _npz(tmp_path / 'rare_train.npz', x_train=x, y_train=y,
              x_test=x[:10], y_test=y[:10])
  data = registry.load(_config(name))
  assert [(data[s]['label'] == 2).sum() for s in ('train', 'validation')
          ] == [2, 1]


@pytest.mark.parametrize('arrays, message', [
    (dict(x=np.zeros((10, 5), np.float32), y=np.zeros(10, int)),
     r'\(N, T, F\).*reshape univariate'),
    (dict(x=np.zeros((10, 5, 2), np.int64), y=np.zeros(10, int)),
     'must be uint8 or float, got int64'),
    (dict(x=np.zeros((50, 5, 2)), y=np.arange(50) % 10),
     r'labels must be in \[0, num_classes=4\).*`num_classes` to 10'),
    (dict(x=np.zeros((50, 5, 2)), y=np.arange(50) % 4 + 1),
     r'got 1..4: they look counted from 1: subtract 1 from them, or set '
     'config key `num_classes` to 5'),
    (dict(x=np.zeros((50, 5, 2)), y=np.arange(50) % 4 - 1),
     r'got -1..2: number the classes 0..K-1 \(no negative labels\)'),
    (dict(x=np.zeros((10, 5, 2)), y=np.zeros(9, int)),
     r'y must be 10 integers \(one per sequence of x\)'),
    (dict(x=np.zeros((10, 5, 2)), y=np.zeros(10)),
     r'y must be integer classes 0..K-1 \(or class names\), got float64: store '
     'them as int'),
    (dict(x=np.zeros((40, 5, 2)), y=np.linspace(0, 1, 40)),
     r'y must be integer classes 0..K-1 \(or class names\), got float64'),
    (dict(x=np.zeros((0, 5, 2)), y=np.zeros(0, int)),
     'x holds no sequences: give it examples'),
    (dict(x_train=np.zeros((10, 5, 2)), y_train=np.zeros(10, int),
          x_test=np.zeros((4, 5, 2)), y_test=np.zeros(4, int),
          x_val=np.zeros((4, 5, 2)), y_val=np.zeros(4, int)),
     r"arrays \['x_val', 'y_val'\] are none of the names seqclf reads: x, "
     'y, lengths'),
    (dict(x=np.zeros((10, 5, 2)), y=np.zeros(10, int),
          seq_lengths=np.ones(10, int), ids=np.arange(10)),
     r"arrays \['seq_lengths'\] are none of the names"),
    (dict(x=np.full((10, 5, 2), np.nan), y=np.zeros(10, int)), 'NaN'),
    (dict(x=np.full((10, 5, 2), 1e39), y=np.zeros(10, int)),
     r"hold inf \(or values beyond float32's range\)"),
    (dict(x_train=np.zeros((10, 5, 2)), y_train=np.arange(10) % 2,
          x_test=np.zeros((0, 5, 2)), y_test=np.zeros(0, int)),
     'the test split is empty: give it examples'),
    (dict(x_train=np.zeros((10, 5, 2)), y_train=np.arange(10) % 2,
          x_test=np.zeros((4, 5, 2)), y_test=np.zeros(4, int),
          x_validation=np.zeros((0, 5, 2)), y_validation=np.zeros(0, int)),
     'the validation split is empty'),
    (dict(x=np.zeros((10, 5, 2)), y=np.zeros(10, int),
          lengths=np.full(10, 6)), r'lengths must be in \[1, T=5\]'),
    (dict(x=np.zeros((10, 5, 2)), y=np.zeros(10, int),
          lengths=np.ones(4, int)), 'lengths must be 10 integers'),
    (dict(x_train=np.zeros((10, 5, 2)), y_train=np.zeros(10, int),
          x_test=np.zeros((4, 5, 2)), y_test=np.zeros(4, int),
          lengths_train=np.full(10, 5),
          lengths_test=np.ones((4, 1), int)), 'lengths_test must be 4'),
    (dict(x_train=np.zeros((10, 5, 2)), y_train=np.zeros(10, int),
          lengths_train=np.full(10, 5), x_test=np.zeros((4, 5, 2)),
          y_test=np.zeros(4, int)),
     r'lengths_train given but not lengths_test: give lengths for every '
     r'split \(T for a sequence that fills all T steps\), or for none'),
    (dict(images=np.zeros((10, 5, 2))), "needs arrays 'x' and 'y'"),
    (dict(x=np.zeros((4, 5, 2)), y=np.arange(4)),
     r'carving a test split .* every class of 4 examples has one\): give '
     'x_test/y_test'),
    (dict(x_train=np.zeros((10, 5, 2)), y_train=np.zeros(10, int)),
     r"missing \['x_test', 'y_test'\]"),
    (dict(x_train=np.zeros((10, 5, 2)), y_train=np.zeros(10, int),
          x_test=np.zeros((4, 6, 2)), y_test=np.zeros(4, int)),
     'same \\(T, F\\)'),
    (dict(x_train=np.zeros((10, 5, 2)), y_train=np.zeros(10, int),
          x_test=np.zeros((4, 5, 2)), y_test=np.zeros(4, int),
          x_validation=np.zeros((4, 5, 2))),
     'x_validation is given without y_validation: give both, or neither'),
    (dict(x_train=np.zeros((10, 5, 2)), y_train=np.zeros(10, int),
          x_test=np.zeros((4, 5, 2)), y_test=np.zeros(4, int),
          y_validation=np.zeros(4, int)),
     'y_validation is given without x_validation'),
    (dict(x=np.zeros((10, 5, 2)), y=np.zeros(10, int),
          lengths_test=np.ones(4, int)), 'lengths_test is given without x_test'),
    (dict(x_train=np.zeros((10, 5, 2)), y_train=np.array(['a', 'b'] * 5),
          x_test=np.zeros((4, 5, 2)), y_test=np.zeros(4, int)),
     'the labels in y_train are class names but those in y_test numbers'),
    (dict(x_train=np.zeros((8, 5, 2)), y_train=np.array(['b', 'c', 'd', 'e'] * 2),
          x_test=np.zeros((2, 5, 2)), y_test=np.array(['a', 'b'])),
     r"its labels name 5 classes \['a', 'b', 'c', 'd', 'e'\], more than "
     'num_classes=4: set config key `num_classes` to 5'),
])
def test_bad_arrays_are_one_line_naming_the_problem(tmp_path, arrays,
                                                    message):
  name = _npz(tmp_path / 'bad.npz', **arrays)
  with pytest.raises(DataError, match=message) as info:
    registry.load(_config(name))
  assert str(info.value).startswith(name) and '\n' not in str(info.value)


def test_a_relative_npz_path_is_saved_absolute(tmp_path, monkeypatch):
  """A run's config names its data so that ``evaluate`` and ``report`` find
  it from any directory, not only where ``train`` ran."""
  monkeypatch.chdir(tmp_path)
  x, y = toy_series(40, 4, steps=5, features=2)
  _npz(tmp_path / 'd.npz', x=x, y=y)
  config = _config('npz:d.npz')
  out = registry.with_data_keys(config, registry.load(config), [])
  assert out.dataset == f'npz:{tmp_path}/d.npz'
  assert config.dataset == 'npz:d.npz'  # the given config is left as it is


def test_missing_or_unreadable_file(tmp_path):
  with pytest.raises(DataError, match='no such file'):
    registry.load(_config(f'npz:{tmp_path}/absent.npz'))
  (tmp_path / 'text.npz').write_text('not a zip')
  with pytest.raises(DataError, match='not a readable .npz'):
    registry.load(_config(f'npz:{tmp_path}/text.npz'))
  # Truncated (a copy cut short): zipfile's error, one line all the same.
  x, y = toy_series(40, 4, steps=5, features=2)
  np.savez(tmp_path / 'cut.npz', x=x, y=y)
  with open(tmp_path / 'cut.npz', 'r+b') as f:
    f.truncate(600)
  with pytest.raises(DataError, match='cut.npz: not a readable .npz'):
    registry.load(_config(f'npz:{tmp_path}/cut.npz'))
  # Sequences of different lengths, as numpy keeps them: an object array.
  ragged = np.empty(3, object)
  ragged[:] = [np.zeros((k, 2), np.float32) for k in (4, 5, 6)]
  np.savez(tmp_path / 'ragged.npz', x=ragged, y=np.arange(3))
  with pytest.raises(DataError, match=r"pad them into one \(N, T, F\) array "
                     "and give each row's length in an array 'lengths' "
                     r'\(seqclf.data.npz.pad does both\)'):
    registry.load(_config(f'npz:{tmp_path}/ragged.npz'))
  labels = np.empty(3, object)
  labels[:] = ['a', 1, 'b']
  np.savez(tmp_path / 'labels.npz', x=np.zeros((3, 4, 2)), y=labels)
  with pytest.raises(DataError, match=r'y is an object array: save labels as '
                     'integers or strings'):
    registry.load(_config(f'npz:{tmp_path}/labels.npz'))


def test_pad_makes_ragged_sequences_a_dataset(tmp_path):
  rng = np.random.default_rng(0)
  seqs = [rng.normal(size=(k, 2)).astype(np.float32) for k in (4, 9, 6)] * 20
  x, lengths = npz.pad(seqs)
  assert x.shape == (60, 9, 2) and x.dtype == np.float32
  np.testing.assert_array_equal(lengths[:3], [4, 9, 6])
  np.testing.assert_array_equal(x[0, :4], seqs[0])
  assert not x[0, 4:].any()  # zeros past the length
  assert npz.pad([np.arange(3.0)], steps=5)[0].shape == (1, 5, 1)  # univariate
  name = _npz(tmp_path / 'padded.npz', x=x, y=np.arange(60) % 4,
              lengths=lengths)
  data = registry.load(_config(name))
  assert sum(len(data[s]['label']) for s in data) == 60
  assert set(np.concatenate([data[s]['lengths'] for s in data])) == {4, 6, 9}
  for bad, match in (([np.zeros((3, 2)), np.zeros((3, 3))], 'sequence 1 has '
                      r'shape \(3, 3\), but sequence 0 has \(2,\)'),
                     ([np.zeros((0, 2))], r'sequence 0 has 0 steps'),
                     ([], 'no sequences')):
    with pytest.raises(DataError, match=match):
      npz.pad(bad)
  with pytest.raises(DataError, match=r'3 steps, outside \[1, steps=2\]'):
    npz.pad([np.zeros((3, 2))], steps=2)


def test_dataset_names_and_validation_fraction_are_validated():
  for bad in ('npz:', 'mnits', 'cifar'):
    with pytest.raises(ConfigError, match="`dataset` must be one of"):
      validate(small_config(dataset=bad))
  with pytest.raises(ConfigError, match='validation_fraction'):
    validate(small_config(validation_fraction=1.0))
  validate(small_config(dataset='npz:/any/path.npz'))


def test_lengths_are_carried_and_eval_batches_pad_them(tmp_path):
  x, y = toy_series(30, 3)
  lengths = np.arange(30) % 12 + 1
  name = _npz(tmp_path / 'len.npz', x=x, y=y, lengths=lengths)
  data = registry.load(_config(name, validation_fraction=0.2))
  split = data['test']
  batches = list(order_lib.eval_batches(split, 4))
  got = np.concatenate([b['lengths'][b['mask']] for b in batches])
  np.testing.assert_array_equal(got, split['lengths'])
  assert batches[-1]['lengths'][~batches[-1]['mask']].tolist() == [12] * (
      -len(split['label']) % 4)
  batch = next(order_lib.train_batches(data['train'], 0, 5))
  assert batch['lengths'].shape == (5,)


def test_float_sequences_are_not_scaled_like_pixels():
  pixels = np.array([0, 255], np.uint8)
  np.testing.assert_array_equal(ops.to_float(pixels), [0.0, 1.0])
  values = np.array([-3.5, 200.0])
  out = ops.to_float(values)
  assert out.dtype == np.float32
  np.testing.assert_array_equal(out, values)


@pytest.mark.slow
def test_cli_trains_on_npz_and_bad_npz_is_one_line(tmp_path):
  (x, y), (xt, yt) = toy_series(200, 5), toy_series(60, 6)
  name = _npz(tmp_path / 'd.npz', x_train=x, y_train=y, x_test=xt, y_test=yt)
  common = ['--config=configs/default.py', f'--config.dataset={name}',
            '--config.num_classes=4', '--config.hidden_size=16',
            '--config.batch_size=20', '--config.num_train_steps=20',
            '--config.eval_every=20', '--config.checkpoint_every=20',
            '--config.input_mean=0.0', '--config.input_std=1.0', '--noreport']
  out = run_cli('train', *common, f'--workdir={tmp_path}/run')
  assert out.returncode == 0, out.stderr
  results = json.loads((tmp_path / 'run' / 'results.json').read_text())
  assert results['step'] == 20 and results['config']['dataset'] == name
  out = run_cli('train', *common[:-1], '--config.num_classes=3',
                f'--workdir={tmp_path}/bad', '--noreport')
  assert out.returncode == 2, out.stderr
  assert len(out.stderr.strip().splitlines()) == 1, out.stderr
  assert 'set --config.num_classes to 4' in out.stderr


@pytest.mark.slow
def test_string_labels_name_the_classes_everywhere(tmp_path):
  from seqclf import export  # pylint: disable=g-import-not-at-top
  from seqclf.cli import predict, report  # pylint: disable=g-import-not-at-top
  x, y = toy_series(160, 3, steps=4, features=2)
  given = np.array(['walk', 'run', 'sit', 'jump'])
  name = _npz(tmp_path / 's.npz', x=x, y=given[y])
  names = ['jump', 'run', 'sit', 'walk']  # label k is the k-th, sorted
  assert registry.label_names(name) == names
  data = registry.load(_config(name))
  counts = sum(np.bincount(d['label'], minlength=4) for d in data.values())
  np.testing.assert_array_equal(
      counts, [(given[y] == n).sum() for n in names])
  config = _config(name, hidden_size=8, num_train_steps=4, eval_every=4,
                   checkpoint_every=4)
  train.train_and_evaluate(config, tmp_path / 'run', quiet=True)
  saved = inference.load_model(tmp_path / 'run')[2]
  assert list(saved.class_names) == names
  assert registry.class_names(saved) == names
  meta = export.export_model(tmp_path / 'run', tmp_path / 'served')
  assert meta['class_names'] == names
  assert predict.describe(np.array([0.1, 0.2, 0.6, 0.1]), names) == (
      'class 2 sit (p=0.600; top-3 sit:0.600 run:0.200 jump:0.100)')
  assert predict.describe(np.array([0.1, 0.9]), ['0', '1']).startswith(
      'class 1 (p=0.900')  # numbers are not repeated as names
  text = report.write_report(tmp_path / 'run', tensorboard=False
                             ).path.read_text()
  assert '| class | jump | run | sit | walk |' in text
  # Names given that are not the labels' are refused; bytes labels work too.
  with pytest.raises(ConfigError, match=r"labels of npz:.* name the classes "
                     r"\['jump', 'run', 'sit', 'walk'\] \(sorted\): leave it"):
    train.train_and_evaluate(_config(name, class_names=('a', 'b', 'c', 'd')),
                             tmp_path / 'other', quiet=True)
  # Names are the classes: a wider head (a config's 10 kept) is refused.
  with pytest.raises(ConfigError, match=r"labels of npz:.* name 4 classes "
                     r"\['jump', 'run', 'sit', 'walk'\], fewer than "
                     'num_classes=10: set config key `num_classes` to 4.'):
    train.train_and_evaluate(_config(name, num_classes=10), tmp_path / 'wide',
                             quiet=True)
  assert not (tmp_path / 'wide').exists()
  assert registry.label_names(_npz(tmp_path / 'b.npz', x=x, y=given[y].astype(
      'S'))) == names


def test_a_head_wider_than_the_labels_is_noted(tmp_path, capsys):
  x, y = toy_series(100, 7, steps=4, features=2)
  name = _npz(tmp_path / 'd.npz', x=x, y=y)  # classes 0..3
  for num_classes, note in ((6, 'note: the labels use classes 0..3 of '
                             'num_classes=6: set --config.num_classes=4, '
                             'unless this data merely lacks classes 4..5.'),
                            (4, None)):
    train.train_and_evaluate(
        _config(name, hidden_size=8, num_classes=num_classes,
                num_train_steps=2, eval_every=2, checkpoint_every=2),
        tmp_path / f'run{num_classes}')
    err = capsys.readouterr().err
    assert (note in err) if note else 'note: the labels' not in err


def test_resume_on_changed_data_is_refused_and_keeps_the_run(tmp_path):
  x, y = toy_series(200, 7, steps=6, features=2)
  trained_on = y.copy()
  name = _npz(tmp_path / 'd.npz', x=x, y=y)
  config = _config(name, hidden_size=8, normalize='none', num_train_steps=10,
                   checkpoint_every=10)
  train.train_and_evaluate(config, tmp_path / 'run', quiet=True)
  files = sorted(p.name for p in (tmp_path / 'run' / 'checkpoints').iterdir())
  assert inference.load_model(tmp_path / 'run')[2].data_digest
  y[0] = (y[0] + 1) % 4  # one label fixed in the file
  _npz(tmp_path / 'd.npz', x=x, y=y)
  with pytest.raises(CheckpointError, match='trained on other data'):
    train.train_and_evaluate(_config(name, hidden_size=8, normalize='none',
                                     num_train_steps=20, checkpoint_every=10),
                             tmp_path / 'run', quiet=True)
  assert sorted(p.name for p in (tmp_path / 'run' / 'checkpoints').iterdir()
                ) == files
  # Reading the run: its scores on other data would pass for its own.
  with pytest.raises(DataError, match='is not the data this run trained on'):
    inference.evaluate(tmp_path / 'run', quiet=True)
  _npz(tmp_path / 'd.npz', x=np.zeros((200, 6, 3), np.float32), y=y)
  out = run_cli('report', f'--workdir={tmp_path / "run"}')
  assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
  assert 'is not the data this run trained on' in out.stderr
  # Neither names a config key, which these commands cannot take.
  y[0] = 7  # a class beyond the run's num_classes
  _npz(tmp_path / 'd.npz', x=x, y=y)
  out = run_cli('evaluate', f'--workdir={tmp_path / "run"}')
  assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
  assert 'is not the data this run trained on' in out.stderr, out.stderr
  (tmp_path / 'd.npz').unlink()
  out = run_cli('evaluate', f'--workdir={tmp_path / "run"}')
  assert out.returncode == 2 and 'config' not in out.stderr, out.stderr
  assert ('no such file or directory, and this run trained on it: put it '
          'back, or name where it is now with --dataset=npz:PATH (`seqclf '
          'evaluate --data FILE`') in out.stderr, out.stderr
  # The data moved: named where it is now, it is read (only if it is it).
  moved = _npz(tmp_path / 'moved.npz', x=x, y=trained_on)
  _npz(tmp_path / 'other.npz', x=x, y=(trained_on + 1) % 4)
  for command in ('evaluate', 'report'):
    out = run_cli(command, f'--workdir={tmp_path / "run"}',
                  f'--dataset={moved}')
    assert out.returncode == 0, out.stderr
    out = run_cli(command, f'--workdir={tmp_path / "run"}',
                  f'--dataset=npz:{tmp_path / "other.npz"}')
    assert out.returncode == 2
    assert 'is not the data this run trained on' in out.stderr, out.stderr
  assert inference.evaluate(tmp_path / 'run', ('test',), dataset=moved,
                            quiet=True)['test']['accuracy'] == json.loads(
      (tmp_path / 'run' / 'results.json').read_text())['test_accuracy']


def test_npz_run_resumes_bitwise_and_sweeps(tmp_path):
  """The order is (seed, step) for any data: 20 + 10 steps == 30 steps, and
  a sweep's model k is the single run with seed k."""
  import jax  # pylint: disable=g-import-not-at-top

  from seqclf import sweep  # pylint: disable=g-import-not-at-top
  from seqclf.training import checkpoint  # pylint: disable=g-import-not-at-top
  x, y = toy_series(200, 7, steps=6, features=2)
  name = _npz(tmp_path / 'd.npz', x=x, y=y)
  config = _config(name, hidden_size=8)
  train.train_and_evaluate(config, tmp_path / 'full', quiet=True)
  part = _config(name, hidden_size=8, num_train_steps=20)
  train.train_and_evaluate(part, tmp_path / 'part', quiet=True)
  resumed = train.train_and_evaluate(config, tmp_path / 'part', quiet=True)
  assert resumed['resumed_from_step'] == 20
  target = state_lib.create_train_state(config, jax.random.key(0),
                                    sequence_shape=(6, 2))
  a, _ = checkpoint.restore(checkpoint.manager(tmp_path / 'full'), target)
  b, _ = checkpoint.restore(checkpoint.manager(tmp_path / 'part'), target)
  for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(u, v)
  again = train.train_and_evaluate(config, tmp_path / 'full', quiet=True)
  assert again['already_finished'] and again['step'] == 30
  swept = sweep.run_sweep(config, tmp_path / 'sweep', 1, quiet=True)
  assert swept['test_accuracies'][0] == pytest.approx(
      resumed['test_accuracy'], abs=1 / len(y))


class _Unread:
  """Sequences with a shape that must not be read (a streamed split's)."""

  def __init__(self, shape):
    self.shape = shape

  def __array__(self, *args, **kwargs):
    raise AssertionError('the sequences were read')


def test_refit_digest_is_the_refit_splits_digest_without_reading_sequences():
  rng = np.random.default_rng(0)
  data = {name: {'image': rng.normal(size=(n, 5, 2)).astype(np.float32),
                 'label': rng.integers(0, 3, n).astype(np.int32),
                 'lengths': rng.integers(1, 6, n).astype(np.int32)}
          for name, n in (('train', 30), ('validation', 7), ('test', 9))}
  want = splits_lib.digest(splits_lib.refit_splits(data))
  assert splits_lib.refit_digest(data) == want != splits_lib.digest(data)
  unread = {name: {**split, 'image': _Unread(split['image'].shape)}
            for name, split in data.items()}
  assert splits_lib.refit_digest(unread) == want
