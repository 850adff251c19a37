"""Which paths can run a layer (``seqclf.kernels.paths``): the kernel only on
the CPU, where it is built, and for what it can run; a forced path that
cannot run is one line naming those that can."""

import jax
import jax.numpy as jnp
import pytest

from conftest import needs_cpu_kernel
from seqclf.config import base_config, validate
from seqclf.errors import ConfigError
from seqclf.kernels import gpu_lstm, lstm_kernel, paths
from seqclf.nn import LSTM
from seqclf.training import autotune

def _eligible(config, sharded=False, backend='cpu'):
  return paths.eligible(autotune.layer_of(config, sharded), backend)


@needs_cpu_kernel
@pytest.mark.parametrize('changes,sharded,expected', [
    ({}, False, ('kernel', 'fused', 'scan')),
    ({}, True, ('fused', 'scan')),
    ({'dtype': 'bfloat16'}, False, ('fused', 'scan')),
    ({'hidden_size': 20}, False, ('fused', 'scan')),
    ({'cell': 'gru'}, False, ('scan',)),
])
def test_auto_times_only_the_paths_that_can_run(changes, sharded, expected):
  config = base_config()
  config.update(changes)
  assert _eligible(config, sharded) == expected


def test_forced_impl_is_used_as_given_without_timing(monkeypatch):
  monkeypatch.setattr(autotune, 'measure', pytest.fail)
  config = base_config()
  config.impl = 'fused'
  assert autotune.resolve_impl(config) == 'fused'


@needs_cpu_kernel
def test_asking_never_compiles_and_forced_use_builds(tmp_path, monkeypatch):
  """`available`, `auto`'s eligibility and config validation only look for
  an existing build; forcing impl='kernel' is an explicit build."""
  monkeypatch.setenv('SEQCLF_KERNEL_CACHE', str(tmp_path))
  def no_compiling(*args, **kwargs):
    raise AssertionError('compiled while asking')
  with monkeypatch.context() as patch:
    patch.setattr(lstm_kernel, 'build', no_compiling)
    assert not lstm_kernel.available()
    assert _eligible(base_config()) == ('fused', 'scan')
    config = base_config()
    config.impl = 'kernel'
    validate(config)
  assert not list(tmp_path.iterdir())
  # Forced: built now (once), then available to `auto` as well.
  x = jnp.ones((2, 3, 4))
  LSTM(16, impl='kernel').init(jax.random.key(0), x)
  assert [p.suffix for p in tmp_path.iterdir()] == ['.so']
  assert lstm_kernel.available()


@needs_cpu_kernel
def test_auto_falls_back_to_portable_paths_without_a_compiler(
    tmp_path, monkeypatch):
  monkeypatch.setenv('SEQCLF_KERNEL_CACHE', str(tmp_path))
  monkeypatch.setenv('CXX', 'no-such-compiler')
  monkeypatch.setattr(lstm_kernel, 'runs_here', lambda march: True)
  assert not lstm_kernel.available()
  assert _eligible(base_config()) == ('fused', 'scan')


@pytest.mark.gpu
@pytest.mark.parametrize('backend,expected', [
    ('gpu', ('fused', 'scan')), ('tpu', ('fused', 'scan'))])
def test_the_cpu_kernel_is_eligible_on_the_cpu_backend_only(backend, expected):
  assert _eligible(base_config(), backend=backend) == expected
  assert 'CPU backend only' in paths.why_not('kernel', paths.Layer(), backend)


@pytest.mark.gpu
def test_a_forced_path_that_cannot_run_is_one_line_naming_the_others(
    monkeypatch):
  monkeypatch.setattr(gpu_lstm.Device, 'of', classmethod(
      lambda cls, device: gpu_lstm.Device('cuda', 'NVIDIA H100', (9, 0))))
  with pytest.raises(ConfigError) as e:
    paths.check('kernel', paths.Layer(), 'gpu')
  message = str(e.value)
  assert '\n' not in message
  assert message == ("impl='kernel' cannot run this layer on the gpu backend: "
                     'the CPU kernel runs on the CPU backend only, this is '
                     "gpu; use impl='fused' or 'gpu' or 'scan'.")
  with pytest.raises(ConfigError, match="got 'GRUCell'; use impl='scan'"):
    paths.check('fused', paths.Layer(cell='GRUCell'))
  with pytest.raises(ConfigError, match=r"impl must be one of \("):
    paths.check('cudnn', paths.Layer())


@pytest.mark.gpu
def test_a_forced_kernel_on_another_backend_fails_in_the_layer(monkeypatch):
  """The layer asks `paths` with the backend it runs on: a forced kernel on
  a GPU is the one-line error, not XLA's missing FFI handler."""
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  with pytest.raises(ConfigError, match='CPU backend only'):
    LSTM(16, impl='kernel').init(jax.random.key(0), jnp.ones((2, 3, 4)))
  config = base_config()
  config.impl = 'kernel'
  with pytest.raises(ConfigError, match='CPU backend only'):
    autotune.choose_impl(config, batch=4, sequence_shape=(3, 4))
