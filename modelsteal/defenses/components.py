"""The defend pipeline's component: train a target on (poisoned) data with a
defence, record clean-test accuracy per epoch, export with the defence's
test-time preprocessing inside the serving signature."""

from __future__ import annotations

import os

import numpy as np

from modelsteal.artifacts import ArtifactError
from modelsteal.artifacts import Examples
from modelsteal.artifacts import Model
from modelsteal.component import InputArtifact
from modelsteal.component import OutputArtifact
from modelsteal.component import Parameter
from modelsteal.component import component
from modelsteal.component import scratch_dir
from modelsteal.component import workdir as component_workdir


def _apply_in_batches(fn, x: np.ndarray, batch_size: int = 2048) -> np.ndarray:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return np.concatenate([np.asarray(fn(tf.constant(x[i:i + batch_size])))
                         for i in range(0, len(x), batch_size)]).astype(
                             np.float32)


@component
def train_defended(*, examples: InputArtifact[Examples],
                   model: OutputArtifact[Model],
                   defense: Parameter[str],
                   target: Parameter[str],
                   recipe: Parameter[dict],
                   train_size: Parameter[int] = 0,
                   test_size: Parameter[int] = 0,
                   seed: Parameter[int] = 0):
  """Trains `target` on `examples`' train split under `defense`.

  Args (beyond the artifacts):
    defense: a spec of `modelsteal.defenses.training` (e.g. `bitdepth:1`).
    target: architecture name.
    recipe: `TrainConfig` fields.
    train_size: use the first N training images (0: all).
    test_size: evaluate on the first N test images (0: all).
    seed: training seed.

  Properties written: `accuracy` (clean test, last epoch), `best_accuracy`,
  `best_epoch`, `history` (per epoch).
  """
  from modelsteal import distribute  # pylint: disable=g-import-not-at-top
  from modelsteal.defenses.training import adversarial_model, parse_defense  # pylint: disable=g-import-not-at-top
  from modelsteal.export import export_saved_model  # pylint: disable=g-import-not-at-top
  from modelsteal.training import TrainConfig, epoch_accuracy_callback, train_classifier  # pylint: disable=g-import-not-at-top
  d = parse_defense(defense)
  if 'train' not in examples.splits or 'test' not in examples.splits:
    raise ArtifactError(f'{examples.uri} needs a train and a test split; it '
                        f'has {examples.splits}.')
  train, test = examples.load_split('train'), examples.load_split('test')
  x, y = train['x'], train['y']
  if train_size:
    x, y = x[:train_size], y[:train_size]
  xt, yt = test['x'], test['y']
  if test_size:
    xt, yt = xt[:test_size], yt[:test_size]
  k = int(examples.properties.get('num_classes') or max(y.max(), yt.max()) + 1)
  if d.has_preprocess:
    x = _apply_in_batches(d.apply_preprocess, x)
  mixes = {'mixup', 'cutmix'} & set(d.augment)
  targets = np.eye(k, dtype=np.float32)[y] if mixes else y
  wrap = None
  if d.adversarial_eps:
    wrap = lambda m: adversarial_model(m, d.adversarial_eps)  # pylint: disable=unnecessary-lambda-assignment
  cb = epoch_accuracy_callback(
      xt, yt, preprocess=d.apply_preprocess if d.has_preprocess else None)
  keras_model = train_classifier(
      target, x, targets, k, TrainConfig(**recipe), seed=seed,
      strategy=distribute.current(), callbacks=[cb], wrap=wrap,
      pair_augment=d.augmenter(seed, x.shape[1:]),
      backup_dir=os.path.join(scratch_dir(), 'backup'))
  keras_model.save(model.keras_path)
  export_saved_model(keras_model, model.serving_dir, version=1,
                     preprocess=d.apply_preprocess if d.has_preprocess else None)
  hist = cb.history
  best = int(np.argmax(hist))
  model.properties.update({
      'arch': target, 'defense': defense, 'num_classes': k,
      'accuracy': hist[-1], 'best_accuracy': hist[best], 'best_epoch': best + 1,
      'history': hist, 'train_size': int(len(x)), 'recipe': recipe,
      'data': examples.properties.get('name', '')})
