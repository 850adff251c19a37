"""seqclf's training speed beside what a user would pick instead, in one run.

Each implementation trains the same LSTM-128 (row-wise MNIST, Adam 1e-3) in
its own worker process (so peak RSS is its own and torch's threads never
share a process with XLA's), on the same batches (``seqclf.data.order.
train_indices``). The parent interleaves timed calls round by round, A B C A B
C ..., rotating the order, and reports medians, so load from anything else on
the machine hits every implementation alike. Implementations:

- ``seqclf``: ``seqclf.training.steps.train_steps`` compiled as ``seqclf train`` runs
  it (one ``lax.scan`` over the chunk, batches gathered on the device, the
  CPU split into one single-threaded device per core, ``parallelism='auto'``),
  with the default config: ``impl='auto'``, decided afresh by timing (its own
  empty ``seqclf.training.autotune`` cache) and reported beside the table;
  ``seqclf-kernel``, ``seqclf-fused`` and ``seqclf-scan`` force each path,
  ``seqclf-kernel-v3`` forces the kernel built for ``-march=x86-64-v3`` (the
  AVX2 + FMA variant, beside the native build; skipped where it cannot run),
  ``seqclf-1cpu`` keeps JAX's one multi-threaded CPU device
  (``cpu_devices=1``), ``seqclf-gpu`` forces the GPU kernels
  (``impl='gpu'``); a suffix sets ``matmul_precision``: ``-bf16`` bfloat16
  (``seqclf-bf16`` with ``auto``, ``seqclf-fused-bf16``,
  ``seqclf-kernel-bf16``, ...; the CPU kernel's on AVX512_BF16 or Intel AMX
  only), ``-tf32`` tensorfloat32 (GPUs only); ``seqclf-kernel-cpl`` and
  ``seqclf-kernel-cpl-bf16`` force the kernel built for ``-march=cooperlake``
  (AVX512_BF16 without AMX: on an AMX CPU the AVX512_BF16 variant beside the
  native, AMX one);
  variants no path of this machine runs are skipped with a message;
- ``seqclf-nnx`` and ``seqclf-nnx-kernel``: the same model as the NNX
  classifier (``seqclf.nnx``), trained by an NNX step (``nnx.value_and_grad``,
  ``nnx.Optimizer`` with the config's optax optimizer) in the same layout as
  ``seqclf-fused`` and ``seqclf-kernel`` (the same devices, chunks and batches;
  ``nnx.split`` once, ``nnx.merge`` inside the compiled chunk), so the ratio
  to those rows is the cost of the NNX API;
- ``flax``: ``nn.RNN(nn.OptimizedLSTMCell(128))`` + ``Dense``, one jitted step
  per host batch, the straightforward Flax recipe;
- ``torch``: ``nn.LSTM(28, 128)`` + ``Linear``, the usual PyTorch loop
  (skipped with a message when torch is not installed: ``pip install
  '.[bench]'``); ``torch-bf16`` the same under ``torch.autocast`` to
  bfloat16, PyTorch's own mixed precision, the peer of ``seqclf-bf16``.

Also measured: compile/warm-up seconds, peak RSS, the fp32 GEMM peak of the
machine (the LSTM's own matmul shape and a large square one) and each
implementation's achieved training FLOP/s, also as a fraction of it, and the
time to train ``configs/default.py`` with the ``seqclf`` CLI
(time-to-accuracy). ``--task pixel`` trains on sequential MNIST (784 steps of
one pixel, ``configs/smnist.py``'s view) instead of rows.
Writes ``benchmark.json``, ``benchmark.md`` and ``benchmark.png`` to ``--out``.

  python experiments/benchmark.py                      # a few minutes
  python experiments/benchmark.py --steps 2 --rounds 1 --batch_sizes 8 --no_tta
  python experiments/benchmark.py --task pixel --impls seqclf-fused,torch ...
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing as mp
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SEQ, FEATURES, HIDDEN, CLASSES = 28, 28, 128, 10
# Each task's (steps, features) of an MNIST image (seqclf.data.views).
TASKS = {'row': (SEQ, FEATURES), 'pixel': (SEQ * FEATURES, 1)}
IMPLS = ('seqclf', 'seqclf-kernel', 'seqclf-kernel-v3', 'seqclf-fused',
         'seqclf-scan', 'seqclf-1cpu', 'seqclf-bf16', 'seqclf-kernel-bf16',
         'seqclf-kernel-cpl', 'seqclf-kernel-cpl-bf16', 'seqclf-fused-bf16',
         'seqclf-scan-bf16', 'seqclf-tf32', 'seqclf-fused-tf32',
         'seqclf-scan-tf32', 'seqclf-gpu', 'seqclf-gpu-tf32',
         'seqclf-gpu-bf16', 'seqclf-nnx', 'seqclf-nnx-kernel', 'flax',
         'torch', 'torch-bf16')


class Skip(Exception):
  """An implementation this machine cannot run; the message says why."""


def train_flops_per_example(hidden: int = HIDDEN, task: str = 'row') -> float:
  """Matmul FLOPs of one training example: forward, and twice that backward."""
  gates = 4 * hidden
  steps, features = TASKS[task]
  forward = steps * 2 * (features * gates + hidden * gates) + 2 * hidden * CLASSES
  return 3.0 * forward


def _peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# ----------------------------------------------------------------- workers


def _as_task(images: np.ndarray, task: str) -> np.ndarray:
  """(N, 28, 28) images read as ``task`` reads them: (N, T, F)."""
  return images.reshape(len(images), *TASKS[task])


def _load_train(num_examples: int | None):
  from seqclf.data import prepared  # pylint: disable=g-import-not-at-top
  try:
    train = prepared.load_datasets(None, splits=('train',))['train']
  except Exception as e:  # pylint: disable=broad-except
    print(f'benchmark: MNIST not available ({e}); using random data of the '
          'same shape.', file=sys.stderr)
    rng = np.random.default_rng(0)
    train = {'image': rng.integers(0, 256, (55000, SEQ, FEATURES), np.uint8),
             'label': rng.integers(0, CLASSES, 55000).astype(np.int32)}
  if num_examples:
    train = {k: v[:num_examples] for k, v in train.items()}
  return train


def _indices(n: int, batch: int, steps: int, call: int) -> np.ndarray:
  from seqclf.data import order as order_lib  # pylint: disable=g-import-not-at-top
  return order_lib.train_indices(0, n, batch, call * steps, steps)


# A variant's suffix: its matmul_precision.
_PRECISION_SUFFIXES = {'': 'float32', 'bf16': 'bfloat16',
                       'tf32': 'tensorfloat32'}


class _Seqclf:
  """The trainer's own chunk function, laid out as ``seqclf train`` lays it out.

  Like the CLI, it first splits the CPU into ``config.cpu_devices`` devices
  (``parallel.configure_cpu_devices``) and runs ``parallel.setup``'s mode;
  ``variant`` changes config keys (``VARIANTS``) and, for ``kernel-v3``, the
  kernel's build (``$SEQCLF_KERNEL_MARCH``, this worker process only).
  """

  VARIANTS = {
      **{'-'.join(filter(None, (path, short))):
         {**({'impl': path} if path else {}), 'matmul_precision': name}
         for path in ('', 'fused', 'scan', 'gpu', 'kernel')
         for short, name in _PRECISION_SUFFIXES.items()},
      'kernel-v3': {'impl': 'kernel'}, 'kernel-cpl': {'impl': 'kernel'},
      'kernel-cpl-bf16': {'impl': 'kernel', 'matmul_precision': 'bfloat16'},
      '1cpu': {'cpu_devices': 1}}
  MARCH = {'kernel-v3': 'x86-64-v3', 'kernel-cpl': 'cooperlake',
           'kernel-cpl-bf16': 'cooperlake'}

  def __init__(self, train, variant: str, task: str = 'row'):
    sys.path.insert(0, str(REPO))
    if variant in self.MARCH:
      os.environ['SEQCLF_KERNEL_MARCH'] = self.MARCH[variant]
    # `auto` decides here and now, not from an earlier run's cache.
    os.environ['SEQCLF_AUTOTUNE_CACHE'] = os.path.join(
        tempfile.mkdtemp(prefix='seqclf-bench-'), 'autotune.json')
    from configs import default  # pylint: disable=g-import-not-at-top
    from seqclf.training import parallel  # pylint: disable=g-import-not-at-top
    self.config = default.get_config()
    self.config.update(self.VARIANTS[variant])
    self.config.task = task
    parallel.configure_cpu_devices(self.config.cpu_devices,
                                   self.config.batch_size)
    import jax  # pylint: disable=g-import-not-at-top

    from seqclf.data import views  # pylint: disable=g-import-not-at-top
    from seqclf.kernels import lstm_kernel  # pylint: disable=g-import-not-at-top
    train = {**train, 'image': views.view(self.config, train['image'])}
    if self.config.impl == 'gpu':
      if jax.default_backend() != 'gpu':
        raise Skip("impl='gpu' runs on a GPU backend only; this is "
                   f'{jax.default_backend()}.')
    elif self.config.impl in ('kernel', 'auto'):
      try:  # An explicit build: asking `available` never compiles.
        lstm_kernel.build()
      except lstm_kernel.KernelError:
        pass  # Not available: the checks below say so.
    from seqclf.kernels import paths  # pylint: disable=g-import-not-at-top
    from seqclf.training import autotune  # pylint: disable=g-import-not-at-top
    layer, backend = autotune.layer_of(self.config), jax.default_backend()
    if self.config.impl == 'auto' and not paths.eligible(layer, backend):
      raise Skip(f'no path runs matmul_precision='
                 f'{self.config.matmul_precision!r} on the {backend} backend.')
    if (self.config.impl != 'auto'
        and paths.why_not(self.config.impl, layer, backend)):
      raise Skip(paths.why_not(self.config.impl, layer, backend))
    if self.config.impl == 'kernel' and not lstm_kernel.available(
        self.config.matmul_precision):
      raise Skip(f'the CPU kernel for -march={lstm_kernel.default_march()} '
                 f'at matmul_precision={self.config.matmul_precision!r} '
                 'cannot be built or run here (no C++ compiler, or a CPU '
                 'without that ISA).')
    self.jax, self.parallel, self.train = jax, parallel, train
    self.runs, self.choices = {}, {}

  def setup(self, batch: int, steps: int) -> None:
    from seqclf.training import autotune  # pylint: disable=g-import-not-at-top
    from seqclf.training import loop  # pylint: disable=g-import-not-at-top
    from seqclf.training import state as state_lib, steps as steps_lib  # pylint: disable=g-import-not-at-top
    config = self.config.copy_and_resolve_references()
    config.batch_size = batch
    dp = self.parallel.setup(config.parallelism, batch)
    choice = autotune.choose_impl(config, batch=batch // dp.num_devices,
                                  sharded=dp.mode == 'sharded')
    self.choices[batch] = choice.to_json()
    state = dp.canonical(state_lib.create_train_state(
        config, self.jax.random.key(0), impl=choice.impl))
    # The trainer's chunk runner, set up as train_and_evaluate sets it up.
    runner = loop.Chunks(
        dp.chunk_fn(steps_lib.train_steps),
        dp.put_data(self.train['image'], self.train['label']), 0,
        len(self.train['label']), batch, put_indices=dp.put_indices,
        to_run=dp.to_run, from_run=dp.from_run, metrics=dp.metrics)
    runner.compile(state, dp.put_indices(
        _indices(len(self.train['label']), batch, steps, 0)))
    self.runs[batch] = [runner, state]

  def run(self, batch: int, idx: np.ndarray) -> float:
    runner, state = self.runs[batch]
    state, metrics = runner.run(state, idx)
    self.runs[batch][1] = state
    return float(metrics['loss'][-1])

  @property
  def devices(self) -> str:
    return f'{self.jax.device_count()} x {self.jax.devices()[0].platform}'


def _nnx_train_steps(graphdef, state, images, labels, indices, *,
                    axis_name=None):
  """``steps.train_steps`` for an NNX (model, optimizer): one ``lax.scan``
  over the chunk's batches, gradients averaged over ``axis_name``."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from seqclf.data import ops  # pylint: disable=g-import-not-at-top

  def body(state, idx):
    model, optimizer = nnx.merge(graphdef, state)
    x, y = ops.to_float(images[idx]), labels[idx]

    def loss_fn(model):
      logits = model(x)
      return optax.softmax_cross_entropy_with_integer_labels(
          logits, y).mean(), logits

    (loss, logits), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
    metrics = {'loss': loss,
               'accuracy': jnp.mean(jnp.argmax(logits, -1) == y)}
    if axis_name is not None:
      grads = jax.lax.pmean(grads, axis_name)
      metrics = jax.lax.pmean(metrics, axis_name)
    optimizer.update(model, grads)
    return nnx.state((model, optimizer)), metrics

  return jax.lax.scan(body, state, indices)


class _SeqclfNNX(_Seqclf):
  """The NNX classifier, trained in ``_Seqclf``'s layout by an NNX step."""

  VARIANTS = {'nnx': {'impl': 'fused'}, 'nnx-kernel': {'impl': 'kernel'}}

  def setup(self, batch: int, steps: int) -> None:
    import functools  # pylint: disable=g-import-not-at-top
    from flax import nnx  # pylint: disable=g-import-not-at-top
    from seqclf.nnx import classifier  # pylint: disable=g-import-not-at-top
    from seqclf.training import loop, optim  # pylint: disable=g-import-not-at-top
    config = self.config.copy_and_resolve_references()
    config.batch_size = batch
    dp = self.parallel.setup(config.parallelism, batch)
    model = classifier.from_config(config, FEATURES, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optim.optimizer(config), wrt=nnx.Param)
    graphdef, state = nnx.split((model, optimizer))
    runner = loop.Chunks(
        dp.chunk_fn(functools.partial(_nnx_train_steps, graphdef)),
        dp.put_data(self.train['image'], self.train['label']), 0,
        len(self.train['label']), batch, put_indices=dp.put_indices,
        to_run=dp.to_run, from_run=dp.from_run, metrics=dp.metrics)
    state = dp.canonical(state)
    runner.compile(state, dp.put_indices(
        _indices(len(self.train['label']), batch, steps, 0)))
    self.runs[batch] = [runner, state]


class _Flax:
  """The straightforward Flax recipe: nn.RNN(OptimizedLSTMCell), jit per step."""

  def __init__(self, train, task: str = 'row'):
    import flax.linen as nn  # pylint: disable=g-import-not-at-top
    import jax  # pylint: disable=g-import-not-at-top
    import optax  # pylint: disable=g-import-not-at-top
    from flax.training import train_state  # pylint: disable=g-import-not-at-top

    class Model(nn.Module):
      @nn.compact
      def __call__(self, x):
        h = nn.RNN(nn.OptimizedLSTMCell(HIDDEN))(x)
        return nn.Dense(CLASSES)(h[:, -1])

    def step(state, x, y):
      def loss_fn(params):
        logits = state.apply_fn({'params': params}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
      loss, grads = jax.value_and_grad(loss_fn)(state.params)
      return state.apply_gradients(grads=grads), loss

    model = Model()
    params = model.init(jax.random.key(0), np.zeros((1, *TASKS[task]),
                                                    np.float32))['params']
    self.state = train_state.TrainState.create(
        apply_fn=model.apply, params=params, tx=optax.adam(1e-3))
    self.step = jax.jit(step, donate_argnums=0)
    self.images = _as_task(train['image'], task).astype(np.float32) / 255.0
    self.labels = train['label']

  def setup(self, batch: int, steps: int) -> None:
    del steps
    idx = _indices(len(self.labels), batch, 1, 0)[0]
    self.state, loss = self.step(self.state, self.images[idx], self.labels[idx])
    float(loss)

  def run(self, batch: int, idx: np.ndarray) -> float:
    del batch
    loss = None
    for rows in idx:
      self.state, loss = self.step(self.state, self.images[rows],
                                   self.labels[rows])
    return float(loss)


class _Torch:
  """The usual PyTorch loop: nn.LSTM + Linear, Adam, CPU build."""

  def __init__(self, train, device='cpu', threads=0, bf16=False,
               task: str = 'row'):
    import torch  # pylint: disable=g-import-not-at-top
    self.torch, self.bf16 = torch, bf16
    if threads:
      # On a loaded machine torch's spinning OpenMP threads can collapse
      # (one waits for a descheduled sibling at every op); 1 thread avoids it.
      torch.set_num_threads(threads)
    torch.manual_seed(0)
    self.lstm = torch.nn.LSTM(TASKS[task][1], HIDDEN,
                              batch_first=True).to(device)
    self.head = torch.nn.Linear(HIDDEN, CLASSES).to(device)
    self.opt = torch.optim.Adam(
        list(self.lstm.parameters()) + list(self.head.parameters()), lr=1e-3)
    # The data lives on the device, as seqclf's does (cuDNN on a GPU).
    self.images = torch.from_numpy(
        _as_task(train['image'], task).astype(np.float32) / 255.0).to(device)
    self.labels = torch.from_numpy(train['label'].astype(np.int64)).to(device)
    self.device = device
    if bf16:
      try:  # oneDNN has a bfloat16 LSTM only for some CPUs.
        self._step(torch.zeros(2, dtype=torch.int64, device=device))
      except RuntimeError as e:
        raise Skip(f'torch.autocast(bfloat16) nn.LSTM cannot run on this '
                   f'device ({str(e).splitlines()[0][:120]}).') from e

  def _step(self, rows):
    x, y = self.images[rows], self.labels[rows]
    with self.torch.autocast(self.device.split(':')[0], self.torch.bfloat16,
                             enabled=self.bf16):
      out, _ = self.lstm(x)
      logits = self.head(out[:, -1])
    loss = self.torch.nn.functional.cross_entropy(logits.float(), y)
    self.opt.zero_grad(set_to_none=True)
    loss.backward()
    self.opt.step()
    return loss.detach()

  def setup(self, batch: int, steps: int) -> None:
    del steps
    rows = _indices(len(self.labels), batch, 1, 0)[0].astype(np.int64)
    float(self._step(self.torch.from_numpy(rows).to(self.device)))

  def run(self, batch: int, idx: np.ndarray) -> float:
    del batch
    loss = None
    for rows in self.torch.from_numpy(idx.astype(np.int64)).to(self.device):
      loss = self._step(rows)
    return float(loss)  # Waits for the device.


def _worker(name: str, conn, num_examples: int | None,
            torch_device: str, torch_threads: int, task: str = 'row') -> None:
  """Serves ('setup', batch, steps) and ('run', batch, idx) from the parent."""
  try:
    train = _load_train(num_examples)
    if name.startswith('seqclf-nnx'):
      impl = _SeqclfNNX(train, name.partition('-')[2], task)
    elif name.startswith('seqclf'):
      impl = _Seqclf(train, name.partition('-')[2], task)
    else:
      impl = (_Flax(train, task) if name == 'flax' else
              _Torch(train, torch_device, torch_threads, name == 'torch-bf16',
                     task))
    versions = {}
    for module in ('jax', 'flax', 'torch'):
      if module in sys.modules:
        versions[module] = sys.modules[module].__version__
    if 'torch' in sys.modules:
      versions['torch_threads'] = sys.modules['torch'].get_num_threads()
      versions['torch_device'] = torch_device
    if isinstance(impl, _Seqclf):
      versions[f'{name}_devices'] = impl.devices
    conn.send(('ready', versions))
    while True:
      msg = conn.recv()
      if msg[0] == 'stop':
        conn.send(('stopped', _peak_rss_mb()))
        return
      t = time.perf_counter()
      if msg[0] == 'setup':
        impl.setup(msg[1], msg[2])
      elif msg[0] == 'choices':  # What impl each batch size ran (seqclf).
        conn.send(('done', getattr(impl, 'choices', {})))
        continue
      else:
        impl.run(msg[1], msg[2])
      conn.send(('done', time.perf_counter() - t))
  except Skip as e:
    conn.send(('skip', str(e)))
  except Exception as e:  # pylint: disable=broad-except
    conn.send(('error', f'{type(e).__name__}: {e}'))


# ------------------------------------------------------------------ parent


def gemm_peak(shapes, gflop: float = 2.0,
              dtype=np.float32) -> dict[str, float]:
  """Best fp32 GFLOP/s of XLA:CPU and numpy's BLAS on the given (m, k, n).

  Each timing repeats the matmul for about ``gflop`` GFLOP.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  out = {}
  for m, k, n in shapes:
    a, b = np.ones((m, k), dtype), np.ones((k, n), dtype)
    reps = max(1, int(gflop * 1e9 // (2 * m * k * n)))
    # A dependent chain, so XLA neither hoists nor drops the repeated matmul.
    chain = jax.jit(lambda a, b: jax.lax.fori_loop(
        0, reps, lambda i, x: x.at[0, 0].add(jnp.dot(x, b)[0, 0] * 1e-9), a))
    ja, jb = jnp.asarray(a), jnp.asarray(b)
    jax.block_until_ready(chain(ja, jb))
    best = {'xla': 0.0, 'numpy': 0.0}
    for _ in range(3):
      t = time.perf_counter()
      jax.block_until_ready(chain(ja, jb))
      best['xla'] = max(best['xla'], reps * 2 * m * k * n / (time.perf_counter() - t))
      t = time.perf_counter()
      for _ in range(reps):
        a @ b
      best['numpy'] = max(best['numpy'], reps * 2 * m * k * n / (time.perf_counter() - t))
    for lib, v in best.items():
      out[f'{lib} {m}x{k}x{n}'] = v / 1e9
  return out


def time_to_accuracy(workdir: Path, cache: Path, target: float) -> dict:
  """Wall seconds of ``seqclf train`` on configs/default.py, and its result.

  ``cache`` is its compilation cache: empty for a first run on a machine,
  filled by an earlier run for a repeated one.
  """
  cmd = [sys.executable, '-m', 'seqclf', 'train', '--config',
         str(REPO / 'configs' / 'default.py'), '--workdir', str(workdir),
         f'--compilation_cache={cache}', '--quiet']
  t = time.perf_counter()
  proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  _, status, usage = os.wait4(proc.pid, 0)
  wall = time.perf_counter() - t
  proc.returncode = os.waitstatus_to_exitcode(status)
  log = proc.stdout.read()
  if proc.returncode:
    return {'error': f'exit {proc.returncode}: {log.strip()[-500:]}'}
  results = json.loads((workdir / 'results.json').read_text())
  return {'command': ' '.join(['seqclf'] + cmd[3:]), 'wall_seconds': wall,
          'test_accuracy': results['test_accuracy'],
          'reached_target': results['test_accuracy'] >= target,
          'target': target,
          'compile_seconds': results.get('compile_seconds'),
          'train_seconds': results.get('train_seconds'),
          'setup_seconds': results.get('setup_seconds'),
          'eval_and_save_seconds': results.get('eval_and_save_seconds'),
          'results_wall_seconds': results.get('wall_seconds'),
          'train_examples_per_second': results.get('train_examples_per_second'),
          'peak_rss_mb': usage.ru_maxrss / 1024}


def run_benchmark(args) -> dict:
  ctx = mp.get_context('spawn')
  impls = [i for i in args.impls.split(',') if i]
  batch_sizes = [int(b) for b in args.batch_sizes.split(',')]
  steps = {b: args.steps or max(2, round(args.examples_per_call / b))
           for b in batch_sizes}
  workers, versions, skipped = {}, {}, {}
  for name in impls:
    if name.startswith('torch'):
      try:
        import torch  # noqa: F401  # pylint: disable=g-import-not-at-top,unused-import
      except ImportError:
        skipped[name] = ('torch is not installed: pip install torch==2.13.0 '
                         "(or '.[bench]') to compare with PyTorch.")
        print(f'benchmark: skipping {name}: {skipped[name]}', file=sys.stderr)
        continue
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_worker, args=(name, child, args.num_examples,
                                               args.torch_device,
                                               args.torch_threads, args.task))
    proc.start()
    workers[name] = (proc, parent)
  for name, (proc, conn) in list(workers.items()):
    kind, payload = conn.recv()
    if kind == 'error':
      raise RuntimeError(f'{name} worker failed to start: {payload}')
    if kind == 'skip':
      skipped[name] = payload
      print(f'benchmark: skipping {name}: {payload}', file=sys.stderr)
      proc.join()
      del workers[name]
      continue
    versions[name] = payload

  def call(name, *msg):
    conn = workers[name][1]
    conn.send(msg)
    kind, payload = conn.recv()
    if kind == 'error':
      raise RuntimeError(f'{name} worker failed on {msg[0]}: {payload}')
    return payload

  n = args.num_examples or 55000
  results = {name: {'compile_seconds': {}, 'seconds': {}} for name in workers}
  for b in batch_sizes:
    for name in workers:  # Compile (and warm up) every size first.
      results[name]['compile_seconds'][b] = call(name, 'setup', b, steps[b])
      call(name, 'run', b, _indices(n, b, steps[b], 0))  # untimed warm-up
  names = list(workers)
  for r in range(args.rounds):
    order = names[r % len(names):] + names[:r % len(names)]
    for b in batch_sizes:
      idx = _indices(n, b, steps[b], r + 1)
      for name in order:
        results[name]['seconds'].setdefault(b, []).append(
            call(name, 'run', b, idx))
    print(f'benchmark: round {r + 1}/{args.rounds} done', file=sys.stderr)
  for name in workers:
    if name.startswith('seqclf'):
      results[name]['impl_choice'] = call(name, 'choices')
  for name, (proc, conn) in workers.items():
    conn.send(('stop',))
    results[name]['peak_rss_mb'] = conn.recv()[1]
    proc.join()

  flops = train_flops_per_example(HIDDEN, args.task)
  peaks = gemm_peak([(100, HIDDEN, 4 * HIDDEN), (1024, HIDDEN, 4 * HIDDEN),
                     (2048, 2048, 2048)], args.gemm_gflop)
  peak = max(peaks.values())
  for name, res in results.items():
    res['examples_per_second'] = {
        b: [steps[b] * b / s for s in secs] for b, secs in res['seconds'].items()}
    res['median_examples_per_second'] = {
        b: statistics.median(v) for b, v in res['examples_per_second'].items()}
    res['achieved_gflops'] = {
        b: v * flops / 1e9 for b, v in res['median_examples_per_second'].items()}
    res['fraction_of_peak'] = {
        b: v / peak for b, v in res['achieved_gflops'].items()}
  tta = None
  if args.tta:
    with tempfile.TemporaryDirectory() as tmp:
      tta = {run: time_to_accuracy(Path(tmp) / run, Path(tmp) / 'cache', 0.97)
             for run in ('cold', 'cached')}
  import jax  # pylint: disable=g-import-not-at-top
  return {
      'date': datetime.datetime.now().isoformat(timespec='seconds'),
      'machine': _machine(),
      'versions': {'python': platform.python_version(), 'jax': jax.__version__,
                   **{k: v for d in versions.values() for k, v in d.items()}},
      'protocol': {'task': args.task, 'batch_sizes': batch_sizes,
                   'steps_per_call': steps,
                   'rounds': args.rounds, 'num_examples': n,
                   'statistic': 'median over rounds, calls interleaved'},
      'train_flops_per_example': flops,
      'gemm_gflops': peaks, 'gemm_peak_gflops': peak,
      'results': results, 'skipped': skipped, 'time_to_accuracy': tta,
  }


def machine_tag() -> str:
  """The CPU's vendor and widest vector ISA, e.g. ``amd-avx2``: results of
  one kind of machine say nothing about another, so each gets its folder."""
  try:
    info = Path('/proc/cpuinfo').read_text()
  except OSError:
    return platform.machine().lower()
  vendor = {'GenuineIntel': 'intel', 'AuthenticAMD': 'amd'}.get(
      next((l.split(':')[1].strip() for l in info.splitlines()
            if l.startswith('vendor_id')), ''), platform.machine().lower())
  flags = set(next((l.split(':')[1] for l in info.splitlines()
                    if l.startswith(('flags', 'Features'))), '').split())
  isa = next((name for name, flag in (('avx512-amx', 'amx_tile'),
                                       ('avx512', 'avx512f'), ('avx2', 'avx2'),
                                       ('neon', 'asimd')) if flag in flags),
             'baseline')
  return f'{vendor}-{isa}'


def _machine() -> str:
  model = platform.processor() or platform.machine()
  try:
    for line in Path('/proc/cpuinfo').read_text().splitlines():
      if line.startswith('model name'):
        model = line.split(':', 1)[1].strip()
        break
  except OSError:
    pass
  return f'{model}, {os.cpu_count()} CPUs, {platform.system()}'


def markdown(report: dict) -> str:
  res, sizes = report['results'], report['protocol']['batch_sizes']
  head = ('| implementation | ' + ' | '.join(f'batch {b} ex/s' for b in sizes)
          + ' | compile/warm-up s (max) | peak RSS MB | % fp32 GEMM peak '
          f'(batch {sizes[-1]}) |')
  lines = [head, '|' + '---|' * (len(sizes) + 4)]
  for name, r in res.items():
    cells = []
    for b in sizes:
      v = r['examples_per_second'][b]
      cells.append(f'{statistics.median(v):,.0f} ({min(v):,.0f}–{max(v):,.0f})')
    mark = '†' if name.endswith('-bf16') else ''
    lines.append(
        f'| {name} | ' + ' | '.join(cells) +
        f' | {max(r["compile_seconds"].values()):.1f} | '
        f'{r["peak_rss_mb"]:,.0f} | '
        f'{100 * r["fraction_of_peak"][sizes[-1]]:.0f}%{mark} |')
  out = ['\n'.join(lines), '']
  if any(name.endswith('-bf16') for name in res):
    out.append('- † bfloat16 matmuls, measured against the float32 GEMM peak '
               '(AMX and oneDNN exceed it).')
  speed = lambda name, b: res[name]['median_examples_per_second'][b]
  ratios = lambda a, b: ', '.join(f'batch {n}: {speed(a, n) / speed(b, n):.2f}×'
                                  for n in sizes)
  for b, choice in res.get('seqclf', {}).get('impl_choice', {}).items():
    out.append(f"- seqclf (impl='auto') at batch {b}, per device "
               f"{choice['key'].get('batch', '?')}: " + (
                   _choice_line(choice)))
  for name in res:  # Each seqclf row against torch; bf16 also against bf16.
    peers = ['torch'] + (['torch-bf16'] if name.endswith('-bf16') else [])
    for peer in (p for p in peers if p in res and name.startswith('seqclf')):
      out.append(f'- {name} / {peer}: {ratios(name, peer)}')
  forced = [f'seqclf-{p}' for p in ('kernel', 'fused', 'scan')
            if f'seqclf-{p}' in res]
  if 'seqclf' in res and forced:
    fastest = ', '.join(
        f'batch {n}: {speed("seqclf", n) / max(speed(f, n) for f in forced):.2f}×'
        for n in sizes)
    out.append(f'- seqclf (auto) / the fastest forced path of '
               f'{", ".join(forced)}: {fastest}')
  for a, b in (('seqclf', 'seqclf-scan'), ('seqclf-nnx', 'seqclf-fused'),
               ('seqclf-nnx-kernel', 'seqclf-kernel'),
               ('seqclf-kernel-v3', 'seqclf-kernel'),
               ('seqclf-kernel-v3', 'seqclf-scan'),
               ('seqclf-kernel-v3', 'seqclf-fused'),
               ('seqclf-kernel-bf16', 'seqclf-kernel'),
               ('seqclf-kernel-cpl-bf16', 'seqclf-kernel-cpl'),
               ('seqclf-kernel-cpl-bf16', 'seqclf-kernel'),
               ('seqclf-kernel-cpl-bf16', 'seqclf-kernel-bf16'),
               ('seqclf-kernel-bf16', 'seqclf-fused-bf16'),
               ('seqclf-kernel-cpl-bf16', 'seqclf-fused-bf16'),
               ('seqclf-gpu', 'seqclf-fused'), ('seqclf-gpu-tf32', 'seqclf-fused'),
               ('seqclf-gpu-bf16', 'seqclf-fused')):
    if a in res and b in res:
      out.append(f'- {a} / {b}: {ratios(a, b)}')
  for name, why in report['skipped'].items():
    out.append(f'- {name} skipped: {why}')
  out.append(f'- achieved training GFLOP/s at batch {sizes[-1]} '
             f'({report["train_flops_per_example"]:,.0f} matmul FLOPs an '
             'example): ' + ', '.join(
                 f'{name} {r["achieved_gflops"][sizes[-1]]:,.0f}'
                 for name, r in res.items() if 'achieved_gflops' in r))
  out.append(f'- fp32 GEMM peak (best measured): {report["gemm_peak_gflops"]:.0f} '
             'GFLOP/s; ' + ', '.join(f'{k}: {v:.0f}'
                                      for k, v in report['gemm_gflops'].items()))
  for run, tta in (report.get('time_to_accuracy') or {}).items():
    if 'error' in tta:
      out.append(f'- time-to-accuracy run ({run}) failed: {tta["error"]}')
      continue
    out.append(
        f'- `{tta["command"]}` ({run} compilation cache): '
        f'{tta["wall_seconds"]:.1f} s for the process; in results.json '
        f'{tta["results_wall_seconds"]:.1f} s = setup {tta["setup_seconds"]:.1f}'
        f' + compile {tta["compile_seconds"]:.1f} + train '
        f'{tta["train_seconds"]:.1f} + evaluation and checkpoints '
        f'{tta["eval_and_save_seconds"]:.1f} s (+ logging); test accuracy '
        f'{tta["test_accuracy"]:.4f} '
        f'({"reaches" if tta["reached_target"] else "misses"} {tta["target"]:.0%}), '
        f'peak RSS {tta["peak_rss_mb"]:,.0f} MB')
  p = report['protocol']
  task = TASKS[p.get('task', 'row')]
  out.append(f'- task {p.get("task", "row")} ({task[0]} steps x {task[1]} '
             'features a sequence)')
  out.append(f'- {report["date"]}, {report["machine"]}; '
             + ', '.join(f'{k} {v}' for k, v in report['versions'].items())
             + f'; steps per timed call {p["steps_per_call"]}, {p["rounds"]} '
             'interleaved rounds, medians (min–max).')
  return '\n'.join(out) + '\n'


def _choice_line(choice: dict) -> str:
  """``auto``'s pick and each path's speed relative to it, as timed."""
  seconds = choice['seconds']
  if not seconds:
    return f"{choice['impl']} (the only eligible path)"
  best = seconds[choice['impl']]
  return f"{choice['impl']} (" + ', '.join(
      f'{n} {best / s:.2f}×' for n, s in seconds.items()
      if n != choice['impl']) + ' of its speed)'


def bar_chart(report: dict, path: Path) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  res, sizes = report['results'], report['protocol']['batch_sizes']
  fig, ax = plt.subplots(figsize=(7, 4))
  width = 0.8 / len(res)
  for k, (name, r) in enumerate(res.items()):
    med = [r['median_examples_per_second'][b] for b in sizes]
    lo = [m - min(r['examples_per_second'][b]) for m, b in zip(med, sizes)]
    hi = [max(r['examples_per_second'][b]) - m for m, b in zip(med, sizes)]
    ax.bar(np.arange(len(sizes)) + k * width, med, width, yerr=[lo, hi],
           label=name, capsize=3)
  ax.set_xticks(np.arange(len(sizes)) + width * (len(res) - 1) / 2,
                [f'batch {b}' for b in sizes])
  ax.set_ylabel('training examples / s (median)')
  ax.set_title(f'LSTM-128 row-MNIST training, {report["machine"]}', fontsize=9)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--impls', default=','.join(IMPLS),
                      help=f'comma-separated subset of {IMPLS}')
  parser.add_argument('--batch_sizes', default='100,256,1024')
  parser.add_argument('--task', default='row', choices=sorted(TASKS),
                      help='row: 28 steps of 28 pixels; pixel: 784 steps of '
                      'one (sequential MNIST)')
  parser.add_argument('--steps', type=int, default=0,
                      help='steps per timed call (default: ~examples_per_call/batch)')
  parser.add_argument('--examples_per_call', type=int, default=5000)
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--num_examples', type=int, default=0,
                      help='train on the first N examples only (0: all 55,000)')
  parser.add_argument('--torch_device', default='cpu',
                      help="torch's device: cpu, or cuda on a GPU machine")
  parser.add_argument('--torch_threads', type=int, default=0,
                      help="torch.set_num_threads (0: torch's default)")
  parser.add_argument('--gemm_gflop', type=float, default=2.0,
                      help='work per timing of the GEMM peak measurement')
  parser.add_argument('--no_tta', dest='tta', action='store_false',
                      help='skip the time-to-accuracy run of configs/default.py')
  parser.add_argument('--out', default='',
                      help='output folder (default: experiments/results/'
                      'MACHINE, e.g. amd-avx2)')
  args = parser.parse_args(argv)
  known = set(IMPLS)
  bad = [i for i in args.impls.split(',') if i not in known]
  if bad:
    parser.error(f'unknown --impls {bad}; choose from {sorted(known)}.')
  try:
    sizes = [int(b) for b in args.batch_sizes.split(',')]
  except ValueError:
    parser.error(f'--batch_sizes must be comma-separated integers, got '
                 f'{args.batch_sizes!r}.')
  if min(sizes) <= 0 or args.rounds <= 0 or args.steps < 0:
    parser.error('--batch_sizes and --rounds must be > 0 and --steps >= 0.')
  report = run_benchmark(args)
  out = Path(args.out or REPO / 'experiments' / 'results' / machine_tag())
  out.mkdir(parents=True, exist_ok=True)
  (out / 'benchmark.json').write_text(json.dumps(report, indent=2) + '\n')
  table = markdown(report)
  (out / 'benchmark.md').write_text(table)
  bar_chart(report, out / 'benchmark.png')
  print(table)
  print(f'Wrote {out}/benchmark.json, benchmark.md, benchmark.png')
  return 0


if __name__ == '__main__':
  sys.exit(main())
