"""Architecture builders (see `modelsteal.models`)."""

from __future__ import annotations

import keras
from keras import layers


def _inputs(input_shape):
  return keras.Input(shape=input_shape, name='images')


def build_mnist_cnn(input_shape, num_classes) -> keras.Model:
  """Two conv blocks and a dense head: ~99.2% on MNIST, cheap on a CPU."""
  x = inp = _inputs(input_shape)
  x = layers.Conv2D(32, 3, activation='relu')(x)
  x = layers.MaxPooling2D()(x)
  x = layers.Conv2D(64, 3, activation='relu')(x)
  x = layers.MaxPooling2D()(x)
  x = layers.Flatten()(x)
  x = layers.Dropout(0.25)(x)
  x = layers.Dense(128, activation='relu')(x)
  x = layers.Dropout(0.5)(x)
  return keras.Model(inp, layers.Dense(num_classes)(x), name='mnist_cnn')


def build_mnist_mlp(input_shape, num_classes) -> keras.Model:
  """A two-hidden-layer MLP: the non-convolutional family."""
  x = inp = _inputs(input_shape)
  x = layers.Flatten()(x)
  x = layers.Dense(512, activation='relu')(x)
  x = layers.Dropout(0.2)(x)
  x = layers.Dense(256, activation='relu')(x)
  x = layers.Dropout(0.2)(x)
  return keras.Model(inp, layers.Dense(num_classes)(x), name='mnist_mlp')


def build_lenet5(input_shape, num_classes) -> keras.Model:
  """LeNet-5 (LeCun et al. 1998) with ReLU and max pooling."""
  x = inp = _inputs(input_shape)
  x = layers.Conv2D(6, 5, padding='same', activation='relu')(x)
  x = layers.MaxPooling2D()(x)
  x = layers.Conv2D(16, 5, activation='relu')(x)
  x = layers.MaxPooling2D()(x)
  x = layers.Flatten()(x)
  x = layers.Dense(120, activation='relu')(x)
  x = layers.Dense(84, activation='relu')(x)
  return keras.Model(inp, layers.Dense(num_classes)(x), name='lenet5')


def build_cifar10_cnn(input_shape, num_classes) -> keras.Model:
  """A VGG-style CNN with batch norm (about 88% on CIFAR-10 with augmentation)."""
  x = inp = _inputs(input_shape)
  for filters in (32, 64, 128):
    for _ in range(2):
      x = layers.Conv2D(filters, 3, padding='same', use_bias=False)(x)
      x = layers.BatchNormalization()(x)
      x = layers.ReLU()(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Dropout(0.2)(x)
  x = layers.GlobalAveragePooling2D()(x)
  x = layers.Dense(256, activation='relu')(x)
  x = layers.Dropout(0.3)(x)
  return keras.Model(inp, layers.Dense(num_classes)(x), name='cifar10_cnn')


def _erf(x):
  return keras.ops.erf(x)


def build_ntga_fnn(input_shape, num_classes) -> keras.Model:
  """NTGA target FNN: 4 x Dense(512) + erf."""
  x = inp = _inputs(input_shape)
  x = layers.Flatten()(x)
  for _ in range(4):
    x = layers.Dense(512)(x)
    x = layers.Activation(_erf)(x)
  return keras.Model(inp, layers.Dense(num_classes)(x), name='ntga_fnn')


def build_ntga_fnn_relu(input_shape, num_classes) -> keras.Model:
  """NTGA target FNN-ReLU: 4 x Dense(512) + ReLU."""
  x = inp = _inputs(input_shape)
  x = layers.Flatten()(x)
  for _ in range(4):
    x = layers.Dense(512, activation='relu')(x)
  return keras.Model(inp, layers.Dense(num_classes)(x), name='ntga_fnn_relu')


def build_ntga_cnn(input_shape, num_classes) -> keras.Model:
  """NTGA target CNN: 2 x [Conv64 5x5, MaxPool(3, 2), BatchNorm], Dense 384 +
  Dropout 0.5, Dense 192."""
  x = inp = _inputs(input_shape)
  for _ in range(2):
    x = layers.Conv2D(64, 5, padding='same', activation='relu')(x)
    x = layers.MaxPooling2D(3, 2, padding='same')(x)
    # momentum 0.9 (PyTorch's default) rather than Keras' 0.99: with 0.99 the
    # moving statistics lag far behind in short runs (400 steps: 11% clean
    # accuracy at inference against a training loss of 0.04).
    x = layers.BatchNormalization(momentum=0.9)(x)
  x = layers.Flatten()(x)
  x = layers.Dense(384, activation='relu')(x)
  x = layers.Dropout(0.5)(x)
  x = layers.Dense(192, activation='relu')(x)
  return keras.Model(inp, layers.Dense(num_classes)(x), name='ntga_cnn')
