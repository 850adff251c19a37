"""The tutorial's job in Flax NNX: row-wise MNIST with seqclf's NNX LSTM.

LSTM-128 (forget bias 1.0, pixels standardized as configs/default.py does),
Adam 1e-3, batch 100, 1000 steps, on seqclf's data in the order `seqclf
train` reads it; prints the test accuracy. Copy it as a starting point.

  python experiments/nnx_mnist.py --seed 0
"""

import argparse

import jax.numpy as jnp
import optax
from flax import nnx

from seqclf import nnx as seqnnx
from seqclf.config import base_config
from seqclf.data import order, registry, views


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--steps', type=int, default=1000)
  args = parser.parse_args()
  seed = args.seed
  config = base_config()  # MNIST, read row by row: 28 steps of 28 pixels
  data = views.view_splits(config, registry.load(config, ('train', 'test')))

  model = seqnnx.LSTMClassifier(
      28, 10, hidden_size=128, forget_bias=1.0, input_mean=0.1307,
      input_std=0.3081, impl='auto', rngs=nnx.Rngs(seed))
  optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)

  @nnx.jit
  def train_step(model, optimizer, images, labels):
    def loss_fn(model):
      logits = model(images)
      return optax.softmax_cross_entropy_with_integer_labels(
          logits, labels).mean()
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss

  @nnx.jit
  def correct(model, images, labels, mask):
    return jnp.sum((jnp.argmax(model(images), -1) == labels) & mask)

  batches = order.train_batches(data['train'], seed, batch_size=100)
  for step in range(args.steps):
    batch = next(batches)
    loss = train_step(model, optimizer, batch['image'], batch['label'])
    if step % 200 == 0:
      print(f'step {step}: loss {float(loss):.4f}')
  model.eval()
  hits = sum(int(correct(model, b['image'], b['label'], b['mask']))
             for b in order.eval_batches(data['test'], 1000))
  print(f'Test accuracy: {hits / len(data["test"]["label"]):.4f} '
        f'(seed {seed}, impl {model.impl})')


if __name__ == '__main__':
  main()
