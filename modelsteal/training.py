"""One training routine for victims, students and target models.

Hard labels train with sparse cross-entropy; soft targets (probability
answers) with cross-entropy against the target distribution, which has the
same gradient as KL(target || student) (they differ by the targets' entropy,
a constant). Adam with cosine decay, optional small random translations
(`keras.layers.RandomTranslation`) for image data, resumable through
`keras.callbacks.BackupAndRestore`.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """A training recipe."""
  epochs: int = 10
  batch_size: int = 128
  learning_rate: float = 1e-3
  augment: bool = False  # random +-10% translations
  weight_decay: float = 0.0
  label_smoothing: float = 0.0


def translation_augmenter(seed: int, fraction: float = 0.1):
  import keras  # pylint: disable=g-import-not-at-top
  layer = keras.layers.RandomTranslation(fraction, fraction,
                                         fill_mode='constant', seed=seed)
  return lambda images: layer(images, training=True)


def train_classifier(arch: str, x: np.ndarray, targets: np.ndarray,
                     num_classes: int, config: TrainConfig, *, seed: int = 0,
                     strategy=None, backup_dir: str | None = None,
                     verbose: int = 2, model=None, callbacks=()):
  """Trains architecture `arch` (or the given `model`) on images `x`.

  Args:
    arch: key of `modelsteal.models.ARCHITECTURES`.
    x: float32 (N, H, W, C) in [0, 1].
    targets: int (N,) labels, or float (N, K) target distributions (rows are
      renormalised; all-zero rows fall back to uniform).
    num_classes: K.
    config: the recipe.
    seed: initialisation, shuffling and augmentation seed.
    strategy: a `tf.distribute.Strategy` (default: the current one).
    backup_dir: if given, training state is backed up there each epoch and
      an interrupted run resumes from it.
    verbose: Keras verbosity (2 = one line per epoch).
    model: an already-built model to train instead of building `arch`.
    callbacks: extra Keras callbacks.

  Returns:
    The trained `keras.Model` (logits).
  """
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from modelsteal import models  # pylint: disable=g-import-not-at-top
  from modelsteal.data import make_tf_dataset  # pylint: disable=g-import-not-at-top

  strategy = strategy or tf.distribute.get_strategy()
  soft = targets.ndim == 2
  if soft:
    targets = np.asarray(targets, np.float32)
    sums = targets.sum(axis=1, keepdims=True)
    targets = np.where(sums > 0, targets / np.maximum(sums, 1e-12),
                       1.0 / num_classes).astype(np.float32)
  else:
    targets = np.asarray(targets, np.int64)
  keras.utils.set_random_seed(seed)
  steps = max(1, math.ceil(len(x) / config.batch_size))
  with strategy.scope():
    if model is None:
      model = models.build(arch, x.shape[1:], num_classes)
    schedule = keras.optimizers.schedules.CosineDecay(
        config.learning_rate, decay_steps=steps * config.epochs)
    if config.weight_decay:
      opt = keras.optimizers.AdamW(schedule, weight_decay=config.weight_decay)
    else:
      opt = keras.optimizers.Adam(schedule)
    if soft:
      loss = keras.losses.CategoricalCrossentropy(
          from_logits=True, label_smoothing=config.label_smoothing)
    else:
      loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=opt, loss=loss)
  augment = translation_augmenter(seed) if config.augment else None
  ds = make_tf_dataset(x, targets, config.batch_size, shuffle=True, seed=seed,
                       augment=augment)
  callbacks = list(callbacks)
  if backup_dir:
    callbacks.insert(0, keras.callbacks.BackupAndRestore(backup_dir))
  model.fit(ds, epochs=config.epochs, verbose=verbose, callbacks=callbacks,
            shuffle=False)  # tf.data shuffles
  return model


def predict_probs(model, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
  """Softmax probabilities (N, K) float32 of a logits model."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  logits = model.predict(x, batch_size=batch_size, verbose=0)
  return tf.nn.softmax(logits).numpy().astype(np.float32)
