"""SavedModel export for serving, and loading any model a user points us at.

`export_saved_model` writes `<base>/<version>/` (TF Serving's layout) with one
`serving_default` signature (after tensorflow/models
`official/vision/serving/image_classification.py`):

    images: float32 (N, H, W, C) in [0, 1]
      -> {'probabilities': float32 (N, K), 'label': int64 (N,)}

built with `keras.export.ExportArchive`, so no Keras is needed to serve it.
`load_predictor` opens a `.keras` file, a SavedModel directory, or a folder of
numbered versions (the highest is used) and returns a function
images -> probabilities.
"""

from __future__ import annotations

import os
import shutil
from typing import Callable

import numpy as np

from modelsteal.errors import UserError


class ModelLoadError(UserError, ValueError):
  """A path that is not a model this package can use."""


def _next_version(base: str) -> int:
  versions = [int(d) for d in os.listdir(base) if d.isdigit()] if os.path.isdir(
      base) else []
  return max(versions, default=0) + 1


def export_saved_model(model, base_dir: str, version: int | None = None,
                       preprocess: Callable | None = None) -> str:
  """Exports a logits Keras model as a servable SavedModel.

  Args:
    model: Keras model, images -> logits.
    base_dir: the model's base directory; the version directory goes inside.
    version: version number (default: one above the highest present).
    preprocess: optional test-time transform (a Keras layer or a function of
      the image batch) applied inside the signature before the model, so the
      served model takes raw images.

  Returns:
    The version directory written.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  shape = [None, *model.input_shape[1:]]

  @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32, name='images')])
  def serve(images):
    x = preprocess(images) if preprocess is not None else images
    probs = tf.nn.softmax(model(x, training=False), axis=-1)
    return {'probabilities': probs,
            'label': tf.argmax(probs, axis=-1, output_type=tf.int64)}

  return write_serving_archive(base_dir, serve, [model, preprocess], version)


def write_serving_archive(base_dir: str, serve, trackables: list,
                          version: int | None = None) -> str:
  """Writes `<base_dir>/<version>/` with `serve` as `serving_default`.

  Args:
    base_dir: the model's base directory.
    serve: a `tf.function` with an input signature.
    trackables: the Keras models/layers whose variables `serve` uses (others,
      e.g. None or plain functions, are skipped).
    version: version number (default: one above the highest present).

  The archive is written under a temporary name and renamed into place.
  """
  import keras  # pylint: disable=g-import-not-at-top
  os.makedirs(base_dir, exist_ok=True)
  version = version or _next_version(base_dir)
  final = os.path.join(base_dir, str(version))
  tmp = os.path.join(base_dir, f'.tmp-{version}-{os.getpid()}')
  shutil.rmtree(tmp, ignore_errors=True)
  archive = keras.export.ExportArchive()
  for t in trackables:
    if isinstance(t, keras.layers.Layer):
      archive.track(t)
  archive.add_endpoint('serving_default', serve)
  archive.write_out(tmp, verbose=False)
  if os.path.exists(final):
    shutil.rmtree(final)
  os.rename(tmp, final)
  return final


def resolve_saved_model_dir(path: str) -> str:
  """A SavedModel dir itself, or the highest numbered version inside `path`."""
  if os.path.exists(os.path.join(path, 'saved_model.pb')):
    return path
  versions = sorted((int(d) for d in os.listdir(path) if d.isdigit() and
                     os.path.exists(os.path.join(path, d, 'saved_model.pb'))))
  if versions:
    return os.path.join(path, str(versions[-1]))
  serving = os.path.join(path, 'serving')
  if os.path.isdir(serving):  # a modelsteal Model artifact
    return resolve_saved_model_dir(serving)
  raise ModelLoadError(f'{path!r} holds no saved_model.pb and no numbered '
                       'version directories: not a SavedModel.')


def _as_probabilities(out: np.ndarray) -> np.ndarray:
  out = np.asarray(out, np.float32)
  if out.ndim != 2:
    raise ModelLoadError(f'the model answers shape {out.shape}; expected '
                         '(N, num_classes).')
  sums = out.sum(axis=1)
  if out.min(initial=0) >= 0 and np.allclose(sums, 1.0, atol=1e-3):
    return out
  shifted = out - out.max(axis=1, keepdims=True)
  e = np.exp(shifted)
  return e / e.sum(axis=1, keepdims=True)


def check_input_shape(expected, got, source: str) -> None:
  """Raises ModelLoadError unless image shape `got` fits `expected`.

  `expected` is a model's input shape without the batch axis; None (unknown
  model) fits anything, and None or -1 (TF Serving's unknown) in one axis
  fits any size there.
  """
  if expected is None:
    return
  expected, got = tuple(expected), tuple(got)
  if len(expected) != len(got) or any(
      e not in (None, -1) and e != g for e, g in zip(expected, got)):
    raise ModelLoadError(f'{source} takes images of shape {expected}, but the '
                         f'data has shape {got}; pick the dataset the model '
                         'was trained for.')


class Predictor:
  """images float32 (N, H, W, C) -> probabilities float32 (N, K)."""

  def __init__(self, fn: Callable[[np.ndarray], np.ndarray],
               input_shape: tuple | None, source: str):
    self._fn = fn
    self.input_shape = input_shape  # without the batch axis; None = unknown
    self.source = source

  def check_input(self, shape: tuple) -> None:
    check_input_shape(self.input_shape, shape, self.source)

  def __call__(self, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    self.check_input(x.shape[1:])
    outs = [self._fn(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    return _as_probabilities(np.concatenate(outs)) if outs else np.zeros(
        (0, 0), np.float32)


def predictor_from_keras(model, source: str = 'keras model') -> Predictor:
  return Predictor(lambda b: model(b, training=False).numpy(),
                   tuple(model.input_shape[1:]), source)


def load_predictor(path: str, trusted: bool = False) -> Predictor:
  """Opens a `.keras` file or a SavedModel (dir or numbered versions).

  A `.keras` file opens in Keras' safe mode unless `trusted`: a crafted
  file (a Lambda layer's pickled code) could otherwise run Python on load.
  Pass `trusted=True` only for the user's own model or the toolkit's own
  artifacts. A SavedModel is a program either way (TensorFlow's security
  guidance); verify an untrusted suspect over its URL instead.

  Raises:
    ModelLoadError: the path does not exist or is not a usable model.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if not os.path.exists(path):
    raise ModelLoadError(f'{path!r}: no such file or directory.')
  if os.path.isfile(path):
    if not path.endswith(('.keras', '.h5')):
      raise ModelLoadError(f'{path!r}: a model file must be .keras (or .h5); '
                           'for a SavedModel pass its directory.')
    import keras  # pylint: disable=g-import-not-at-top
    try:
      model = keras.models.load_model(path, compile=False,
                                      safe_mode=not trusted)
    except Exception as e:  # pylint: disable=broad-except
      if not trusted and 'safe_mode' in str(e):
        raise ModelLoadError(
            f'{path!r} holds code (a Lambda layer) that Keras\' safe mode '
            'will not run: an untrusted model could execute anything on '
            'load. Verify it over its URL, or load it only if it is your '
            'own.') from None
      raise ModelLoadError(f'{path!r} could not be loaded as a Keras model: '
                           f'{type(e).__name__}: {str(e)[:300]}') from e
    return predictor_from_keras(model, f'Keras model {path}')
  sm_dir = resolve_saved_model_dir(path)
  try:
    loaded = tf.saved_model.load(sm_dir)
  except Exception as e:  # pylint: disable=broad-except
    raise ModelLoadError(f'{sm_dir!r} could not be loaded as a SavedModel: '
                         f'{type(e).__name__}: {str(e)[:300]}') from e
  sig = loaded.signatures.get('serving_default')
  if sig is None:
    raise ModelLoadError(f'{sm_dir!r} has no serving_default signature.')
  (arg_name, spec), = sig.structured_input_signature[1].items()
  outputs = sig.structured_outputs
  out_key = 'probabilities' if 'probabilities' in outputs else (
      next(iter(outputs)) if len(outputs) == 1 else None)
  if out_key is None:
    raise ModelLoadError(f'{sm_dir!r}: cannot tell which of the outputs '
                         f'{sorted(outputs)} holds the class scores; export it '
                         'with an output named "probabilities".')

  def fn(batch):
    return sig(**{arg_name: tf.constant(batch, spec.dtype)})[out_key].numpy()

  shape = tuple(spec.shape[1:]) if spec.shape.rank else None
  pred = Predictor(fn, shape, f'SavedModel {sm_dir}')
  pred.saved_model = loaded  # keep the object (and its variables) alive
  return pred
