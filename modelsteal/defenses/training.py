"""Training-time defences against unlearnable (e.g. NTGA-poisoned) data.

A defence spec is one or more parts joined by `+`, e.g. `bitdepth:1+crop`:

    none          no defence (the baseline)
    jpeg:Q        JPEG re-compression at quality Q (default 10)       [ISS]
    grayscale     RGB -> gray (kept at C channels; a no-op on MNIST)  [ISS]
    bitdepth:B    keep B bits per pixel (default 1: a threshold at 0.5)  [ISS]
    median:K      K x K median filter (default 3)
    blur:S        Gaussian low-pass, sigma S pixels (default 1.0)
    crop          random crop after 4-pixel padding (random translation)
    flip          random horizontal flip (not for digits)
    cutout        random erasing of one patch   (keras.layers.RandomErasing)
    mixup         mixup, alpha 0.2              (keras.layers.MixUp)
    cutmix        cutmix                        (keras.layers.CutMix)
    adv:EPS       PGD adversarial training in the L-inf ball of radius EPS
                  (Tao et al., NeurIPS 2021, arXiv 2102.04716; Madry et al.
                  2018); 5 steps of EPS/2 from a random start

[ISS] image shortcut squeezing, Liu et al., ICML 2023, arXiv 2301.13838.

Squeezing and filtering parts are *preprocessing*: applied to the training
images, and inside the exported serving signature to every test image, so a
served model takes raw images. Augmentations act only during training.
Everything here is TF ops on float32 (N, H, W, C) batches in [0, 1].
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

from modelsteal.errors import ConfigError
from modelsteal.errors import literal
from modelsteal.errors import UnknownNameError

DEFENSES = ('none', 'jpeg:Q', 'grayscale', 'bitdepth:B', 'median:K', 'blur:S',
            'crop', 'flip', 'cutout', 'mixup', 'cutmix', 'adv:EPS')

# The table `--defense=all` runs: each part alone, and bit-depth reduction
# with crops. On NTGA-FNN MNIST, `bitdepth:1` alone measured strongest
# (BUILD_NOTES.md, "Training defences"); the combination is kept as the
# augmented variant.
ALL_DEFENSES = ('none', 'jpeg:10', 'grayscale', 'bitdepth:1', 'median:3',
                'blur:1', 'crop', 'cutout', 'mixup', 'cutmix', 'adv:0.3',
                'bitdepth:1+crop')


# ------------------------------------------------------------- preprocessing
def jpeg(x, quality: int = 10):
  """JPEG round trip per image (tf.image.adjust_jpeg_quality is per image)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.map_fn(lambda im: tf.image.adjust_jpeg_quality(im, quality), x,
                   fn_output_signature=tf.float32)


def grayscale(x):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if x.shape[-1] == 1:
    return x
  return tf.tile(tf.image.rgb_to_grayscale(x), [1, 1, 1, x.shape[-1]])


def bit_depth(x, bits: int = 1):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  levels = float(2 ** bits - 1)
  return tf.round(x * levels) / levels


def median_filter(x, k: int = 3):
  """K x K median with reflect padding, per channel."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  p = k // 2
  xp = tf.pad(x, [[0, 0], [p, p], [p, p], [0, 0]], mode='REFLECT')
  patches = tf.image.extract_patches(xp, [1, k, k, 1], [1, 1, 1, 1],
                                     [1, 1, 1, 1], 'VALID')
  c = x.shape[-1]
  shape = tf.concat([tf.shape(patches)[:3], [k * k, c]], axis=0)
  patches = tf.sort(tf.reshape(patches, shape), axis=3)
  return patches[:, :, :, (k * k) // 2, :]


def gaussian_blur(x, sigma: float = 1.0):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  r = max(1, int(math.ceil(2 * sigma)))
  t = tf.range(-r, r + 1, dtype=tf.float32)
  g = tf.exp(-0.5 * (t / sigma) ** 2)
  g = g / tf.reduce_sum(g)
  c = x.shape[-1]
  kernel = tf.tile((g[:, None] * g[None, :])[:, :, None, None], [1, 1, c, 1])
  xp = tf.pad(x, [[0, 0], [r, r], [r, r], [0, 0]], mode='REFLECT')
  return tf.nn.depthwise_conv2d(xp, kernel, [1, 1, 1, 1], 'VALID')


# -------------------------------------------------------------- augmentation
def _crop(seed: int, shape):
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  layer = keras.layers.RandomCrop(shape[0], shape[1], seed=seed)

  def fn(x, y):
    return layer(tf.pad(x, [[0, 0], [4, 4], [4, 4], [0, 0]]), training=True), y
  return fn


def _image_layer(layer):
  return lambda x, y: (layer(x, training=True), y)


def _mix_layer(layer):
  def fn(x, y):
    out = layer({'images': x, 'labels': y}, training=True)
    return out['images'], out['labels']
  return fn


@dataclasses.dataclass(frozen=True)
class Defense:
  """A parsed defence spec (see the module docstring)."""
  spec: str
  preprocess: tuple[Callable, ...]  # each: images -> images
  augment: tuple[str, ...]  # names; built per run by `augmenter`
  adversarial_eps: float | None = None

  def apply_preprocess(self, x):
    for fn in self.preprocess:
      x = fn(x)
    return x

  @property
  def has_preprocess(self) -> bool:
    return bool(self.preprocess)

  def augmenter(self, seed: int, shape) -> Callable | None:
    """(images, one-hot labels) -> (images, labels), for tf.data, or None."""
    import keras  # pylint: disable=g-import-not-at-top
    fns = []
    for i, name in enumerate(self.augment):
      s = seed + 17 * i
      if name == 'crop':
        fns.append(_crop(s, shape))
      elif name == 'flip':
        fns.append(_image_layer(keras.layers.RandomFlip('horizontal', seed=s)))
      elif name == 'cutout':
        fns.append(_image_layer(keras.layers.RandomErasing(
            factor=1.0, scale=(0.05, 0.2), fill_value=0.0, seed=s)))
      elif name == 'mixup':
        fns.append(_mix_layer(keras.layers.MixUp(alpha=0.2, seed=s)))
      elif name == 'cutmix':
        fns.append(_mix_layer(keras.layers.CutMix(factor=1.0, seed=s)))
    if not fns:
      return None

    def fn(x, y):
      for f in fns:
        x, y = f(x, y)
      return x, y
    return fn


def _number(arg: str, default: float, cast, name: str, lo: float, hi: float):
  try:
    v = cast(arg) if arg else default
  except ValueError:
    raise ConfigError('defense', f': defence {name}: bad argument '
                      f'{literal(repr(arg))}.') from None
  if not lo <= v <= hi:
    raise ConfigError('defense', f': defence {name}: argument {v} outside '
                      f'[{lo}, {hi}].')
  return v


def parse_defense(spec: str) -> Defense:
  """Parses `part[+part...]`; unknown names list the valid ones.

  Raises:
    ConfigError (a ValueError) on `defense`: unknown part (an
      `UnknownNameError`, also a KeyError) or bad argument.
  """
  pre, aug, eps = [], [], None
  for part in [p.strip() for p in spec.split('+') if p.strip()] or ['']:
    name, _, arg = part.partition(':')
    if name == 'none' and not arg:
      continue
    if name == 'jpeg':
      q = _number(arg, 10, int, name, 1, 100)
      pre.append(lambda x, q=q: jpeg(x, q))
    elif name == 'grayscale' and not arg:
      pre.append(grayscale)
    elif name == 'bitdepth':
      b = _number(arg, 1, int, name, 1, 8)
      pre.append(lambda x, b=b: bit_depth(x, b))
    elif name == 'median':
      k = _number(arg, 3, int, name, 3, 15)
      if k % 2 == 0:
        raise ConfigError('defense', ': defence median: the size must be '
                          f'odd, got {k}.')
      pre.append(lambda x, k=k: median_filter(x, k))
    elif name == 'blur':
      s = _number(arg, 1.0, float, name, 0.1, 10.0)
      pre.append(lambda x, s=s: gaussian_blur(x, s))
    elif name in ('crop', 'flip', 'cutout', 'mixup', 'cutmix') and not arg:
      aug.append(name)
    elif name == 'adv':
      eps = _number(arg, 0.3, float, name, 1e-4, 1.0)
    else:
      raise UnknownNameError('defense', f': unknown defence '
                             f'{literal(repr(part))} in '
                             f'{literal(repr(spec))}; valid: '
                             f'{", ".join(DEFENSES)}, joined with + (e.g. '
                             'bitdepth:1+crop), or "all".')
  return Defense(spec, tuple(pre), tuple(aug), eps)


def parse_defense_list(value: str | list[str]) -> list[Defense]:
  """`all`, or a comma list of specs."""
  specs = value if isinstance(value, (list, tuple)) else value.split(',')
  specs = [s.strip() for s in specs if s.strip()]
  if specs == ['all']:
    specs = list(ALL_DEFENSES)
  if not specs:
    raise ConfigError('defense', ': no defence given; e.g. '
                      '{defense}=none,bitdepth:1 or all.')
  return [parse_defense(s) for s in specs]


# ------------------------------------------------------- adversarial training
def adversarial_model(inner, eps: float, steps: int = 5,
                      step_size: float | None = None):
  """Wraps a logits model so that `fit` trains on PGD examples.

  Each batch is replaced by its PGD adversary (random start in the eps ball,
  `steps` signed-gradient steps of `step_size`, projection onto the ball and
  [0, 1]) before the usual update; `inner` is the model to export.
  """
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  step_size = step_size or eps / 2

  class PGDTrained(keras.Model):

    def __init__(self):
      super().__init__()
      self.inner = inner

    def call(self, x, training=False):
      return self.inner(x, training=training)

    def _adversary(self, x, y):
      x_adv = tf.clip_by_value(
          x + tf.random.uniform(tf.shape(x), -eps, eps), 0.0, 1.0)
      for _ in range(steps):
        with tf.GradientTape() as tape:
          tape.watch(x_adv)
          loss = self.compute_loss(x=x_adv, y=y,
                                   y_pred=self.inner(x_adv, training=False))
        g = tape.gradient(loss, x_adv)
        x_adv = x_adv + step_size * tf.sign(g)
        x_adv = tf.clip_by_value(tf.clip_by_value(x_adv, x - eps, x + eps),
                                 0.0, 1.0)
      return tf.stop_gradient(x_adv)

    def train_step(self, data):
      x, y = data
      x_adv = self._adversary(x, y)
      with tf.GradientTape() as tape:
        logits = self.inner(x_adv, training=True)
        loss = self.compute_loss(x=x_adv, y=y, y_pred=logits)
      grads = tape.gradient(loss, self.inner.trainable_variables)
      self.optimizer.apply_gradients(zip(grads, self.inner.trainable_variables))
      return {'loss': loss}

  wrapper = PGDTrained()
  wrapper(tf.zeros([1, *inner.input_shape[1:]]))  # built, for BackupAndRestore
  return wrapper
