"""A trained model as a ``jax.export`` artifact, for serving without seqclf.

``export_model(workdir, out)`` writes two files into ``out``:

* ``model.jax_export``: ``jax.export``'s serialization of the inference
  function ``images -> logits``, the trained params inside it, for a
  symbolic batch size, lowered for CPU, CUDA, ROCm and TPU. It runs the
  portable ``nn.scan`` path (the CPU kernel is a custom call without
  compatibility guarantees, the fused path is only faster to train), so
  its numbers are ``load_model``'s to float rounding.
* ``model.json``: what a caller needs beside it: the input shape and dtype,
  how pixels are scaled (uint8 / 255, then the model's own
  ``(x - input_mean) / input_std``, which is inside the function), the class
  names and the run's config.

Loading needs jax alone::

    exported = jax.export.deserialize(open('model.jax_export', 'rb').read())
    logits = exported.call(images.astype('float32') / 255)  # (N, 28, 28)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from seqclf import datasets
from seqclf import inference
from seqclf import models

ARTIFACT = 'model.jax_export'
METADATA = 'model.json'
PLATFORMS = ('cpu', 'cuda', 'rocm', 'tpu')


def class_names(dataset: str) -> list[str]:
  """The names of ``dataset``'s classes, by label."""
  if dataset == 'fashion_mnist':
    from seqclf import fashion_mnist  # pylint: disable=g-import-not-at-top
    return list(fashion_mnist.CLASS_NAMES)
  return [str(d) for d in range(10)]


def export_model(workdir: str | Path, out: str | Path,
                 step: int | None = None) -> dict[str, Any]:
  """Writes ``out/model.jax_export`` and ``out/model.json`` for the
  checkpoint at ``step`` (default: latest); returns the JSON's contents."""
  _, params, config = inference.load_model(workdir, step)
  model = models.from_config(config, 'scan')  # Portable: no custom calls.

  def logits(images: jax.Array) -> jax.Array:
    # Images in, read as the run read them (its task), inside the function.
    return model.apply({'params': params}, datasets.view(config, images))

  batch, = jax.export.symbolic_shape('batch')
  spec = jax.ShapeDtypeStruct((batch, *datasets.IMAGE_SHAPE), jnp.float32)
  exported = jax.export.export(jax.jit(logits), platforms=PLATFORMS)(spec)
  out = Path(out)
  out.mkdir(parents=True, exist_ok=True)
  (out / ARTIFACT).write_bytes(exported.serialize())
  metadata = {
      'artifact': ARTIFACT,
      'input': {'shape': ['batch', *datasets.IMAGE_SHAPE], 'dtype': 'float32',
                'pixels': 'uint8 / 255, in [0, 1]',
                'read_as': f'{config.task} (seqclf.tasks), inside the function'},
      'normalization': {'input_mean': config.input_mean,
                        'input_std': config.input_std,
                        'applied': 'inside the function'},
      'output': {'shape': ['batch', config.num_classes], 'dtype': 'float32',
                 'meaning': 'logits'},
      'class_names': class_names(config.dataset)[:config.num_classes],
      'platforms': list(PLATFORMS),
      'config': config.to_dict(),
  }
  (out / METADATA).write_text(json.dumps(metadata, indent=1) + '\n')
  return metadata
