"""Training: hard and soft targets learn; an interrupted run resumes."""

import keras
import numpy as np
import pytest

from modelsteal.training import TrainConfig, predict_probs, train_classifier
from tests.conftest import synthetic_images


@pytest.mark.parametrize('soft', [False, True])
def test_learns_from_hard_and_soft_targets(soft):
  x, y = synthetic_images(300, seed=11)
  t = np.eye(4, dtype=np.float32)[y] * 0.9 + 0.025 if soft else y
  m = train_classifier('mnist_mlp', x, t, 4, TrainConfig(epochs=4), verbose=0)
  xt, yt = synthetic_images(100, seed=12)
  assert (predict_probs(m, xt).argmax(1) == yt).mean() > 0.9


class _Stop(keras.callbacks.Callback):

  def __init__(self, at):
    super().__init__()
    self.at = at

  def on_epoch_end(self, epoch, logs=None):
    if epoch + 1 == self.at:
      raise KeyboardInterrupt


class _Record(keras.callbacks.Callback):

  def __init__(self):
    super().__init__()
    self.epochs = []

  def on_epoch_begin(self, epoch, logs=None):
    self.epochs.append(epoch)


@pytest.mark.slow
def test_interrupted_training_resumes_from_backup(tmp_path):
  x, y = synthetic_images(64, seed=13)
  cfg = TrainConfig(epochs=4, batch_size=32)
  with pytest.raises(KeyboardInterrupt):
    train_classifier('mnist_mlp', x, y, 4, cfg, backup_dir=str(tmp_path),
                     verbose=0, callbacks=[_Stop(2)])
  rec = _Record()
  train_classifier('mnist_mlp', x, y, 4, cfg, backup_dir=str(tmp_path),
                   verbose=0, callbacks=[rec])
  assert rec.epochs == [2, 3]  # epochs 0 and 1 were not redone


def test_recipe_params_keep_fingerprints_of_earlier_runs():
  """Fields added after 0.1.0 stay out of a recipe's parameters while at
  their defaults: a victim cached by 0.1.0 is not retrained."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  from modelsteal.training import TrainConfig, recipe_params  # pylint: disable=g-import-not-at-top
  assert set(recipe_params(TrainConfig())) == {
      'epochs', 'batch_size', 'learning_rate', 'augment', 'weight_decay',
      'label_smoothing'}
  swa = dataclasses.replace(TrainConfig(), schedule='constant')
  assert recipe_params(swa)['schedule'] == 'constant'
  assert TrainConfig(**recipe_params(swa)) == swa
