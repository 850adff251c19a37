"""What seqclf mutes: only the reports of failures it reports itself."""

import asyncio
import gc
import logging

import pytest

from seqclf import logs


def _abandon_failed_task(message: str) -> None:
  """A task that fails and is dropped unretrieved: asyncio logs its error
  when the task is collected, as it does for orbax's abandoned reads."""
  async def read():
    raise ValueError(message)
  loop = asyncio.new_event_loop()
  task = loop.create_task(read())
  loop.run_until_complete(asyncio.sleep(0))
  loop.close()
  assert task.done()
  del task


@pytest.mark.parametrize('message, muted', [
    ('OUT_OF_RANGE: Error reading [tensorstore_spec=\'{"driver": "zarr"}\']',
     True),
    ('a failure of the user\'s own code', False)])
def test_abandoned_reads_silenced_mutes_only_tensorstore_reads(
    caplog, message, muted):
  with caplog.at_level(logging.ERROR, logger='asyncio'):
    # As in a restore: the read that failed first raises out of the block.
    with pytest.raises(OSError), logs.abandoned_reads_silenced():
      _abandon_failed_task(message)
      raise OSError('the read that failed first')
    gc.collect()
  logged = [r for r in caplog.records
            if 'exception was never retrieved' in r.getMessage()]
  assert len(logged) == (0 if muted else 1)


def test_abandoned_reads_silenced_removes_its_filter(caplog):
  with logs.abandoned_reads_silenced():
    pass
  with caplog.at_level(logging.ERROR, logger='asyncio'):
    _abandon_failed_task('tensorstore_spec')
    gc.collect()
  assert any('exception was never retrieved' in r.getMessage()
             for r in caplog.records)
