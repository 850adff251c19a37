"""One parameter layout for both APIs: the NNX modules draw, hold and run
exactly the linen modules' parameters, and convert to and from them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx, traverse_util

from conftest import needs_cpu_kernel, perturbed
from nnx_cases import HIDDEN, assert_equal, inputs, layer
from seqclf import nnx as seqnnx
from seqclf.errors import UsageError
from seqclf.nn import classifier, recurrent

LINEN = {'lstm': recurrent.LSTM, 'gru': recurrent.GRU,
         'elman': recurrent.Elman}


def _paths(tree):
  return sorted(traverse_util.flatten_dict(tree, sep='/'))


@pytest.mark.parametrize('cell', [
    'lstm', pytest.param('gru', marks=pytest.mark.slow),
    pytest.param('elman', marks=pytest.mark.slow)])
def test_a_layer_draws_linen_init_values_at_linen_paths(cell):
  """The same key (rngs.params()) gives the values linen's init gives, at
  the linen tree's paths, for any sequence length."""
  model = seqnnx.recurrent.LSTM if cell == 'lstm' else (
      seqnnx.GRU if cell == 'gru' else seqnnx.Elman)
  ours = seqnnx.to_linen_params(model(3, HIDDEN, rngs=nnx.Rngs(7)))
  theirs = jax.jit(LINEN[cell](HIDDEN).init)(nnx.Rngs(7).params(),
                                             inputs())['params']
  assert_equal(ours, theirs)
  assert _paths(ours)[0].startswith('cell/')
  # The path has no bearing on the values: every impl draws the same.
  if cell == 'lstm':
    assert_equal(ours, seqnnx.to_linen_params(
        seqnnx.LSTM(3, HIDDEN, impl='fused', rngs=nnx.Rngs(7))))


@pytest.mark.parametrize('options', [
    pytest.param({}, id='default'),
    pytest.param({'bidirectional': True, 'num_layers': 2},
                 id='bidirectional-2', marks=pytest.mark.slow),
    pytest.param({'cell': 'gru', 'head_init': 'normal', 'input_mean': 0.5},
                 id='gru', marks=pytest.mark.slow),
    pytest.param({'channel_mean': (0.1, 0.2, 0.3, 0.4), 'missing': 'impute',
                  'channel_std': (1.0, 2.0, 0.5, 4.0)}, id='channels-impute'),
    pytest.param({'conv_features': 4, 'pooling': 'mean'}, id='conv-mean')])
def test_the_classifier_draws_and_computes_what_linen_does(options):
  """Paths lstm_0/…, lstm_0_reverse/…, head/…; values of linen's jitted
  init; logits bitwise linen's apply on them, lengths or not."""
  model = seqnnx.LSTMClassifier(4, 3, hidden_size=HIDDEN, rngs=nnx.Rngs(1),
                                **options)
  linen = classifier.LSTMClassifier(num_classes=3, hidden_size=HIDDEN,
                                    **options)
  x = inputs((3, 5, 4))
  params = jax.jit(linen.init)(nnx.Rngs(1).params(), x)['params']
  assert_equal(seqnnx.to_linen_params(model), params)
  lengths = jnp.array([5, 2, 4])
  assert_equal(model(x, seq_lengths=lengths),
               linen.apply({'params': params}, x, seq_lengths=lengths))
  assert_equal(nnx.jit(lambda m, x: m(x))(model, x),
               jax.jit(linen.apply)({'params': params}, x))


@pytest.mark.parametrize('impl', [
    'fused', pytest.param('scan', marks=pytest.mark.slow),
    pytest.param('kernel', marks=[needs_cpu_kernel, pytest.mark.slow])])
def test_to_linen_params_runs_in_the_linen_layer_bitwise(impl):
  model = layer(impl=impl)
  x = inputs()
  linen = recurrent.LSTM(HIDDEN, impl=impl)
  ours = model(x, seq_lengths=jnp.array([6, 3, 1, 5, 2]), return_carry=True)
  theirs = linen.apply({'params': seqnnx.to_linen_params(model)}, x,
                       seq_lengths=jnp.array([6, 3, 1, 5, 2]))
  assert_equal(ours, theirs)


def test_from_linen_params_fills_a_model_or_builds_one_abstractly():
  x = inputs((2, 5, 4))
  linen = classifier.LSTMClassifier(num_classes=3, hidden_size=HIDDEN)
  params = perturbed(linen.init(jax.random.key(0), x)['params'])
  build = lambda: seqnnx.LSTMClassifier(4, 3, hidden_size=HIDDEN,
                                        rngs=nnx.Rngs(5))
  for target in (build(), build):
    model = seqnnx.from_linen_params(target, params)
    assert_equal(seqnnx.to_linen_params(model), params)
  assert_equal(model(x), linen.apply({'params': params}, x))
  # Round trip, NNX -> linen -> NNX.
  again = seqnnx.from_linen_params(build, seqnnx.to_linen_params(model))
  assert_equal(nnx.state(again, nnx.Param), nnx.state(model, nnx.Param))


def test_params_of_another_model_are_one_error_naming_each_path():
  model = seqnnx.LSTMClassifier(4, 3, hidden_size=HIDDEN, rngs=nnx.Rngs(0))
  params = seqnnx.to_linen_params(model)
  wider = {**params, 'head': {'kernel': jnp.zeros((32, 3)),
                              'bias': jnp.zeros((3,))}}
  with pytest.raises(UsageError) as e:
    seqnnx.from_linen_params(model, wider)
  message = str(e.value)
  assert '\n' not in message and e.value.arg == 'params'
  assert 'head/kernel: params (32, 3) vs model (16, 3)' in message
  assert 'build the model with the options' in message
  with pytest.raises(UsageError, match='lstm_0_reverse/cell/input/kernel: '
                     'params absent'):
    seqnnx.from_linen_params(
        lambda: seqnnx.LSTMClassifier(4, 3, hidden_size=HIDDEN,
                                      bidirectional=True, rngs=nnx.Rngs(0)),
        params)


def test_unknown_options_are_one_error_listing_the_options():
  with pytest.raises(UsageError, match="LSTM has no option 'hidden'; its "
                     r"options are \[.*'forget_bias'.*'time_major'"):
    seqnnx.LSTM(3, 8, hidden=8, rngs=nnx.Rngs(0))
  with pytest.raises(UsageError, match="LSTMClassifier has no option "
                     "'return_carry'"):
    seqnnx.LSTMClassifier(3, 2, return_carry=True, rngs=nnx.Rngs(0))
  with pytest.raises(UsageError, match=r"cell must be one of \('lstm'"):
    seqnnx.LSTMClassifier(3, 2, cell='tcn', rngs=nnx.Rngs(0))


@pytest.mark.slow
@pytest.mark.parametrize('options', [dict(num_layers=2, dropout_rate=0.5),
                                     dict(input_noise=0.3)],
                         ids=['dropout', 'input_noise'])
def test_dropout_follows_nnx_train_and_eval_with_linens_masks(options):
  """Training mode (nnx's default) drops (or jitters the inputs) as linen's
  train=True does with the same key; eval() turns it off; the
  construction's stream advances."""
  x = inputs((3, 5, 4))
  model = seqnnx.LSTMClassifier(4, 3, hidden_size=HIDDEN, **options,
                                rngs=nnx.Rngs(params=0, dropout=1))
  linen = model.linen_module
  params = {'params': seqnnx.to_linen_params(model)}
  key = nnx.Rngs(dropout=5).dropout()
  assert_equal(model(x, rngs=nnx.Rngs(dropout=5)),
               linen.apply(params, x, True, rngs={'dropout': key}))
  first, second = model(x), model(x)
  assert not np.array_equal(first, second)
  model.eval()
  assert model.deterministic
  assert_equal(model(x), linen.apply(params, x))
  model.train()
  assert not model.deterministic
