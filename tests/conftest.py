"""Shared fixtures: tiny synthetic data, no network, flags parsed once."""

import os

os.environ.setdefault('MODELSTEAL_OFFLINE', '1')  # no 3 s network probe
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top
from absl import flags  # pylint: disable=g-import-not-at-top

if not flags.FLAGS.is_parsed():
  flags.FLAGS.mark_as_parsed()

# The longest files first (seconds alone on the 2-core CPU, BUILD_NOTES.md
# "Test suite"): under `-n 2 --dist loadfile` (pytest.ini) each file runs
# whole on one worker, in this order, so the long ones do not start last
# and leave one worker idle at the end. Files not listed keep their order,
# after these.
SLOW_FILES = ('readme_test.py', 'synthetic_pipeline_test.py',
              'steal_pipeline_test.py', 'uq_pipeline_test.py',
              'rounds_pipeline_test.py', 'ntga_test.py', 'uq_test.py',
              'notebooks_test.py', 'multiworker_test.py',
              'defend_pipeline_test.py')


def pytest_collection_modifyitems(items):
  def rank(item):
    name = os.path.basename(str(item.path))
    return SLOW_FILES.index(name) if name in SLOW_FILES else len(SLOW_FILES)
  items.sort(key=rank)  # stable: a file's tests keep their order

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
