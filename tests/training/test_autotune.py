"""``impl='auto'``'s decision logic, on a fake clock: no test here times code.

Each fake path advances the clock by its cost when called, so the measured
seconds are known exactly and the choice, the cache and its key can be
checked without depending on the machine's speed.
"""

import json

import jax
import pytest

from seqclf.config import base_config
from seqclf.training import autotune


class Clock:
  """A timer whose time moves only when a fake path runs."""

  def __init__(self):
    self.now = 0.0
    self.calls = {}

  def __call__(self) -> float:
    return self.now

  def path(self, name: str, cost: float):
    def run():
      self.now += cost
      self.calls[name] = self.calls.get(name, 0) + 1
    return run

  def builders(self, costs: dict[str, float]):
    return {name: (lambda name=name, cost=cost: self.path(name, cost))
            for name, cost in costs.items()}


def test_measure_reports_each_paths_seconds_per_call():
  clock = Clock()
  runs = {'a': clock.path('a', 0.004), 'b': clock.path('b', 0.03)}
  seconds = autotune.measure(runs, timer=clock, rounds=3, min_seconds=0.02)
  assert seconds == pytest.approx({'a': 0.004, 'b': 0.03})
  # Warm-up once, then rounds of enough calls to fill min_seconds.
  assert clock.calls == {'a': 1 + 3 * 5, 'b': 1 + 3 * 1}


def test_measure_interleaves_rounds_in_rotating_order():
  clock, order = Clock(), []
  runs = {n: (lambda n=n: order.append(n)) for n in 'abc'}
  autotune.measure(runs, timer=clock, rounds=3, min_seconds=0.0)
  assert order[3:] == list('abc' 'bca' 'cab')


@pytest.mark.parametrize('fastest', ['kernel', 'fused', 'scan'])
def test_choose_keeps_the_fastest_and_caches_it(tmp_path, fastest):
  costs = {'kernel': 0.02, 'fused': 0.02, 'scan': 0.02, fastest: 0.01}
  clock, path = Clock(), tmp_path / 'autotune.json'
  choice = autotune.choose({'batch': 50}, clock.builders(costs), timer=clock,
                           path=path)
  assert choice.impl == fastest and not choice.cached
  assert choice.seconds == pytest.approx(costs)
  # A later run reads the decision instead of measuring.
  again = autotune.choose({'batch': 50}, {n: pytest.fail for n in costs},
                          timer=pytest.fail, path=path)
  assert again.impl == fastest and again.cached
  assert again.seconds == pytest.approx(costs)
  assert 'cached' in again.summary() and 'measured' in choice.summary()


def test_another_key_or_set_of_paths_is_measured_anew(tmp_path):
  clock, path = Clock(), tmp_path / 'autotune.json'
  autotune.choose({'batch': 50}, clock.builders({'fused': 1, 'scan': 2}),
                  timer=clock, path=path)
  # A larger batch may favour another path: its own entry.
  big = autotune.choose({'batch': 512}, clock.builders({'fused': 3, 'scan': 2}),
                        timer=clock, path=path)
  assert big.impl == 'scan' and not big.cached
  # A kernel that became buildable since: measured, not the old answer.
  more = autotune.choose({'batch': 50},
                         clock.builders({'kernel': 0.5, 'fused': 1, 'scan': 2}),
                         timer=clock, path=path)
  assert more.impl == 'kernel' and not more.cached
  assert len(json.loads(path.read_text())) == 2


def test_one_eligible_path_is_not_timed(tmp_path):
  choice = autotune.choose({}, {'scan': pytest.fail}, timer=pytest.fail,
                           path=tmp_path / 'c.json')
  assert choice.impl == 'scan' and choice.seconds == {}
  assert 'only path' in choice.summary()
  assert not (tmp_path / 'c.json').exists()


def test_a_damaged_or_unwritable_cache_only_costs_a_measurement(tmp_path):
  path = tmp_path / 'autotune.json'
  path.write_text('{not json')
  clock = Clock()
  choice = autotune.choose({}, clock.builders({'fused': 1, 'scan': 2}),
                           timer=clock, path=path)
  assert choice.impl == 'fused' and json.loads(path.read_text())
  blocked = tmp_path / 'file' / 'autotune.json'
  (tmp_path / 'file').write_text('a file where a directory should be')
  choice = autotune.choose({}, clock.builders({'fused': 2, 'scan': 1}),
                           timer=clock, path=blocked)
  assert choice.impl == 'scan'


def test_summary_gives_each_path_as_a_speed_ratio():
  choice = autotune.Choice('scan', {'kernel': 0.05, 'fused': 0.025,
                                    'scan': 0.02}, True, {})
  assert choice.summary() == ('impl=auto: scan (kernel 0.40x, fused 0.80x of '
                              'scan here; cached)')


def test_choose_impl_times_the_models_paths_and_caches_by_shape(
    tmp_path, monkeypatch):
  """The real candidates (compiled models) on the fake clock: each builder
  is called once per shape, and the key holds what decides the speed."""
  monkeypatch.setenv('SEQCLF_AUTOTUNE', '1')  # The suite turns timing off.
  monkeypatch.setattr(autotune.paths, 'eligible',
                      lambda layer, backend: ('fused', 'scan'))
  config = base_config()
  config.hidden_size = 16

  def measure(runs, timer, rounds):  # Runs each compiled path once.
    del timer, rounds
    return {name: (run(), 2.0 if name == 'scan' else 1.0)[1]
            for name, run in runs.items()}

  monkeypatch.setattr(autotune, 'measure', measure)
  timer = pytest.fail
  path = tmp_path / 'autotune.json'
  choice = autotune.choose_impl(config, batch=4, sequence_shape=(5, 3),
                                timer=timer, path=path)
  assert choice.impl == 'fused'
  assert choice.key['batch'] == 4 and choice.key['sequence_shape'] == [5, 3]
  assert choice.key['mode'] == 'train' and choice.key['hidden_size'] == 16
  assert choice.key['backend'] == jax.default_backend()
  assert choice.key['matmul_precision'] == 'float32'  # one decision per precision
  forward = autotune.choose_impl(config, batch=4, sequence_shape=(5, 3),
                                 mode='forward', timer=timer, path=path)
  assert not forward.cached  # Inference is timed on its own.
  assert autotune.choose_impl(config, batch=4, sequence_shape=(5, 3),
                              timer=timer, path=path).cached
  with pytest.raises(ValueError, match='mode must be one of'):
    autotune.choose_impl(config, batch=4, sequence_shape=(5, 3), mode='eval')


@pytest.mark.parametrize('setting, timed', [('0', False), ('1', True)])
def test_autotune_0_takes_the_first_eligible_path_untimed(
    tmp_path, monkeypatch, setting, timed):
  monkeypatch.setenv('SEQCLF_AUTOTUNE', setting)
  monkeypatch.setattr(autotune.paths, 'eligible',
                      lambda layer, backend: ('fused', 'scan'))
  built, clock = [], Clock()
  monkeypatch.setattr(autotune, '_builder', lambda config, impl, *args: (
      lambda: built.append(impl) or clock.path(impl, {'fused': 1.0,
                                                      'scan': 2.0}[impl])))
  choice = autotune.choose_impl(base_config(), batch=4, sequence_shape=(5, 3),
                                timer=clock, path=tmp_path / 'autotune.json')
  assert choice.timed == timed and choice.impl == 'fused'
  assert built == (['fused', 'scan'] if timed else [])
  assert ('untimed: SEQCLF_AUTOTUNE=0' in choice.summary()) == (not timed)
  assert (tmp_path / 'autotune.json').exists() == timed  # nothing cached
