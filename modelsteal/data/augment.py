"""Batch augmentations for 32x32 colour images (CIFAR-style training).

`crop_flip_augmenter(seed)` is the standard CIFAR-10 recipe (He et al. 2016,
section 4.2): pad 4 pixels with zeros on each side, crop a random 32x32
window, flip horizontally with probability 1/2 -- each image its own offset
and flip. MNIST-style digits take translations only (a flipped digit is
another symbol, or none); for them see `modelsteal.training`'s
translation augmenter.

Both the crop and the flip are one pair of `tf.gather`s on the padded batch
(a flip is the column index reversed), so it costs far less than the
training step on a 2-core CPU and runs inside the tf.data pipeline's `map`.
"""

from __future__ import annotations


def crop_flip_augmenter(seed: int, pad: int = 4, flip: bool = True):
  """A function images (B, H, W, C) float32 -> augmented images, same shape.

  Args:
    seed: op seed of the random offsets and flips.
    pad: zero padding on each side; offsets are uniform in 0..2*pad.
    flip: also flip half of the images left-right.

  Returns:
    A function for `make_tf_dataset(augment=...)` (graph-mode safe).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  def augment(images):
    shape = tf.shape(images)
    n, h, w = shape[0], shape[1], shape[2]
    padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    oy = tf.random.uniform([n], 0, 2 * pad + 1, tf.int32, seed=seed)
    ox = tf.random.uniform([n], 0, 2 * pad + 1, tf.int32, seed=seed + 1)
    rows = oy[:, None] + tf.range(h)[None, :]  # (B, H) rows of `padded`
    cols = ox[:, None] + tf.range(w)[None, :]  # (B, W)
    if flip:
      mirror = tf.random.uniform([n], 0, 2, tf.int32, seed=seed + 2) > 0
      cols = tf.where(mirror[:, None], tf.reverse(cols, [1]), cols)
    out = tf.gather(padded, rows, axis=1, batch_dims=1)  # (B, H, W+2p, C)
    return tf.gather(out, cols, axis=2, batch_dims=1)  # (B, H, W, C)

  return augment


AUGMENTERS = {'crop_flip': crop_flip_augmenter}
