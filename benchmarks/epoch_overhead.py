"""What a training epoch costs beyond its batches (issue 9: round-based
stealing trains small students for many epochs).

    python benchmarks/epoch_overhead.py [path/to/mnist.npz] [--n=2000]
        [--epochs=30] [--one_iterator] [--repeats=1]

Trains `mnist_cnn` with `modelsteal.training.train_classifier` (batch 128,
translations, as the round students) on n images for the given epochs and
prints the wall seconds of each fit, and of its epochs and its return (from
the last epoch's end until `fit` returns). `--autotune` turns tf.data's
autotuning back on (`modelsteal.training.DATA_AUTOTUNE`): with the one
repeated iterator `train_classifier` uses, its thread can hold up `fit`'s
return (BUILD_NOTES.md, "Active strategies", A7). Run it at an older commit
(copy the file there) for the per-epoch iterator that came before.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import train_throughput  # pylint: disable=g-import-not-at-top,wrong-import-position


def main():
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('npz', nargs='?')
  ap.add_argument('--n', type=int, default=2000)
  ap.add_argument('--epochs', type=int, default=30)
  ap.add_argument('--autotune', action='store_true')
  ap.add_argument('--repeats', type=int, default=1)
  a = ap.parse_args()
  import keras  # pylint: disable=g-import-not-at-top
  from modelsteal import training  # pylint: disable=g-import-not-at-top
  from modelsteal.training import TrainConfig, train_classifier  # pylint: disable=g-import-not-at-top
  x, y = train_throughput.training_images(a.npz, a.n)
  if a.autotune and hasattr(training, 'DATA_AUTOTUNE'):
    training.DATA_AUTOTUNE = True

  class Clock(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
      self.begin = time.perf_counter()

    def on_train_end(self, logs=None):
      self.end = time.perf_counter()

  for _ in range(a.repeats):
    clock = Clock()
    t = time.perf_counter()
    train_classifier('mnist_cnn', x, y, 10, TrainConfig(
        epochs=a.epochs, batch_size=128, learning_rate=2e-3, augment=True),
                     verbose=0, callbacks=[clock])
    done = time.perf_counter()
    print(f'n={a.n} epochs={a.epochs} autotune={a.autotune}: '
          f'{done - t:.1f} s (epochs {clock.end - clock.begin:.1f} s, '
          f'return {done - clock.end:.1f} s)', flush=True)


if __name__ == '__main__':
  main()
