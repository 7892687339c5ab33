"""Architecture builders (see `modelsteal.models`)."""

from __future__ import annotations

import keras
from keras import layers


def _inputs(input_shape):
  return keras.Input(shape=input_shape, name='images')


def _logits(x, num_classes):
  """The dense head, always float32: under a mixed policy (`mixed_bfloat16`
  on a CPU with AVX-512 BF16) the logits, the loss and the probabilities an
  oracle answers with keep float32 precision; a no-op under float32."""
  return layers.Dense(num_classes, dtype='float32')(x)


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
  return keras.Model(inp, _logits(x, num_classes), name='mnist_cnn')


def build_mnist_mlp(input_shape, num_classes) -> keras.Model:
  """A two-hidden-layer MLP: the non-convolutional family."""
  x = inp = _inputs(input_shape)
  x = layers.Flatten()(x)
  x = layers.Dense(512, activation='relu')(x)
  x = layers.Dropout(0.2)(x)
  x = layers.Dense(256, activation='relu')(x)
  x = layers.Dropout(0.2)(x)
  return keras.Model(inp, _logits(x, num_classes), name='mnist_mlp')


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
  return keras.Model(inp, _logits(x, num_classes), name='lenet5')


def build_cifar10_cnn(input_shape, num_classes) -> keras.Model:
  """A VGG-style CNN with batch norm (about 88% on CIFAR-10 with augmentation).

  Batch-norm momentum 0.9 as in `build_ntga_cnn`: a student trained on
  1,000 answers takes 8 steps an epoch, and with Keras' 0.99 the moving
  statistics lag far behind in short runs (48 steps on the synthetic
  stand-in: 30% test accuracy with 0.99, 100% with 0.9).
  """
  x = inp = _inputs(input_shape)
  for filters in (32, 64, 128):
    for _ in range(2):
      x = layers.Conv2D(filters, 3, padding='same', use_bias=False)(x)
      x = layers.BatchNormalization(momentum=0.9)(x)
      x = layers.ReLU()(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Dropout(0.2)(x)
  x = layers.GlobalAveragePooling2D()(x)
  x = layers.Dense(256, activation='relu')(x)
  x = layers.Dropout(0.3)(x)
  return keras.Model(inp, _logits(x, num_classes), name='cifar10_cnn')


def _erf(x):
  return keras.ops.erf(x)


def build_ntga_fnn(input_shape, num_classes) -> keras.Model:
  """NTGA target FNN: 4 x Dense(512) + erf."""
  x = inp = _inputs(input_shape)
  x = layers.Flatten()(x)
  for _ in range(4):
    x = layers.Dense(512)(x)
    x = layers.Activation(_erf)(x)
  return keras.Model(inp, _logits(x, num_classes), name='ntga_fnn')


def build_ntga_fnn_relu(input_shape, num_classes) -> keras.Model:
  """NTGA target FNN-ReLU: 4 x Dense(512) + ReLU."""
  x = inp = _inputs(input_shape)
  x = layers.Flatten()(x)
  for _ in range(4):
    x = layers.Dense(512, activation='relu')(x)
  return keras.Model(inp, _logits(x, num_classes), name='ntga_fnn_relu')


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
  return keras.Model(inp, _logits(x, num_classes), name='ntga_cnn')


def _resnet_block(x, filters: int, stride: int):
  """A basic block (two 3x3 convs); a 1x1 projection where the shape
  changes (He et al. 2016's option B: built-in layers only, so a saved
  model reloads anywhere without custom objects)."""
  shortcut = x
  y = layers.Conv2D(filters, 3, strides=stride, padding='same',
                    use_bias=False, kernel_initializer='he_normal')(x)
  y = layers.BatchNormalization(momentum=0.9, epsilon=1e-5)(y)
  y = layers.ReLU()(y)
  y = layers.Conv2D(filters, 3, padding='same', use_bias=False,
                    kernel_initializer='he_normal')(y)
  y = layers.BatchNormalization(momentum=0.9, epsilon=1e-5)(y)
  if stride != 1 or x.shape[-1] != filters:
    shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False,
                             kernel_initializer='he_normal')(x)
    shortcut = layers.BatchNormalization(momentum=0.9, epsilon=1e-5)(shortcut)
  return layers.ReLU()(layers.Add()([y, shortcut]))


def build_resnet20(input_shape, num_classes) -> keras.Model:
  """ResNet-20 for CIFAR (He et al. 2016, https://arxiv.org/abs/1512.03385,
  section 4.2): a 3x3 conv of 16, three stages of 3 basic blocks with 16, 32,
  64 filters (stride 2 entering stages 2 and 3), global average pooling, a
  dense head. 0.27M parameters; 91.3% on (lossless, 50,000-image) CIFAR-10
  in the paper with 182 epochs of SGD.

  Batch-norm momentum 0.9 (PyTorch's default) as in `build_ntga_cnn`: the
  moving statistics keep up in short runs (students, smoke tests).
  """
  x = inp = _inputs(input_shape)
  x = layers.Conv2D(16, 3, padding='same', use_bias=False,
                    kernel_initializer='he_normal')(x)
  x = layers.BatchNormalization(momentum=0.9, epsilon=1e-5)(x)
  x = layers.ReLU()(x)
  for stage, filters in enumerate((16, 32, 64)):
    for block in range(3):
      x = _resnet_block(x, filters, 2 if stage > 0 and block == 0 else 1)
  x = layers.GlobalAveragePooling2D()(x)
  return keras.Model(inp, _logits(x, num_classes), name='resnet20')
