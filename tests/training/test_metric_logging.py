"""seqclf.training.metric_logging: what a kill -9 leaves of the logs."""

import json

from conftest import tensorboard_tags, tensorboard_values
from seqclf.training import metric_logging


def test_logged_scalars_are_on_disk_before_the_logger_closes(tmp_path):
  """A killed run keeps its curves up to its last log point, in TensorBoard
  as in metrics.jsonl (nothing is waiting in a writer's queue)."""
  logger = metric_logging.MetricLogger(tmp_path, 10, 0, quiet=True)
  logger.write(5, 'validation', {'loss': 0.5, 'recall': [0.1, 0.9]})
  assert tensorboard_tags(tmp_path / 'tensorboard') == {
      'validation/loss': {'scalar'}, 'validation/recall/0': {'scalar'},
      'validation/recall/1': {'scalar'}}
  assert '"step": 5' in (tmp_path / 'metrics.jsonl').read_text()
  logger.close()


def test_writers_opened_in_one_second_keep_their_own_files(tmp_path):
  """A resume at once (or a sweep's next group) opens another writer in the
  same directory: neither overwrites the other's file."""
  for tag in ('a', 'b'):
    writer = metric_logging.ScalarWriter(tmp_path, 1)
    writer.add_scalar(tag, 1.0, 1)
    writer.close()
  assert len(list(tmp_path.glob('events.out.tfevents.*'))) == 2
  assert set(tensorboard_tags(tmp_path)) == {'a', 'b'}


def test_a_resume_forgets_the_steps_it_trains_again_and_the_old_result(
    tmp_path):
  """Records past the resumed step are logged again, and a finished run
  trained on ends with its own test result: neither is kept twice."""
  logger = metric_logging.MetricLogger(tmp_path, 20, 0, quiet=True)
  for step, kind in ((10, 'train'), (10, 'validation'), (15, 'train'),
                     (20, 'train'), (20, 'validation'), (20, 'test')):
    logger.write(step, kind, {'loss': 1.0})
  logger.close()
  metric_logging.MetricLogger(tmp_path, 30, 20, quiet=True).close()
  kept = [json.loads(line) for line in
          (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  assert [(r['step'], r['kind']) for r in kept] == [
      (10, 'train'), (10, 'validation'), (15, 'train'), (20, 'train'),
      (20, 'validation')]  # the finished run's result is gone
  metric_logging.MetricLogger(tmp_path, 30, 10, quiet=True).close()
  assert len((tmp_path / 'metrics.jsonl').read_text().splitlines()) == 2


def test_a_resume_forgets_those_steps_in_tensorboard_too(tmp_path):
  """TensorBoard shows each step once after a resume, and one test result:
  the events past the resumed step are dropped from the files, as is a
  last record a kill cut short."""
  logger = metric_logging.MetricLogger(tmp_path, 20, 0, quiet=True)
  for step, kind in ((10, 'train'), (10, 'validation'), (20, 'train'),
                     (20, 'test')):
    logger.write(step, kind, {'loss': float(step)})
  logger.close()
  board = tmp_path / 'tensorboard'
  (events,) = board.glob('events.out.tfevents.*')
  with open(events, 'ab') as f:
    f.write(b'\x40\x00\x00')  # a record a kill -9 cut short
  metric_logging.MetricLogger(tmp_path, 20, 10, quiet=True).close()
  assert [v[:2] for v in tensorboard_values(board)] == [
      ('train/loss', 10), ('validation/loss', 10)]
  logger = metric_logging.MetricLogger(tmp_path, 20, 10, quiet=True)
  logger.write(20, 'train', {'loss': 2.0})
  logger.write(20, 'test', {'loss': 3.0})
  logger.close()
  # A finished run trained on: its old test result goes, the rest stays.
  metric_logging.MetricLogger(tmp_path, 30, 20, quiet=True).close()
  assert sorted(v[:2] for v in tensorboard_values(board)) == [
      ('train/loss', 10), ('train/loss', 20), ('validation/loss', 10)]
  assert not list(board.glob('*.tmp'))


def test_per_class_scalars_are_tagged_by_class_name(tmp_path, capfd, caplog):
  """As named, a space too; a NaN (a diverged step) is written without a
  warning line: the run's own error says what happened."""
  logger = metric_logging.MetricLogger(tmp_path, 10, 0, quiet=True,
                                       class_names=('cat', 'hot dog'))
  logger.write(10, 'validation', {'recall': [0.25, 0.75]})
  logger.write(10, 'train', {'loss': float('nan')})
  logger.close()
  values = sorted(tensorboard_values(tmp_path / 'tensorboard'))
  assert values[1:] == [('validation/recall/cat', 10, 'scalar', 0.25),
                        ('validation/recall/hot dog', 10, 'scalar', 0.75)]
  assert values[0][:3] == ('train/loss', 10, 'scalar') and values[0][3] != (
      values[0][3])  # NaN
  assert not caplog.records and capfd.readouterr() == ('', '')
