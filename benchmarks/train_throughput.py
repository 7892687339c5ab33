"""Training and inference throughput (images/s) per architecture and knob.

    python benchmarks/train_throughput.py [DATA] --arch=cifar10_cnn \\
        --batch=64,128,256 --jit=0,1 --precision=float32,mixed_bfloat16 \\
        --augment=crop_flip --steps=120 [--shape=32,32,3] [--csv=out.csv]

DATA is anything `modelsteal.data.load_dataset` takes (an npz path such as
../shared/data/cifar10/cifar10_jpeg_q75.npz, `mnist`, `synthetic_cifar10`);
without it, random images of `--shape`. Pixel values do not change the
speed; the shape does. For every combination of --arch, --batch, --jit
(XLA-compile the step), --precision (a Keras dtype policy: `float32`, or
`mixed_bfloat16`, which oneDNN runs on AVX-512 BF16 CPUs) and --augment
(`none`, `translate` (the recipe's `augment=True`), `crop_flip`: CIFAR's
pad-4 crop and flip) it trains with `modelsteal.training.train_classifier`
for --warmup + --steps steps and reports images/s over the last --steps:
the mean rate, the median step's rate, and images per CPU-second of this
process (all its threads): where other jobs share the CPU, the last is the
steadier figure for comparing settings, and about twice it bounds the rate
on both cores alone. With --infer it also times inference: `predict_logits` (eager
batches of 1024, the path the oracle and evaluation take) and the same
forward pass as one `tf.function` with and without XLA.

The epoch-time estimate a recipe needs is n_images / images_per_s; with
`--epoch_images=25000` the table shows it in seconds (issue 30).

Earlier form (MNIST, issue 9): `python benchmarks/train_throughput.py
../shared/data/mnist/mnist.npz --n=1500 --arch=mnist_cnn --sweep=mnist`
runs batch 64/128 x translations on/off x steps_per_execution 1/16 over
a few epochs of n images.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))


def _ints(s):
  return [int(v) for v in s.split(',') if v]


def _strs(s):
  return [v for v in s.split(',') if v]


def images_for(data: str | None, shape, n: int):
  """n training images float32 (n, H, W, C) in [0, 1] and int labels.

  From `data` (tiled when it holds fewer than n), else random of `shape`.
  """
  if data:
    from modelsteal.data import load_dataset  # pylint: disable=g-import-not-at-top
    ds = load_dataset(data)
    if shape and tuple(shape) != ds.shape:
      raise SystemExit(f'--shape {tuple(shape)} but {data} holds {ds.shape}')
    reps = -(-n // len(ds.x_train))
    x = np.concatenate([ds.x_train] * reps)[:n] if reps > 1 else ds.x_train[:n]
    y = np.concatenate([ds.y_train] * reps)[:n] if reps > 1 else ds.y_train[:n]
    return x, y, ds.label
  rng = np.random.default_rng(0)
  return (rng.random((n, *shape), np.float32), rng.integers(0, 10, n),
          'random arrays')


class StepClock:
  """Keras callback: the wall time at the end of every training step."""

  def __new__(cls):
    import keras  # pylint: disable=g-import-not-at-top

    class _Clock(keras.callbacks.Callback):

      def __init__(self):
        super().__init__()
        self.t = []  # (wall s, this process's CPU s, all threads)

      def on_train_batch_begin(self, batch, logs=None):
        if not self.t:
          self.t.append((time.perf_counter(), time.process_time()))

      def on_train_batch_end(self, batch, logs=None):
        self.t.append((time.perf_counter(), time.process_time()))

    return _Clock()


def train_rate(arch, x, y, batch, jit, precision, augment, warmup, steps):
  """(mean images/s, median-step images/s, images per CPU-second,
  first-step s) of one setting."""
  import keras  # pylint: disable=g-import-not-at-top
  from modelsteal.data import crop_flip_augmenter  # pylint: disable=g-import-not-at-top
  from modelsteal.training import TrainConfig, train_classifier  # pylint: disable=g-import-not-at-top
  n = (warmup + steps) * batch
  xs, ys = x[:n], y[:n]
  pair = None
  if augment == 'crop_flip':
    crop = crop_flip_augmenter(seed=0)
    pair = lambda a, b: (crop(a), b)
  keras.mixed_precision.set_global_policy(precision)
  try:
    clock = StepClock()
    train_classifier(arch, xs, ys, 10, TrainConfig(
        epochs=1, batch_size=batch, learning_rate=1e-3,
        augment=augment == 'translate', jit_compile=bool(jit)),
                     verbose=0, callbacks=[clock], pair_augment=pair)
  finally:
    keras.mixed_precision.set_global_policy('float32')
  t = np.asarray(clock.t)
  dt = np.diff(t[:, 0])  # dt[0] is the first step (tracing, XLA compile)
  tail = dt[warmup:]
  cpu = t[-1, 1] - t[warmup + 1, 1]
  return (batch * len(tail) / tail.sum(), batch / np.median(tail),
          batch * len(tail) / cpu, float(dt[0]))


def infer_rates(arch, x, precision, reps=3, batch=1024):
  """Inference images/s: eager `predict_logits`, tf.function, tf.function+XLA."""
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from modelsteal import models  # pylint: disable=g-import-not-at-top
  from modelsteal.training import predict_logits  # pylint: disable=g-import-not-at-top
  keras.mixed_precision.set_global_policy(precision)
  try:
    model = models.build(arch, x.shape[1:], 10)
  finally:
    keras.mixed_precision.set_global_policy('float32')
  out = {}
  fns = {'eager': lambda b: model(b, training=False),
         'graph': tf.function(lambda b: model(b, training=False),
                              jit_compile=False),
         'xla': tf.function(lambda b: model(b, training=False),
                            jit_compile=True)}
  for name, fn in fns.items():
    if name == 'eager':
      run = lambda: predict_logits(model, x, batch)
    else:
      run = lambda fn=fn: [np.asarray(fn(tf.constant(x[i:i + batch])))
                           for i in range(0, len(x) - batch + 1, batch)]
    run()  # trace / compile
    times = []
    for _ in range(reps):
      t0 = time.perf_counter()
      run()
      times.append(time.perf_counter() - t0)
    used = len(x) if name == 'eager' else (len(x) // batch) * batch
    out[name] = used / float(np.median(times))
  return out


def mnist_sweep(a):
  """The issue-9 sweep (see the module docstring)."""
  import keras  # pylint: disable=g-import-not-at-top
  import pandas as pd  # pylint: disable=g-import-not-at-top
  from modelsteal.training import TrainConfig, train_classifier  # pylint: disable=g-import-not-at-top
  x, y, _ = images_for(a.data, (28, 28, 1), a.n)

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
    train_classifier(a.arch.split(',')[0], x, y, 10, TrainConfig(
        epochs=a.epochs, batch_size=batch, learning_rate=2e-3,
        augment=augment, steps_per_execution=spe), verbose=0,
                     callbacks=[clock])
    rate = (a.epochs - 1) * len(x) / clock.s
    rows.append({'batch': batch, 'augment': augment,
                 'steps_per_execution': spe, 'images_per_s': round(rate)})
    print(rows[-1], flush=True)
  print(pd.DataFrame(rows).to_string(index=False))


def main():
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('data', nargs='?',
                  help='npz path or dataset name (default: random arrays)')
  ap.add_argument('--arch', default='cifar10_cnn',
                  help='comma-separated architectures')
  ap.add_argument('--shape', default='32,32,3',
                  help='image shape H,W,C for random arrays')
  ap.add_argument('--batch', default='128', help='comma-separated')
  ap.add_argument('--jit', default='0', help='comma-separated 0/1')
  ap.add_argument('--precision', default='float32',
                  help='comma-separated Keras dtype policies')
  ap.add_argument('--augment', default='crop_flip',
                  help='comma-separated: none, translate, crop_flip')
  ap.add_argument('--warmup', type=int, default=10)
  ap.add_argument('--steps', type=int, default=100)
  ap.add_argument('--infer', action='store_true',
                  help='also time inference per arch and precision')
  ap.add_argument('--infer_n', type=int, default=4096)
  ap.add_argument('--epoch_images', type=int, default=25000)
  ap.add_argument('--csv', help='append the rows to this CSV file')
  ap.add_argument('--sweep', choices=['cifar', 'mnist'], default='cifar')
  ap.add_argument('--n', type=int, default=1500, help='--sweep=mnist only')
  ap.add_argument('--epochs', type=int, default=4, help='--sweep=mnist only')
  a = ap.parse_args()
  if a.sweep == 'mnist':
    return mnist_sweep(a)
  import pandas as pd  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  shape = tuple(_ints(a.shape))
  batches, jits = _ints(a.batch), _ints(a.jit)
  n = (a.warmup + a.steps) * max(batches)
  x, y, label = images_for(a.data, None if a.data else shape, n)
  print(f'data: {label}, {x.shape[1:]}; TF {tf.__version__}, '
        f'{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}; '
        f'load average {os.getloadavg()[0]:.2f}', flush=True)
  rows = []
  for arch, precision in itertools.product(_strs(a.arch),
                                           _strs(a.precision)):
    for batch, jit, aug in itertools.product(batches, jits, _strs(a.augment)):
      load = os.getloadavg()[0]
      mean, med, per_cpu, first = train_rate(arch, x, y, batch, jit, precision, aug,
                                    a.warmup, a.steps)
      rows.append({'arch': arch, 'mode': 'train', 'batch': batch, 'jit': jit,
                   'precision': precision, 'augment': aug,
                   'images_per_s': round(mean), 'median_step_ips': round(med),
                   'per_cpu_s': round(per_cpu),
                   'first_step_s': round(first, 1),
                   'epoch_s': round(a.epoch_images / mean),
                   'load1': round(load, 2)})
      print(rows[-1], flush=True)
    if a.infer:
      rates = infer_rates(arch, x[:a.infer_n], precision)
      for k, v in rates.items():
        rows.append({'arch': arch, 'mode': f'infer {k}', 'batch': 1024,
                     'jit': int(k == 'xla'), 'precision': precision,
                     'augment': '', 'images_per_s': round(v),
                     'load1': round(os.getloadavg()[0], 2)})
        print(rows[-1], flush=True)
  table = pd.DataFrame(rows)
  print(table.to_string(index=False))
  if a.csv:
    table.to_csv(a.csv, mode='a', header=not os.path.exists(a.csv),
                 index=False)


if __name__ == '__main__':
  main()
