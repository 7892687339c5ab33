"""Shared fixtures: tiny synthetic data, no network, flags parsed once."""

import os

os.environ.setdefault('MODELSTEAL_OFFLINE', '1')  # no 3 s network probe
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top
from absl import flags  # pylint: disable=g-import-not-at-top

if not flags.FLAGS.is_parsed():
  flags.FLAGS.mark_as_parsed()

SHARED_MNIST = os.path.join(os.path.dirname(__file__), '..', '..', 'shared',
                            'data', 'mnist', 'mnist.npz')


def synthetic_images(n, num_classes=4, size=12, seed=0):
  """Class k lights up a distinct horizontal band, plus noise: learnable."""
  rng = np.random.default_rng(seed)
  y = rng.integers(0, num_classes, n)
  x = rng.uniform(0.0, 0.3, (n, size, size, 1)).astype(np.float32)
  band = size // num_classes
  for k in range(num_classes):
    x[y == k, k * band:(k + 1) * band, :, 0] += 0.6
  return np.clip(x, 0, 1), y.astype(np.int64)


@pytest.fixture
def tiny_npz(tmp_path):
  """A Keras-style npz: 400 train / 100 test images of 12x12, 4 classes."""
  xtr, ytr = synthetic_images(400, seed=1)
  xte, yte = synthetic_images(100, seed=2)
  path = tmp_path / 'tiny.npz'
  np.savez(path, x_train=(xtr * 255).astype(np.uint8), y_train=ytr,
           x_test=(xte * 255).astype(np.uint8), y_test=yte)
  return str(path)


@pytest.fixture(scope='session')
def tiny_model():
  """A small trained logits model on the synthetic data (12x12x1, 4 classes)."""
  from modelsteal.training import TrainConfig, train_classifier  # pylint: disable=g-import-not-at-top
  x, y = synthetic_images(300, seed=3)
  return train_classifier('mnist_mlp', x, y, 4, TrainConfig(epochs=3),
                          verbose=0)
