"""SavedModel export round trip and loading users' models."""

import os

import numpy as np
import pytest
import tensorflow as tf

from modelsteal import export
from tests.conftest import synthetic_images


def test_saved_model_round_trip(tiny_model, tmp_path):
  x, _ = synthetic_images(16, seed=5)
  d = export.export_saved_model(tiny_model, str(tmp_path / 'm'))
  assert d.endswith(os.sep + '1') and os.path.exists(
      os.path.join(d, 'saved_model.pb'))
  loaded = tf.saved_model.load(d)
  out = loaded.signatures['serving_default'](images=tf.constant(x))
  expected = tf.nn.softmax(tiny_model(x, training=False)).numpy()
  np.testing.assert_allclose(out['probabilities'].numpy(), expected, atol=1e-5)
  np.testing.assert_array_equal(out['label'].numpy(), expected.argmax(1))
  # a second export is version 2; the base dir resolves to the highest
  d2 = export.export_saved_model(tiny_model, str(tmp_path / 'm'))
  assert d2.endswith(os.sep + '2')
  assert export.resolve_saved_model_dir(str(tmp_path / 'm')) == d2
  pred = export.load_predictor(str(tmp_path / 'm'))
  np.testing.assert_allclose(pred(x), expected, atol=1e-5)


def test_keras_file_and_shape_check(tiny_model, tmp_path):
  path = str(tmp_path / 'v.keras')
  tiny_model.save(path)
  pred = export.load_predictor(path)
  x, _ = synthetic_images(4, seed=6)
  assert pred(x).shape == (4, 4)
  np.testing.assert_allclose(pred(x).sum(1), 1.0, atol=1e-5)  # logits -> probs
  with pytest.raises(export.ModelLoadError, match=r'takes images of shape'):
    pred(np.zeros((2, 28, 28, 1), np.float32))


def test_bad_model_paths(tmp_path):
  with pytest.raises(export.ModelLoadError, match='no such file'):
    export.load_predictor(str(tmp_path / 'missing'))
  (tmp_path / 'empty').mkdir()
  with pytest.raises(export.ModelLoadError, match='not a SavedModel'):
    export.load_predictor(str(tmp_path / 'empty'))
  (tmp_path / 'notes.txt').write_text('hello')
  with pytest.raises(export.ModelLoadError, match='must be .keras'):
    export.load_predictor(str(tmp_path / 'notes.txt'))
  (tmp_path / 'broken.keras').write_bytes(b'not a zip')
  with pytest.raises(export.ModelLoadError, match='could not be loaded'):
    export.load_predictor(str(tmp_path / 'broken.keras'))
