"""Training-time defences: shapes, ranges, determinism, library agreement."""

import numpy as np
import pytest
import scipy.ndimage
import tensorflow as tf

from modelsteal.defenses import training as dt

RNG = np.random.default_rng(0)
GRAY = RNG.uniform(size=(6, 16, 16, 1)).astype(np.float32)
RGB = RNG.uniform(size=(6, 16, 16, 3)).astype(np.float32)


@pytest.mark.parametrize('spec', ['none', 'jpeg:10', 'grayscale', 'bitdepth:1',
                                  'bitdepth:3', 'median:3', 'blur:1',
                                  'bitdepth:1+median:3'])
@pytest.mark.parametrize('x', [GRAY, RGB], ids=['gray', 'rgb'])
def test_preprocessing_keeps_shape_range_and_is_deterministic(spec, x):
  d = dt.parse_defense(spec)
  a = np.asarray(d.apply_preprocess(tf.constant(x)))
  b = np.asarray(d.apply_preprocess(tf.constant(x)))
  assert a.shape == x.shape and a.dtype == np.float32
  assert a.min() >= -1e-6 and a.max() <= 1 + 1e-6
  np.testing.assert_array_equal(a, b)
  if spec != 'none' and not (spec == 'grayscale' and x.shape[-1] == 1):
    assert not np.allclose(a, x)  # it does something


def test_jpeg_and_grayscale_match_tf_image():
  img = RGB[0]
  want = tf.image.adjust_jpeg_quality(img, 10).numpy()
  np.testing.assert_allclose(dt.jpeg(tf.constant(RGB[:1]), 10)[0], want)
  g = tf.image.rgb_to_grayscale(img).numpy()
  got = dt.grayscale(tf.constant(RGB[:1])).numpy()[0]
  np.testing.assert_allclose(got, np.repeat(g, 3, axis=-1), atol=1e-6)


def test_bitdepth_and_median_reference():
  x = np.array([[0.1, 0.49, 0.51, 0.9]], np.float32).reshape(1, 1, 4, 1)
  np.testing.assert_array_equal(dt.bit_depth(x, 1).numpy().ravel(),
                                [0, 0, 1, 1])
  want = scipy.ndimage.median_filter(GRAY[0, :, :, 0], size=3, mode='mirror')
  np.testing.assert_allclose(dt.median_filter(tf.constant(GRAY), 3)[0, :, :, 0],
                             want, atol=1e-6)


@pytest.mark.parametrize('spec', ['crop', 'flip', 'cutout', 'mixup', 'cutmix',
                                  'crop+cutout'])
def test_augmentations_shape_range_and_seeded(spec):
  d = dt.parse_defense(spec)
  y = np.eye(4, dtype=np.float32)[RNG.integers(0, 4, len(RGB))]
  out1 = d.augmenter(3, RGB.shape[1:])(tf.constant(RGB), tf.constant(y))
  out2 = d.augmenter(3, RGB.shape[1:])(tf.constant(RGB), tf.constant(y))
  for a, b in zip(out1, out2):
    np.testing.assert_allclose(a, b, atol=1e-6)
  xa, ya = (np.asarray(v) for v in out1)
  assert xa.shape == RGB.shape and ya.shape == y.shape
  assert xa.min() >= -1e-6 and xa.max() <= 1 + 1e-6
  np.testing.assert_allclose(ya.sum(1), 1.0, atol=1e-5)


def test_adversary_stays_in_the_ball(tiny_model):
  import keras
  from tests.conftest import synthetic_images
  x, y = synthetic_images(16, seed=4)
  m = dt.adversarial_model(tiny_model, eps=0.1, steps=3)
  m.compile(optimizer='adam', loss=keras.losses.SparseCategoricalCrossentropy(
      from_logits=True))
  adv = m._adversary(tf.constant(x), tf.constant(y)).numpy()  # pylint: disable=protected-access
  assert np.abs(adv - x).max() <= 0.1 + 1e-6
  assert adv.min() >= 0 and adv.max() <= 1 and not np.allclose(adv, x)


def test_unknown_and_bad_specs():
  with pytest.raises(ValueError, match='valid: none, jpeg:Q'):
    dt.parse_defense('denoise')
  with pytest.raises(ValueError, match='outside'):
    dt.parse_defense('jpeg:0')
  with pytest.raises(ValueError, match='odd'):
    dt.parse_defense('median:4')
  assert len(dt.parse_defense_list('all')) == len(dt.ALL_DEFENSES)
