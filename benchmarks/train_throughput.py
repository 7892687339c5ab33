"""Training throughput of a student on this machine (images/s), by recipe knob.

    python benchmarks/train_throughput.py [path/to/mnist.npz] [--n=1500]

Trains `mnist_cnn` with `modelsteal.training.train_classifier` on n images
(real MNIST when the npz is given, else random arrays) for a few epochs per
configuration: batch 64 / 128, translations on / off, and Keras'
`steps_per_execution` 1 / 16. Prints images per second of the fit (after a
first epoch that traces). Where the time of a small student goes decides
whether round-based stealing can beat one big training (issue 9).
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))


def training_images(npz: str | None, n: int):
  """The first n MNIST training images of an npz, float32 NHWC in [0, 1],
  and their labels; random arrays without one."""
  if npz:
    with np.load(npz) as d:
      return ((d['x_train'][:n].astype(np.float32) / 255.0)[..., None],
              d['y_train'][:n].astype(np.int64))
  rng = np.random.default_rng(0)
  return rng.random((n, 28, 28, 1), np.float32), rng.integers(0, 10, n)


def main():
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('npz', nargs='?')
  ap.add_argument('--n', type=int, default=1500)
  ap.add_argument('--epochs', type=int, default=4)
  ap.add_argument('--arch', default='mnist_cnn')
  a = ap.parse_args()
  import keras  # pylint: disable=g-import-not-at-top
  import pandas as pd  # pylint: disable=g-import-not-at-top
  from modelsteal.training import TrainConfig, train_classifier  # pylint: disable=g-import-not-at-top
  x, y = training_images(a.npz, a.n)

  class Clock(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
      if epoch == 1:
        self.t = time.perf_counter()

    def on_train_end(self, logs=None):
      self.s = time.perf_counter() - self.t

  rows = []
  for batch, augment, spe in itertools.product((64, 128), (True, False),
                                               (1, 16)):
    clock = Clock()
    train_classifier(a.arch, x, y, 10, TrainConfig(
        epochs=a.epochs, batch_size=batch, learning_rate=2e-3,
        augment=augment, steps_per_execution=spe), verbose=0,
                     callbacks=[clock])
    rate = (a.epochs - 1) * len(x) / clock.s
    rows.append({'batch': batch, 'augment': augment,
                 'steps_per_execution': spe, 'images_per_s': round(rate)})
    print(rows[-1], flush=True)
  print(pd.DataFrame(rows).to_string(index=False))


if __name__ == '__main__':
  main()
