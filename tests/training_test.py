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


_AVX2_ONLY = 'processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n'
_SAPPHIRE = 'processor\t: 0\nflags\t\t: avx2 avx512f avx512_bf16 amx_bf16\n'
_NEOVERSE = 'processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n'


def test_native_bfloat16_reads_the_cpu_flags():
  from modelsteal.training import native_bfloat16  # pylint: disable=g-import-not-at-top
  assert not native_bfloat16(_AVX2_ONLY)
  assert native_bfloat16(_SAPPHIRE)
  assert native_bfloat16(_NEOVERSE)
  # a flag named like one, but not it, does not count
  assert not native_bfloat16('flags\t: avx512_bf16x avx2\n')


def test_bfloat16_recipe_falls_back_to_float32_without_native_bf16(
    monkeypatch):
  from modelsteal.training import for_this_machine  # pylint: disable=g-import-not-at-top
  monkeypatch.delenv('MODELSTEAL_BFLOAT16', raising=False)
  bf16 = TrainConfig(epochs=3, precision='mixed_bfloat16')
  said = []
  ran = for_this_machine(bf16, cpuinfo=_AVX2_ONLY, log=said.append)
  assert ran.precision == 'float32' and ran.epochs == 3
  assert len(said) == 1 and 'float32' in said[0]
  assert for_this_machine(bf16, cpuinfo=_SAPPHIRE, log=said.append) == bf16
  plain = TrainConfig(epochs=3)
  assert for_this_machine(plain, cpuinfo=_AVX2_ONLY, log=said.append) == plain
  assert len(said) == 1
  monkeypatch.setenv('MODELSTEAL_BFLOAT16', '1')
  assert for_this_machine(bf16, cpuinfo=_AVX2_ONLY, log=said.append) == bf16
