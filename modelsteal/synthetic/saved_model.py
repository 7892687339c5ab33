"""Any SavedModel with a `generate(label, noise)` signature, as a black box.

The loader needs nothing from the code that trained the model: it reads
the signature's inputs (an integer class tensor (N,) and a float noise
tensor (N, D)), draws standard-normal noise of that size from
(seed, class), and calls it. Class names and image shape come from
`assets.extra/generator.json` when the model carries one (the built-in
generator does), otherwise from the caller (`class_names`) and from the
signature's output shape.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np

from modelsteal.errors import literal
from modelsteal.synthetic.base import Generator
from modelsteal.synthetic.base import GeneratorError
from modelsteal.synthetic.base import rng_for
from modelsteal.synthetic.cvae import GENERATOR_JSON


def _saved_model_dir(path: str) -> str:
  from modelsteal.export import ModelLoadError, resolve_saved_model_dir  # pylint: disable=g-import-not-at-top
  if not os.path.isdir(path):
    raise GeneratorError(f'{{generator}} {literal(repr(path))}: no such '
                         'directory; pass a '
                         'built-in name, a SavedModel directory or a URL.')
  try:
    return resolve_saved_model_dir(path)
  except ModelLoadError as e:
    raise GeneratorError(f'{{generator}}: {literal(str(e))}') from None


def fingerprint_dir(path: str) -> str:
  """A content hash of a SavedModel directory (files, names and bytes)."""
  h = hashlib.sha256()
  for root, dirs, files in os.walk(path):
    dirs.sort()
    for name in sorted(files):
      full = os.path.join(root, name)
      h.update(os.path.relpath(full, path).encode())
      with open(full, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
          h.update(block)
  return h.hexdigest()


def generator_ref_from_path(path: str, fingerprint: str | None = None) -> dict:
  """A generator reference (part of component fingerprints) for a path."""
  sm = _saved_model_dir(path)
  return {'kind': 'savedmodel', 'path': os.path.abspath(sm),
          'fingerprint': fingerprint or fingerprint_dir(sm)}


class SavedModelGenerator(Generator):
  """A generator SavedModel; see the module docstring.

  Args:
    path: a SavedModel directory, a folder of numbered versions or a
      modelsteal Model artifact.
    class_names: names when the model does not record them.
    pixels: `sample` (the `generate` signature) or `mean` (`generate_mean`,
      where the model has it).
    batch_size: images per call.
  """

  def __init__(self, path: str, class_names=None, pixels: str = 'sample',
               batch_size: int = 1000):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    self.path = _saved_model_dir(path)
    self.source = f'generator {self.path}'
    try:
      self._loaded = tf.saved_model.load(self.path)
    except Exception as e:  # pylint: disable=broad-except
      raise GeneratorError(f'{self.path!r} could not be loaded as a '
                           f'SavedModel: {type(e).__name__}: {str(e)[:300]}'
                           ) from e
    sigs = self._loaded.signatures
    if pixels not in ('sample', 'mean'):
      raise GeneratorError(f"pixels must be 'sample' or 'mean', got "
                           f'{pixels!r}.')
    name = 'generate_mean' if pixels == 'mean' else 'generate'
    if name not in sigs and pixels == 'sample' and 'serving_default' in sigs:
      name = 'serving_default'
    if name not in sigs:
      raise GeneratorError(f'{self.path!r} has no {name!r} signature (it has '
                           f'{sorted(sigs)}): not a generator SavedModel.')
    self._sig = sigs[name]
    args = self._sig.structured_input_signature[1]
    ints = [k for k, v in args.items() if v.dtype.is_integer]
    floats = [k for k, v in args.items() if v.dtype.is_floating]
    if len(args) != 2 or len(ints) != 1 or len(floats) != 1:
      raise GeneratorError(
          f'{self.path!r}: signature {name!r} takes {sorted(args)}: not a '
          'generator, which takes a class (integer, (N,)) and noise (float, '
          '(N, D)).')
    self._label_arg, self._noise_arg = ints[0], floats[0]
    self._label_dtype = args[ints[0]].dtype
    noise_shape = args[floats[0]].shape
    if noise_shape.rank != 2 or noise_shape[1] is None:
      raise GeneratorError(f'{self.path!r}: the noise input has shape '
                           f'{noise_shape}; expected (N, D) with D fixed.')
    self.noise_dim = int(noise_shape[1])
    outs = self._sig.structured_outputs
    self._out_key = 'images' if 'images' in outs else next(iter(outs))
    meta = {}
    meta_path = os.path.join(self.path, GENERATOR_JSON)
    if os.path.exists(meta_path):
      with open(meta_path) as f:
        meta = json.load(f)
    shape = meta.get('image_shape') or outs[self._out_key].shape[1:]
    if shape is None or any(d is None for d in shape) or len(shape) != 3:
      raise GeneratorError(f'{self.path!r}: the output shape {shape} is not '
                           'a fixed (H, W, C).')
    self._shape = tuple(int(d) for d in shape)
    names = meta.get('class_names') or class_names
    if not names:
      raise GeneratorError(f'{self.path!r} does not record its class names '
                           f'({GENERATOR_JSON}); pass class_names.')
    self._names = tuple(str(n) for n in names)
    self.batch_size = batch_size
    self._classify = sigs.get('classify')

  @property
  def class_names(self):
    return self._names

  @property
  def image_shape(self):
    return self._shape

  def _generate(self, index: int, n: int, seed: int) -> np.ndarray:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    noise = rng_for(seed, index).standard_normal(
        (n, self.noise_dim)).astype(np.float32)
    out = []
    for i in range(0, n, self.batch_size):
      chunk = noise[i:i + self.batch_size]
      labels = tf.fill([len(chunk)], tf.constant(index, self._label_dtype))
      res = self._sig(**{self._label_arg: labels,
                         self._noise_arg: tf.constant(chunk)})
      out.append(np.asarray(res[self._out_key]))
    return np.concatenate(out)

  def scores(self, x: np.ndarray) -> np.ndarray | None:
    if self._classify is None:
      return None
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    (arg,) = self._classify.structured_input_signature[1]
    out = [np.asarray(self._classify(**{arg: tf.constant(
        x[i:i + 1000], tf.float32)})['probabilities'])
           for i in range(0, len(x), 1000)]
    return np.concatenate(out) if out else np.zeros((0, len(self._names)))
