"""The class-conditional generator interface every data source implements.

    gen.generate('7', n=100, seed=0)   # or gen.generate(7, ...)
      -> float32 (100, H, W, C) in [0, 1]

A `Generator` knows its `class_names` (index i is class i of the dataset it
stands in for) and its `image_shape` (H, W, C). `generate` is deterministic
under `seed` for a given class: the same call returns the same images, so a
mining run that is interrupted and resumed gets what it would have got.
"""

from __future__ import annotations

import abc

import numpy as np

from modelsteal.errors import UserError

# Class names of the datasets the toolkit knows, index = label. The REST
# generator turns them into prompts; MNIST's are digits as words, so a
# text-to-image model is asked for "a photo of a handwritten digit seven"
# only with a prompt template that says so.
CLASS_NAMES: dict[str, tuple[str, ...]] = {
    'mnist': tuple(str(i) for i in range(10)),
    'offline_mnist': tuple(str(i) for i in range(10)),
    'fashion_mnist': ('T-shirt/top', 'trouser', 'pullover', 'dress', 'coat',
                      'sandal', 'shirt', 'sneaker', 'bag', 'ankle boot'),
    'cifar10': ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog',
                'horse', 'ship', 'truck'),
}


class GeneratorError(UserError, ValueError):
  """A generator that cannot be used, or that answered something unusable."""


def class_names_for(dataset_name: str, num_classes: int) -> tuple[str, ...]:
  """The dataset's class names, or '0'..'K-1' for a dataset we do not know."""
  names = CLASS_NAMES.get(dataset_name)
  if names is not None and len(names) == num_classes:
    return names
  return tuple(str(i) for i in range(num_classes))


class Generator(abc.ABC):
  """A class-conditional image generator; see the module docstring."""

  #: A short description for messages and tables (a path, a URL, a name).
  source: str = 'generator'

  @property
  @abc.abstractmethod
  def class_names(self) -> tuple[str, ...]:
    """Class names, index = class label."""

  @property
  @abc.abstractmethod
  def image_shape(self) -> tuple[int, int, int]:
    """(H, W, C) of every generated image."""

  @abc.abstractmethod
  def _generate(self, index: int, n: int, seed: int) -> np.ndarray:
    """n images of class `index`; float32 (n, H, W, C), any range."""

  def class_index(self, label: int | str) -> int:
    """The index of a class given by index or name.

    Raises:
      GeneratorError: a class this generator does not know.
    """
    names = self.class_names
    if isinstance(label, (int, np.integer)) and not isinstance(label, bool):
      if 0 <= int(label) < len(names):
        return int(label)
    elif isinstance(label, str):
      if label in names:
        return names.index(label)
      lowered = [n.lower() for n in names]
      if label.lower() in lowered:
        return lowered.index(label.lower())
    shown = ', '.join(repr(n) for n in names[:20])
    raise GeneratorError(
        f'{self.source} does not know the class {label!r}; it knows '
        f'{len(names)} classes: {shown}{", ..." if len(names) > 20 else ""} '
        f'(or their indices 0..{len(names) - 1}).')

  def generate(self, label: int | str, n: int, seed: int = 0) -> np.ndarray:
    """`n` images of one class, reproducible under `seed`.

    Args:
      label: class index or class name.
      n: number of images (0 gives an empty batch).
      seed: the same seed gives the same images.

    Returns:
      float32 (n, H, W, C) in [0, 1].
    """
    index = self.class_index(label)
    if n < 0:
      raise GeneratorError(f'cannot generate {n} images.')
    shape = tuple(self.image_shape)
    if n == 0:
      return np.zeros((0, *shape), np.float32)
    x = np.asarray(self._generate(index, int(n), int(seed)), np.float32)
    if x.shape != (n, *shape):
      raise GeneratorError(f'{self.source} returned images of shape '
                           f'{x.shape}; expected {(n, *shape)}.')
    if not np.isfinite(x).all():
      raise GeneratorError(f'{self.source} returned NaN or infinite pixels.')
    return np.clip(x, 0.0, 1.0)

  def scores(self, x: np.ndarray) -> np.ndarray | None:
    """The generator's own classifier's probabilities (N, K), or None when
    it has none (then samples cannot be filtered by confidence)."""
    del x
    return None


def rng_for(seed: int, index: int) -> np.random.Generator:
  """The random stream of one (seed, class) pair, the same on every run."""
  return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(index), 0x5EED])
