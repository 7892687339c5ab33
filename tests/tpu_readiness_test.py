"""What a TPU asks of the training step, checked on the CPU: the step
compiles with XLA (`jit_compile=True`), every batch has the same static
shape, the step is traced once (no Python work per step), the global batch
splits evenly over the replicas, and `steps_per_execution` comes from the
recipe. No TPU is reachable here; an unreachable one is a clear error."""

import socket

import numpy as np
import pytest

from modelsteal import distribute
from modelsteal.training import TrainConfig, train_classifier
from tests.conftest import synthetic_images


def _traced_model(shapes):
  """mnist_mlp-like model whose first layer records, in Python, the input
  shape each time the step is traced (Python runs only while tracing)."""
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  class Probe(keras.layers.Layer):

    def call(self, x):
      if isinstance(x, tf.Tensor):  # not the KerasTensor of model building
        shapes.append(tuple(x.shape))
      return x

  inp = keras.Input((12, 12, 1))
  x = keras.layers.Flatten()(Probe()(inp))
  x = keras.layers.Dense(32, activation='relu')(x)
  model = keras.Model(inp, keras.layers.Dense(4)(x))
  shapes.clear()  # building the model traced it once, symbolically
  return model


def _fit(config, shapes, n=100):
  x, y = synthetic_images(n, seed=11)  # 100 = 3 x 32 + 4: a partial batch
  return train_classifier('mnist_mlp', x, y, 4, config, verbose=0,
                          model=_traced_model(shapes))


@pytest.mark.slow
def test_xla_step_with_static_shapes_is_traced_once():
  shapes, more_epochs = [], []
  model = _fit(TrainConfig(epochs=1, batch_size=32, jit_compile=True,
                           steps_per_execution=2), shapes)
  assert model.jit_compile is True
  assert model.steps_per_execution == 2  # from the recipe
  # Always a full batch of 32, traced at the first step only (tf.function
  # traces twice there: once creating the optimizer's variables), so 3
  # epochs of 4 steps run no more Python than 1 epoch.
  assert shapes and set(shapes) == {(32, 12, 12, 1)}, shapes
  _fit(TrainConfig(epochs=3, batch_size=32, jit_compile=True,
                   steps_per_execution=2), more_epochs)
  assert more_epochs == shapes
  # Without static shapes the partial last batch (4 images) makes the batch
  # dimension unknown: what a TPU would have to compile again.
  shapes = []
  _fit(TrainConfig(epochs=2, batch_size=32), shapes)
  assert any(s[0] != 32 for s in shapes), shapes


def test_static_shapes_keep_every_example():
  """Static shapes repeat the data instead of dropping the remainder, so a
  set smaller than one batch still trains (and every image is seen)."""
  shapes = []
  model = _fit(TrainConfig(epochs=1, batch_size=32, jit_compile=True),
               shapes, n=20)
  assert set(shapes) == {(32, 12, 12, 1)}, shapes
  assert np.isfinite(model.get_weights()[0]).all()


class _Strategy:

  def __init__(self, replicas, name='MirroredStrategy'):
    self.num_replicas_in_sync = replicas
    self.__class__ = type(name, (_Strategy,), {})


def test_global_batch_splits_over_replicas(capsys):
  assert distribute.global_batch_size(64, _Strategy(2)) == 64
  assert distribute.global_batch_size(64, _Strategy(8)) == 64
  assert distribute.global_batch_size(63, _Strategy(2)) == 64
  assert 'using 64 (32 per replica)' in capsys.readouterr().out
  assert distribute.global_batch_size(100, _Strategy(8)) == 104
  assert distribute.needs_static_shapes(_Strategy(8, 'TPUStrategy'))
  assert not distribute.needs_static_shapes(_Strategy(2))


def test_unreachable_tpu_is_a_clear_error():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]  # closed again: nobody listens there
  with pytest.raises(distribute.DistributeError, match='unreachable'):
    distribute.get_strategy('tpu', tpu_address=f'grpc://127.0.0.1:{port}')


def test_unknown_strategy_lists_multiworker():
  with pytest.raises(ValueError, match='multiworker'):
    distribute.get_strategy('horovod')
