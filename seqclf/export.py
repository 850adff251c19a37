"""A trained model as a ``jax.export`` artifact, for serving without seqclf.

``export_model(workdir, out)`` writes two files into ``out``:

* ``model.jax_export``: ``jax.export``'s serialization of the inference
  function, the trained params inside it, for a symbolic batch size,
  lowered for CPU, CUDA, ROCm and TPU. For models of the image datasets it
  is ``images -> logits`` with images (batch, 28, 28); for any other data
  (series) ``(inputs, seq_lengths) -> logits`` with inputs (batch, T, F) for
  a symbolic T too and seq_lengths (batch,) int32, each row's valid steps
  (T for a row without padding), as the trainer reads data with lengths. It
  runs the portable ``nn.scan`` path (the CPU kernel is a custom call
  without compatibility guarantees, the fused path is only faster to
  train), so its numbers are ``load_model``'s to float rounding.
* ``model.json``: what a caller needs beside it: the input shape and dtype,
  how values are given (pixels: uint8 / 255; series: raw, as the data held
  them), the model's own standardization (``input_mean``/``input_std`` and
  the per-channel ``channel_mean``/``channel_std`` fitted by ``normalize``,
  inside the function), how NaN is read (``missing``), the class names and
  the run's config.

Loading needs jax alone::

    exported = jax.export.deserialize(open('model.jax_export', 'rb').read())
    logits = exported.call(images.astype('float32') / 255)  # (N, 28, 28)
    logits = exported.call(series, lengths)  # (N, T, F) float32, (N,) int32
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from seqclf import inference
from seqclf.data import registry, views

ARTIFACT = 'model.jax_export'
METADATA = 'model.json'
PLATFORMS = ('cpu', 'cuda', 'rocm', 'tpu')


def input_metadata(config: Any, shape: tuple[int, ...],
                   fixed: bool) -> dict[str, Any]:
  """``model.json``'s description of the exported function's arguments."""
  if fixed:
    return {'shape': ['batch', *shape], 'dtype': 'float32',
            'pixels': 'uint8 / 255, in [0, 1]',
            'read_as': f'{config.task} (seqclf.data.views), inside the function'}
  values = ('float32, raw: as the data the model was trained on held them '
            '(uint8 arrays as pixels / 255); the function standardizes them')
  values += ('; NaN marks a missing value, which the function fills'
             if config.missing == 'impute' else '; no NaN')
  return {'arguments': ['inputs', 'seq_lengths'],
          'shape': ['batch', 'T', shape[-1]], 'dtype': 'float32',
          'values': values,
          'seq_lengths': {'shape': ['batch'], 'dtype': 'int32',
                          'meaning': "each row's valid steps, in [1, T] "
                                     '(others are clipped to [0, T]); the '
                                     'steps after them are padding the '
                                     'model does not read (T for a full row)'}}


def export_model(workdir: str | Path, out: str | Path,
                 step: int | None = None) -> dict[str, Any]:
  """Writes ``out/model.jax_export`` and ``out/model.json``.

  Args:
    workdir: a run's directory.
    out: the directory to write (created).
    step: the checkpoint (default: the best where the run has one, else
      the latest: ``inference.load_model``).

  Returns:
    The contents of ``model.json`` (``checkpoint`` names the one exported).
  """
  # The portable path: the kernel is a custom call without compatibility
  # guarantees, and the fused path is only faster to train.
  _, _, what = inference.which_checkpoint(workdir, step)
  model, params, config = inference.load_model(workdir, step, impl='scan')
  shape = inference.input_shape(params, config)
  fixed = inference.takes_images(config)
  if fixed:  # The image models' signature, as before.
    def logits(images: jax.Array) -> jax.Array:
      # Read as the run read them (its task), inside the function.
      return model.apply({'params': params}, views.view(config, images))

    batch, = jax.export.symbolic_shape('batch')
    specs = (jax.ShapeDtypeStruct((batch, *shape), jnp.float32),)
  else:
    def logits(inputs: jax.Array, seq_lengths: jax.Array) -> jax.Array:
      # The model clips lengths to [0, T] (a served function cannot raise).
      return model.apply({'params': params}, inputs, seq_lengths=seq_lengths)

    batch, steps = jax.export.symbolic_shape('batch, T')
    specs = (jax.ShapeDtypeStruct((batch, steps, shape[-1]), jnp.float32),
             jax.ShapeDtypeStruct((batch,), jnp.int32))
  exported = jax.export.export(jax.jit(logits), platforms=PLATFORMS)(*specs)
  out = Path(out)
  out.mkdir(parents=True, exist_ok=True)
  (out / ARTIFACT).write_bytes(exported.serialize())
  metadata = {
      'artifact': ARTIFACT,
      'input': input_metadata(config, shape, fixed),
      'normalization': {'input_mean': config.input_mean,
                        'input_std': config.input_std,
                        'channel_mean': list(config.channel_mean),
                        'channel_std': list(config.channel_std),
                        'missing': config.missing,
                        'applied': 'inside the function: (x - input_mean) '
                                   '/ input_std, then per feature (x - '
                                   'channel_mean) / channel_std where given'},
      'output': {'shape': ['batch', config.num_classes], 'dtype': 'float32',
                 'meaning': 'logits'},
      'class_names': registry.class_names(config),
      'platforms': list(PLATFORMS),
      'checkpoint': what,
      'config': config.to_dict(),
  }
  (out / METADATA).write_text(json.dumps(metadata, indent=1) + '\n')
  return metadata
