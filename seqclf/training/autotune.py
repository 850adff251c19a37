"""``impl='auto'``: the fastest LSTM path for this machine, found by timing it.

Which of ``scan``, ``fused`` and ``kernel`` runs fastest depends on the CPU
(its vector ISA, its cores), the backend, the per-device batch and the model's
size, and no rule about them held from one machine to the next. So, as XLA
autotunes its GPU kernels and cuDNN searches its algorithms, the first time a
(machine, kernel build, shape, precision, mode) is seen each eligible path is
compiled and timed for a few calls, interleaved, and the fastest is kept; the
decision is cached on disk (``$SEQCLF_AUTOTUNE_CACHE``, default
``~/.cache/seqclf/autotune.json``; delete it to measure again), so later runs
read it in milliseconds. The choice must change speed, never results, and
no path is trusted to: before timing, each candidate's first call is checked
against the reference path's (``scan``): one that fails to trace, compile or
run, or whose loss and gradients disagree beyond the precision's tolerance,
is skipped with one line, and remembered in the cache as skipped, so the
run goes on with the paths that work. ``SEQCLF_AUTOTUNE=0`` turns the
timing off, as ``--xla_gpu_autotune_level=0`` does XLA's: ``auto`` then takes
the first eligible path (``paths.PREFERENCE``' order) untimed, for test suites
and CI, where compiling every path of each new shape costs more than the
speed it would find.

``measure`` and ``choose`` are generic (any named callables) and take the
clock as an argument, so their logic is tested with a fake one;
``choose_impl`` times the paths ``seqclf.kernels.paths.eligible`` allows for
a config. Each entry point (train, sweep, evaluate, predict, export) asks it
once and passes the path down. Asking never compiles the CPU kernel: only
an existing build is eligible.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
import optax

from seqclf.data import views
from seqclf.errors import ConfigError
from seqclf.kernels import (fast_lstm, gpu_lstm, gpu_lstm_pallas, lstm_kernel,
                            paths, reference)
from seqclf.nn import cells, classifier, recurrent
from seqclf.training import parallel

Timer = Callable[[], float]
# Each candidate's builder compiles it and returns one call of it (blocking
# until done, returning its outputs), so compilation is never timed.
Builders = Mapping[str, Callable[[], Callable[[], Any]]]
# (a candidate's outputs, the reference's) -> why they disagree, or None.
Agreement = Callable[[Any, Any], 'str | None']
MODES = ('train', 'forward')  # what is timed: a gradient step, or inference
REFERENCE = 'scan'  # the path every other is checked against
# How far a candidate's loss and gradients may be from the reference's, as a
# fraction of each array's largest magnitude, by the precision the matmuls
# run at, and with every op in bfloat16 (dtype='bfloat16'): room for float
# rounding in another order (docs/performance.md gives the differences
# measured), never for a wrong result (outputs 5% off are caught at each).
TOLERANCE = {'float32': 1e-3, 'tensorfloat32': 1e-2, 'bfloat16': 1e-2}
BFLOAT16_DTYPE_TOLERANCE = 3e-2


@dataclasses.dataclass(frozen=True)
class Choice:
  """The path ``auto`` resolved to, and the median seconds per call it saw."""

  impl: str
  seconds: dict[str, float]  # empty when only one path was eligible
  cached: bool
  key: dict[str, Any]
  timed: bool = True  # False: SEQCLF_AUTOTUNE=0 took the first eligible path
  # Candidates that failed or disagreed with the reference: name -> why.
  skipped: dict[str, str] = dataclasses.field(default_factory=dict)
  # Measured now: seconds the agreement check cost (each candidate's first
  # call and the comparison), and the whole decision (builds included).
  check_seconds: float | None = None
  total_seconds: float | None = None

  def summary(self) -> str:
    """A line per skipped path (``impl=auto: gpu skipped: ...``), then
    ``impl=auto: scan (kernel 0.38x, fused 1.40x of scan here; cached)``."""
    skipped = [f'impl=auto: {name} skipped: {why}'
               for name, why in self.skipped.items()]
    if not self.timed:
      line = (f'impl=auto: {self.impl} (the first eligible path, untimed: '
              'SEQCLF_AUTOTUNE=0)')
    elif len(self.seconds) < 2:
      line = f'impl=auto: {self.impl} (the only path for this config)'
    else:
      best = self.seconds[self.impl]
      others = ', '.join(f'{name} {best / s:.2f}x' for name, s in
                         self.seconds.items() if name != self.impl)
      how = 'cached' if self.cached else (
          f'measured now in {self.total_seconds:.1f} s, '
          f'{self.check_seconds:.1f} s of it checking' if self.total_seconds
          is not None else 'measured now')
      line = f'impl=auto: {self.impl} ({others} of {self.impl} here; {how})'
    return '\n'.join([*skipped, line])

  def to_json(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


def timing_enabled() -> bool:
  """Whether ``auto`` times the paths (``SEQCLF_AUTOTUNE`` is not '0')."""
  return os.environ.get('SEQCLF_AUTOTUNE', '1') != '0'


def cache_file() -> Path:
  return Path(os.environ.get('SEQCLF_AUTOTUNE_CACHE') or
              Path.home() / '.cache' / 'seqclf' / 'autotune.json')


def timed_rounds(runs: Mapping[str, Callable[[], Any]], *, timer: Timer,
                 rounds: int, reps: Mapping[str, int]
                 ) -> dict[str, list[float]]:
  """Seconds per call of each run, one timing of ``reps[name]`` calls per
  round, the order rotated each round, so load from elsewhere on the
  machine falls on all of them alike."""
  names = list(runs)
  times: dict[str, list[float]] = {name: [] for name in names}
  for r in range(rounds):
    for name in names[r % len(names):] + names[:r % len(names)]:
      t = timer()
      for _ in range(reps[name]):
        runs[name]()
      times[name].append((timer() - t) / reps[name])
  return times


def measure(runs: Mapping[str, Callable[[], Any]], *, timer: Timer,
            rounds: int = 5, min_seconds: float = 0.05) -> dict[str, float]:
  """Median seconds per call of each run over ``timed_rounds``; one warm-up
  call each sizes a timing to at least ``min_seconds``."""
  reps = {}
  for name, run in runs.items():
    t = timer()
    run()
    reps[name] = max(1, int(np.ceil(min_seconds / max(timer() - t, 1e-9))))
  times = timed_rounds(runs, timer=timer, rounds=rounds, reps=reps)
  return {name: statistics.median(v) for name, v in times.items()}


def _read(path: Path) -> dict[str, Any]:
  try:
    data = json.loads(path.read_text())
  except (OSError, ValueError):  # Missing or damaged: measure again.
    return {}
  return data if isinstance(data, dict) else {}


def _write(path: Path, entry_id: str, entry: dict[str, Any]) -> None:
  """Adds one entry, atomically; a cache that cannot be written is skipped
  (the decision is then measured again next time, nothing else changes)."""
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = _read(path)
    data[entry_id] = entry
    tmp = path.with_name(f'{path.name}.{os.getpid()}.tmp')
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + '\n')
    os.replace(tmp, path)
  except OSError:
    pass


class _Failed(Exception):
  """A candidate that raised while being timed (its name and error)."""

  def __init__(self, name: str, error: Exception):
    super().__init__(name)
    self.name, self.error = name, error


def _reason(error: Exception) -> str:
  """An exception as one short line: its type and first line."""
  lines = str(error).strip().splitlines()
  text = f'{type(error).__name__}: {lines[0] if lines else ""}'.rstrip(': ')
  return text if len(text) <= 300 else text[:297] + '...'


def _trials(builders: Builders, reference: str | None,
            agree: Agreement | None, timer: Timer
            ) -> tuple[dict[str, Callable[[], Any]], dict[str, str], float]:
  """Builds each candidate and runs it once; returns those that ran and
  agree with ``reference``'s outputs, why each other was skipped, and the
  seconds the check cost beyond building (the first calls, the comparison).

  The reference's own failure is raised: without it nothing can be checked,
  and every path of the config depends on it.
  """
  runs, outputs, skipped, cost = {}, {}, {}, 0.0
  for name, build in builders.items():
    try:
      run = build()
      start = timer()
      outputs[name] = run()
      cost += timer() - start
    except Exception as e:  # pylint: disable=broad-except
      if name == reference:
        raise
      skipped[name] = _reason(e)
      continue
    runs[name] = run
  start = timer()
  if agree is not None and reference in outputs:
    for name in [n for n in runs if n != reference]:
      why = agree(outputs[name], outputs[reference])
      if why:
        skipped[name] = why
        del runs[name]
  return runs, skipped, cost + timer() - start


def _guarded(runs: Mapping[str, Callable[[], Any]]
             ) -> dict[str, Callable[[], Any]]:
  def guard(name, run):
    def call():
      try:
        return run()
      except Exception as e:  # pylint: disable=broad-except
        raise _Failed(name, e) from e
    return call
  return {name: guard(name, run) for name, run in runs.items()}


def choose(key: dict[str, Any], builders: Builders, *, timer: Timer,
           path: Path | None = None, rounds: int = 5,
           reference: str | None = None,
           agree: Agreement | None = None) -> Choice:
  """The fastest of ``builders`` that run and agree with ``reference``,
  from the cache at ``path`` when ``key`` (anything that decides the speeds,
  JSON-serializable) was seen before.

  Args:
    key: what the decision depends on.
    builders: the candidates by name.
    timer: the clock.
    path: the cache file (default ``cache_file()``).
    rounds: timing rounds.
    reference: the candidate the others are checked against; its failure is
      raised, any other's skips that candidate.
    agree: compares a candidate's first outputs with the reference's.

  Returns:
    The choice, with the skipped candidates and why (remembered in the cache
    with the decision, so they are not tried again for ``key``).
  """
  path = cache_file() if path is None else path
  if len(builders) == 1:
    return Choice(next(iter(builders)), {}, False, key)
  entry_id = hashlib.sha256(json.dumps(key, sort_keys=True).encode()
                            ).hexdigest()[:16]
  entry = _read(path).get(entry_id)
  if isinstance(entry, dict):
    seconds, skipped = entry.get('seconds', {}), entry.get('skipped', {})
    if (entry.get('impl') in seconds and isinstance(skipped, dict)
        and set(seconds) | set(skipped) == set(builders)):
      return Choice(entry['impl'], seconds, True, key, skipped=skipped)
  start = timer()
  runs, skipped, check_seconds = _trials(builders, reference, agree, timer)
  while True:
    if not runs:  # Only a failed reference raises; this is for safety.
      raise RuntimeError('No candidate path ran: ' + '; '.join(
          f'{name}: {why}' for name, why in skipped.items()))
    try:
      seconds = measure(_guarded(runs), timer=timer, rounds=rounds)
      break
    except _Failed as failed:
      skipped[failed.name] = _reason(failed.error)
      del runs[failed.name]
  impl = min(seconds, key=seconds.get)
  _write(path, entry_id, {'impl': impl, 'seconds': seconds,
                          'skipped': skipped, 'key': key})
  return Choice(impl, seconds, False, key, skipped=skipped,
                check_seconds=check_seconds, total_seconds=timer() - start)


def agreement(tolerance: float) -> Agreement:
  """Compares two pytrees of arrays leaf by leaf: a candidate disagrees
  where it is not finite, or where its largest difference from the
  reference exceeds ``tolerance`` times the reference leaf's largest
  magnitude.

  Args:
    tolerance: the allowed difference, a fraction of each leaf's scale.

  Returns:
    ``agree(outputs, reference_outputs) -> reason or None``.
  """
  def agree(outputs: Any, reference: Any) -> str | None:
    worst = (0.0, 0.0, '')
    pairs = zip(jax.tree_util.tree_leaves_with_path(outputs),
                jax.tree_util.tree_leaves(reference))
    for (where, got), want in pairs:
      got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
      name = jax.tree_util.keystr(where) or 'the output'
      if got.shape != want.shape:
        return f'{name} has shape {got.shape}, {REFERENCE} gives {want.shape}'
      if not np.all(np.isfinite(got)):
        return f'{name} is not finite where {REFERENCE} is'
      diff = float(np.max(np.abs(got - want), initial=0.0))
      scale = max(float(np.max(np.abs(want), initial=0.0)), 1e-12)
      if diff / scale > worst[0]:
        worst = (diff / scale, diff, name)
    if worst[0] <= tolerance:
      return None
    return (f'disagrees with {REFERENCE}: largest difference {worst[1]:.3g} '
            f'in {worst[2]} ({worst[0]:.2%} of its scale; tolerance '
            f'{tolerance:.2%})')
  return agree


def tolerance_of(config: ml_collections.ConfigDict) -> float:
  """``TOLERANCE`` for the config's matmul precision and compute dtype."""
  return max(TOLERANCE[config.matmul_precision],
             BFLOAT16_DTYPE_TOLERANCE if config.dtype == 'bfloat16' else 0.0)


# ---------------------------------------------------------- seqclf's paths


def layer_of(config: ml_collections.ConfigDict,
             sharded: bool = False) -> paths.Layer:
  """The recurrent layers ``config`` describes, as ``paths`` decides by."""
  return paths.Layer(cell=config.cell, hidden_size=config.hidden_size,
                     dtype=config.dtype,
                     matmul_precision=config.matmul_precision,
                     sharded=sharded)


def _machine() -> str:
  """What the speeds depend on besides the config: the chip and its ISA."""
  device = jax.local_devices()[0]
  if device.platform != 'cpu':
    return device.device_kind
  return hashlib.sha256(lstm_kernel.cpu_signature().encode()
                        ).hexdigest()[:16]


def _code() -> str:
  """The Python that the timed paths run: a change to it is measured anew."""
  digest = hashlib.sha256(Path(__file__).read_bytes())  # how it is checked
  for module in (cells, recurrent, classifier, fast_lstm, reference,
                 lstm_kernel, gpu_lstm, gpu_lstm_pallas):
    digest.update(Path(module.__file__).read_bytes())
  return digest.hexdigest()[:16]


def _builder(config: ml_collections.ConfigDict, impl: str, batch: int,
             sequence_shape: tuple[int, int], mode: str
             ) -> Callable[[], Callable[[], Any]]:
  """Compiles ``impl``'s loss and gradients (train) or forward pass
  (forward) on one batch; each call returns them, for the check."""
  def build():
    model = classifier.from_config(config, impl)
    x = jax.random.uniform(jax.random.key(0), (batch, *sequence_shape))
    y = jax.random.randint(jax.random.key(2), (batch,), 0, config.num_classes)
    params = jax.jit(model.init)(jax.random.key(1), x[:1])
    if mode == 'forward':
      fn = jax.jit(model.apply).lower(params, x).compile()
      return lambda: jax.block_until_ready(fn(params, x))
    loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(
        model.apply(p, x), y).mean()
    fn = jax.jit(jax.value_and_grad(loss)).lower(params).compile()
    return lambda: jax.block_until_ready(fn(params))
  return build


def timed_choice(config: ml_collections.ConfigDict, *, batch: int,
                 sequence_shape: tuple[int, int], mode: str = 'train',
                 sharded: bool = False, timer: Timer = time.perf_counter,
                 path: Path | None = None) -> Choice:
  """``config.impl``, with ``auto`` resolved by timing (or the cache).

  Args:
    config: the run's config.
    batch: the per-device batch the path will run.
    sequence_shape: one example's (T, F) as the model reads it.
    mode: what the path will run (``MODES``).
    sharded: whether it runs under a sharded ``jax.jit``.
    timer: the clock (a fake one in tests).
    path: the cache file (default ``cache_file()``).

  Returns:
    The choice. A forced ``impl`` is returned as it is once ``paths.check``
    says it can run here (else a one-line ``ConfigError``). Each process
    decides for itself: a multi-process trainer makes them agree
    (``parallel.agreed_choice``).
  """
  if mode not in MODES:
    raise ValueError(f'mode must be one of {MODES}, got {mode!r}.')
  layer, backend = layer_of(config, sharded), jax.default_backend()
  if problem := paths.layer_problem(layer, backend):  # no path's fault
    raise ConfigError(f'{problem}.', arg='config.matmul_precision')
  if config.impl != 'auto':
    paths.check(config.impl, layer, backend)
    return Choice(config.impl, {}, False, {})
  device_kind = jax.local_devices()[0].device_kind
  eligible = paths.eligible(layer, backend, device_kind)
  if not eligible:
    reasons = '; '.join(f'{impl}: {paths.why_not(impl, layer, backend)}'
                        for impl in paths.PREFERENCE)
    raise ConfigError(f'No path can run this config on the {backend} '
                      f'backend ({reasons}).', arg='config.impl')
  key = {'machine': _machine(), 'backend': backend,
         'local_devices': jax.local_device_count(),
         'xla_flags': os.environ.get('XLA_FLAGS', ''),
         'kernel': (lstm_kernel.library_path().stem if 'kernel' in eligible
                    else None),
         'jax': jax.__version__, 'code': _code(), 'mode': mode, 'batch': batch,
         'sequence_shape': list(sequence_shape),
         **{k: config[k] for k in ('cell', 'hidden_size', 'num_layers',
                                   'bidirectional', 'dtype',
                                   'matmul_precision', 'unroll')}}
  if not timing_enabled() and len(eligible) > 1:
    return Choice(eligible[0], {}, False, key, timed=False)
  return choose(key, {impl: _builder(config, impl, batch, sequence_shape,
                                     mode) for impl in eligible},
                timer=timer, path=path, reference=REFERENCE,
                agree=agreement(tolerance_of(config)))


def choose_impl(config: ml_collections.ConfigDict, batch: int | None = None,
                mode: str = 'train', sharded: bool | None = None,
                sequence_shape: tuple[int, int] | None = None,
                **kwargs: Any) -> Choice:
  """How the recurrent layers run: ``config.impl``, with ``auto`` resolved by
  timing the eligible paths once per machine and shape (``timed_choice``).

  Args:
    config: the run's config.
    batch: the per-device batch (default: ``batch_size`` over the devices
      ``parallelism`` would use, or ``eval_batch_size`` for ``mode=
      'forward'``).
    mode: ``'train'`` or ``'forward'`` (``MODES``).
    sharded: default: whether ``parallelism`` resolves to ``'sharded'``.
    sequence_shape: one example's (T, F) as the model reads it (default:
      an MNIST image read as ``config.task`` says).
    **kwargs: ``timer`` and ``path``, as ``timed_choice`` takes them.

  Returns:
    The choice: ``.impl`` is the path to run.
  """
  if sequence_shape is None:
    sequence_shape = views.image_sequence_shape(config)
  dp_mode = parallel.resolve_mode(config.parallelism)
  if sharded is None:
    sharded = dp_mode == 'sharded'
  if batch is None:
    devices = 1 if dp_mode == 'single' else jax.local_device_count()
    batch = (config.eval_batch_size if mode == 'forward'
             else max(1, config.batch_size // devices))
  return timed_choice(config, batch=batch, sequence_shape=sequence_shape,
                      mode=mode, sharded=sharded, **kwargs)


def resolve_impl(config: ml_collections.ConfigDict, **kwargs: Any) -> str:
  """``choose_impl(config, **kwargs).impl``: the path's name alone."""
  return choose_impl(config, **kwargs).impl
