"""``impl='auto'``'s decision logic, on a fake clock: no test here times code.

Each fake path advances the clock by its cost when called, so the measured
seconds are known exactly and the choice, the cache and its key can be
checked without depending on the machine's speed.
"""

import json

import jax
import numpy as np
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
                      lambda layer, backend, kind=None: ('fused', 'scan'))
  config = base_config()
  config.hidden_size = 16

  def measure(runs, timer, rounds):  # Runs each compiled path once.
    del timer, rounds
    return {name: (run(), 2.0 if name == 'scan' else 1.0)[1]
            for name, run in runs.items()}

  monkeypatch.setattr(autotune, 'measure', measure)
  timer = Clock()  # measure is faked: the clock only brackets it
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
                      lambda layer, backend, kind=None: ('fused', 'scan'))
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


def test_a_candidate_that_fails_to_build_or_run_is_skipped_and_remembered(
    tmp_path):
  """Failing at trace/compile (the builder raises), at its first call, or
  later while timed: each is skipped with its reason, the run goes on, and
  the cache says so, so the next run neither builds nor runs it."""
  clock, path = Clock(), tmp_path / 'autotune.json'
  builders = clock.builders({'scan': 2, 'fused': 1})

  def trace_error():
    raise TypeError('cannot trace this\nsecond line')

  def first_call_error():
    def run():
      raise RuntimeError('INTERNAL: kernel launch failed')
    return run

  calls = []

  def later_error():  # runs once (the check), then fails while timed
    def run():
      calls.append(1)
      if len(calls) > 1:
        raise RuntimeError('illegal memory access')
      clock.now += 0.1
    return run

  builders.update(kernel=trace_error, gpu=first_call_error, other=later_error)
  choice = autotune.choose({'k': 1}, builders, timer=clock, path=path,
                           reference='scan')
  assert choice.impl == 'fused' and set(choice.seconds) == {'scan', 'fused'}
  assert choice.skipped == {'kernel': 'TypeError: cannot trace this',
                            'gpu': 'RuntimeError: INTERNAL: kernel launch failed',
                            'other': 'RuntimeError: illegal memory access'}
  lines = choice.summary().splitlines()
  assert lines[:3] == [f'impl=auto: {n} skipped: {choice.skipped[n]}'
                       for n in ('kernel', 'gpu', 'other')]
  assert lines[3].startswith('impl=auto: fused (scan 0.50x of fused here; '
                             'measured now in ')
  again = autotune.choose({'k': 1}, {n: pytest.fail for n in builders},
                          timer=pytest.fail, path=path, reference='scan')
  assert again.cached and again.impl == 'fused'
  assert again.skipped == choice.skipped
  assert 'gpu skipped: RuntimeError' in again.summary()


def test_the_references_failure_is_raised(tmp_path):
  clock = Clock()

  def broken():
    raise ValueError('the reference is broken')

  with pytest.raises(ValueError, match='reference is broken'):
    autotune.choose({}, {'scan': broken, **clock.builders({'fused': 1})},
                    timer=clock, path=tmp_path / 'c.json', reference='scan')


def test_a_candidate_that_disagrees_is_skipped_however_fast(tmp_path):
  clock, path = Clock(), tmp_path / 'autotune.json'
  outputs = {'scan': {'w': np.array([1.0, -2.0])},
             'fused': {'w': np.array([1.0005, -2.0])},   # 0.025%: rounding
             'kernel': {'w': np.array([1.05, -2.1])}}    # 5% off, fastest
  costs = {'scan': 2.0, 'fused': 1.0, 'kernel': 0.1}

  def builder(name):
    def run():
      clock.now += costs[name]
      return outputs[name]
    return lambda: run

  choice = autotune.choose({}, {n: builder(n) for n in costs}, timer=clock,
                           path=path, reference='scan',
                           agree=autotune.agreement(1e-3))
  assert choice.impl == 'fused'
  assert choice.skipped == {'kernel': (
      "disagrees with scan: largest difference 0.1 in ['w'] (5.00% of its "
      'scale; tolerance 0.10%)')}
  assert autotune.choose({}, {n: pytest.fail for n in costs},
                         timer=pytest.fail, path=path).skipped == choice.skipped


@pytest.mark.parametrize('got, reason', [
    ({'w': np.array([np.nan, 1.0])}, "['w'] is not finite where scan is"),
    ({'w': np.zeros(3)}, "['w'] has shape (3,), scan gives (2,)")])
def test_agreement_names_what_differs(got, reason):
  assert autotune.agreement(0.5)(got, {'w': np.array([1.0, 2.0])}) == reason


@pytest.mark.parametrize('precision, dtype, tolerance', [
    ('float32', 'float32', 1e-3), ('bfloat16', 'float32', 1e-2),
    ('float32', 'bfloat16', 3e-2)])
def test_tolerance_follows_the_precision_in_use(precision, dtype, tolerance):
  config = base_config()
  config.matmul_precision, config.dtype = precision, dtype
  assert autotune.tolerance_of(config) == tolerance
