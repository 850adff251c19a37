"""SHA-256 of the parameters that short runs train: the same code change check.

  python experiments/params_digest.py [--out FILE]

Trains a few small configs (the default model by the kernel and by nn.scan;
stacked dropout, mirroring and a cosine schedule; a GRU; a pixel task) for 30
steps with ``seqclf train``'s
loop and a 2-seed sweep on the first 2,000 MNIST training images, and prints
one JSON object: config name -> digest of every parameter's bytes (and of
each swept model's). Run it on two trees (``PYTHONPATH=OTHER_TREE``) and
compare the outputs: equal digests mean bitwise the same parameters.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

from seqclf import inference, sweep, train
from seqclf.config import base_config
from seqclf.data import prepared
from seqclf.training import checkpoint

# impl is forced in each: 'auto' decides by timing, and the paths agree to
# float rounding, not bitwise.
CONFIGS = {
    'default_kernel': dict(impl='kernel'),
    'default_scan': dict(impl='scan'),
    'stacked_dropout_hflip_cosine': dict(
        hidden_size=16, num_layers=2, dropout_rate=0.2, augment_hflip=True,
        lr_schedule='cosine', warmup_steps=5, grad_clip_norm=1.0),
    'gru_identity': dict(cell='gru', recurrent_init='identity', hidden_size=32,
                         impl='scan'),
    'pixel_bidirectional': dict(task='pixel', hidden_size=16,
                                bidirectional=True, impl='fused',
                                input_mean=0.1307, input_std=0.3081),
}


def digest(params) -> str:
  """One hash of every leaf's bytes, in tree order."""
  h = hashlib.sha256()
  for leaf in jax.tree.leaves(params):
    h.update(np.ascontiguousarray(jax.device_get(leaf)).tobytes())
  return h.hexdigest()


def small(overrides: dict):
  config = base_config()
  config.update(dict(num_train_steps=30, eval_every=20, checkpoint_every=10,
                     steps_per_call=7, log_every=10, eval_batch_size=500,
                     **overrides))
  return config


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--out', help='also write the JSON here')
  args = parser.parse_args()
  data = prepared.load_datasets(None)
  data = {'train': {k: v[:2000] for k, v in data['train'].items()},
          'validation': {k: v[:1000] for k, v in data['validation'].items()},
          'test': {k: v[:1000] for k, v in data['test'].items()}}
  out = {}
  with tempfile.TemporaryDirectory() as tmp:
    for name, overrides in CONFIGS.items():
      workdir = Path(tmp) / name
      results = train.train_and_evaluate(small(overrides), workdir, quiet=True,
                                         datasets=data)
      _, params, _ = inference.load_model(workdir)
      out[name] = {'params': digest(params), 'impl': results['impl'],
                   'test_accuracy': results['test_accuracy'],
                   'test_loss': results['test_loss']}
    config = small(CONFIGS['stacked_dropout_hflip_cosine'])
    swept = sweep.run_sweep(config, Path(tmp) / 'sweep', 2, quiet=True,
                            datasets=data)
    unit = checkpoint.manager(Path(tmp) / 'sweep' / 'units' / 'g0')
    params = unit.restore(unit.latest_step(), args=ocp.args.Composite(
        state=ocp.args.StandardRestore()))['state']['params']
    for k in range(2):
      out[f'sweep_model_{k}'] = digest(jax.tree.map(
          lambda x, k=k: np.asarray(x)[k], params))
    out['sweep_test_accuracies'] = swept['test_accuracies']
  text = json.dumps(out, indent=1, sort_keys=True)
  print(text)
  if args.out:
    Path(args.out).write_text(text + '\n')


if __name__ == '__main__':
  sys.exit(main())
