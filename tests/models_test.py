"""Architectures: the registry and the CIFAR-10 ResNet."""

import numpy as np
import pytest

from modelsteal import models


def test_resnet20_maps_cifar_images_to_logits():
  m = models.build('resnet20', (32, 32, 3), 10)
  x = np.random.default_rng(0).random((2, 32, 32, 3)).astype(np.float32)
  logits = np.asarray(m(x, training=False))
  assert logits.shape == (2, 10) and logits.dtype == np.float32
  assert np.isfinite(logits).all()
  assert 0.26e6 < m.count_params() < 0.28e6  # He et al.: 0.27M
  # 19 conv layers on the main path (plus 2 projections) and the dense head
  convs = [l for l in m.layers if l.__class__.__name__ == 'Conv2D']
  assert len([c for c in convs if c.kernel_size == (3, 3)]) == 19
  assert models.FAMILIES['resnet20'] == 'resnet'
  assert models.FAMILIES['resnet20'] != models.FAMILIES['cifar10_cnn']


def test_every_architecture_has_a_family():
  assert set(models.FAMILIES) == set(models.ARCHITECTURES)


def test_unknown_architecture_lists_the_valid_ones():
  from modelsteal.errors import UnknownNameError  # pylint: disable=g-import-not-at-top
  with pytest.raises(KeyError, match='valid: .*resnet20') as e:
    models.build('resnet1001', (32, 32, 3), 10)
  assert isinstance(e.value, UnknownNameError)
