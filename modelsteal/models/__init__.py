"""Keras architectures by name: one registry dict, no import side effects.

Every builder takes `(input_shape, num_classes)` and returns an uncompiled
`keras.Model` mapping float32 images (N, H, W, C) in [0, 1] to logits
(N, num_classes). Logits (not probabilities) keep the losses numerically
stable; `modelsteal.export` adds the softmax in the serving signature.
"""

from modelsteal.errors import UnknownNameError
from modelsteal.models.zoo import build_cifar10_cnn
from modelsteal.models.zoo import build_lenet5
from modelsteal.models.zoo import build_mnist_cnn
from modelsteal.models.zoo import build_mnist_mlp
from modelsteal.models.zoo import build_ntga_cnn
from modelsteal.models.zoo import build_ntga_fnn
from modelsteal.models.zoo import build_ntga_fnn_relu
from modelsteal.models.zoo import build_resnet20

ARCHITECTURES = {
    'mnist_cnn': build_mnist_cnn,
    'mnist_mlp': build_mnist_mlp,
    'lenet5': build_lenet5,
    'cifar10_cnn': build_cifar10_cnn,
    # He et al. 2016's CIFAR ResNet: the second CIFAR-10 victim's family.
    'resnet20': build_resnet20,
    # Target networks of the NTGA paper (Yuan & Wu 2021, section 4).
    'ntga_fnn': build_ntga_fnn,
    'ntga_fnn_relu': build_ntga_fnn_relu,
    'ntga_cnn': build_ntga_cnn,
}

# Which family each architecture belongs to: the default students are the
# victim's architecture plus one of another family.
FAMILIES = {
    'mnist_cnn': 'cnn', 'lenet5': 'cnn', 'cifar10_cnn': 'cnn',
    'ntga_cnn': 'cnn', 'mnist_mlp': 'mlp', 'ntga_fnn': 'mlp',
    'ntga_fnn_relu': 'mlp', 'resnet20': 'resnet',
}


def build(name: str, input_shape, num_classes: int):
  """Builds architecture `name`.

  Raises:
    UnknownNameError: (a KeyError) an unknown name; the message lists the
      valid ones.
  """
  if name not in ARCHITECTURES:
    raise UnknownNameError('arch', f': unknown architecture {name!r}; valid: '
                           f'{", ".join(sorted(ARCHITECTURES))}.')
  return ARCHITECTURES[name](tuple(input_shape), int(num_classes))


__all__ = ['ARCHITECTURES', 'FAMILIES', 'build']
