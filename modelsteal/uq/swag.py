"""SWAG (Maddox et al., NeurIPS 2019, arXiv 1902.02476).

The base architecture is trained as a plain student; training then goes on
for `epochs` more epochs at a constant learning rate (`lr` times the
recipe's), collecting the weights `collect` times per epoch into their mean,
their second moment (diagonal) and the last `rank` deviations (low rank).
Weight samples

    w = mean + sqrt(diag / 2) z1 + D z2 / sqrt(2 (rank - 1))

are drawn once, after training, with the student's seed; BatchNorm statistics
are re-estimated for every sample on the training images. The student holds
the `samples` sampled networks, so prediction, export and serving are those
of an ensemble (`stack_members`), and sampling is fixed by the seed.
"""

from __future__ import annotations

import collections
import dataclasses
import os

import numpy as np

from modelsteal.uq import base

OPTIONS = {'samples': 10, 'epochs': 0.0, 'rank': 10, 'lr': 0.5, 'collect': 4}


def check(opts: dict, text: str) -> None:
  base.check_count(opts, 'samples', text, 1, 200)
  base.check_count(opts, 'epochs', text, 0, 1000)
  base.check_count(opts, 'rank', text, 2, 100)
  base.check_count(opts, 'collect', text, 1, 100)
  if not opts['lr'] > 0:
    raise base.UQSpecError(f'{text!r}: lr must be positive.')


def num_samples(spec) -> int:
  return int(spec.opts['samples'])


def build(spec, input_shape, num_classes, seed, n_train=1):
  from modelsteal import models  # pylint: disable=g-import-not-at-top
  del seed, n_train
  return [models.build(spec.archs[0], input_shape, num_classes)
          for _ in range(num_samples(spec))]


sample_logits = base.stack_members


class Moments:
  """Running mean, second moment and last `rank` deviations of flat weights."""

  def __init__(self, rank: int):
    self.n = 0
    self.mean = self.sq_mean = None
    self.dev = collections.deque(maxlen=rank)

  def collect(self, w: np.ndarray) -> None:
    w = w.astype(np.float64)
    if self.n == 0:
      self.mean, self.sq_mean = np.zeros_like(w), np.zeros_like(w)
    self.n += 1
    self.mean += (w - self.mean) / self.n
    self.sq_mean += (w * w - self.sq_mean) / self.n
    self.dev.append((w - self.mean).astype(np.float32))

  def sample(self, rng: np.random.Generator) -> np.ndarray:
    var = np.maximum(self.sq_mean - self.mean**2, 1e-30)
    w = self.mean + np.sqrt(var / 2) * rng.standard_normal(self.mean.shape)
    if len(self.dev) > 1:
      d = np.stack(self.dev, axis=1)
      w += d @ rng.standard_normal(d.shape[1]) / np.sqrt(2 * (len(self.dev) - 1))
    return w.astype(np.float32)

  def state(self) -> dict:
    return {'n': self.n, 'mean': self.mean, 'sq_mean': self.sq_mean,
            'dev': np.stack(self.dev) if self.dev else np.zeros((0,))}

  @classmethod
  def from_state(cls, z, rank: int) -> 'Moments':
    m = cls(rank)
    m.n, m.mean, m.sq_mean = int(z['n']), z['mean'], z['sq_mean']
    m.dev.extend(list(z['dev']))
    return m


def flat_weights(model) -> np.ndarray:
  return np.concatenate([w.numpy().ravel() for w in model.trainable_weights])


def set_flat_weights(model, flat: np.ndarray) -> None:
  i = 0
  for w in model.trainable_weights:
    n = int(np.prod(w.shape))
    w.assign(flat[i:i + n].reshape(w.shape))
    i += n


def update_batchnorm(model, x: np.ndarray, batch_size: int = 256,
                     max_batches: int = 40) -> bool:
  """Re-estimates BatchNorm moving statistics as a cumulative average over
  training batches (SWAG's `bn_update`); False if the model has none."""
  import keras  # pylint: disable=g-import-not-at-top
  bns = [l for l in model._flatten_layers() if isinstance(  # pylint: disable=protected-access
      l, keras.layers.BatchNormalization)]
  if not bns:
    return False
  saved = [bn.momentum for bn in bns]
  for bn in bns:
    bn.moving_mean.assign(np.zeros(bn.moving_mean.shape, np.float32))
    bn.moving_variance.assign(np.ones(bn.moving_variance.shape, np.float32))
  for b, i in enumerate(range(0, min(len(x), batch_size * max_batches),
                              batch_size)):
    for bn in bns:  # new = old * b / (b + 1) + batch / (b + 1)
      bn.momentum = b / (b + 1)
    model(x[i:i + batch_size], training=True)
  for bn, m in zip(bns, saved):
    bn.momentum = m
  return True


def _collector(moments: Moments, every: int, path: str):
  import keras  # pylint: disable=g-import-not-at-top

  class Collect(keras.callbacks.Callback):

    def on_train_batch_end(self, batch, logs=None):
      if int(self.model.optimizer.iterations.numpy()) % every == 0:
        moments.collect(flat_weights(self.model))

    def on_epoch_end(self, epoch, logs=None):
      np.savez(path + '.tmp.npz', **moments.state())
      os.replace(path + '.tmp.npz', path)

  return Collect()


def fit(spec, x, targets, num_classes, recipe, seed, ctx, probe_samples=5):
  from modelsteal.training import train_classifier  # pylint: disable=g-import-not-at-top
  o = spec.opts
  arch = spec.archs[0]
  steps = max(1, -(-len(x) // recipe.batch_size))
  # Phase 1: a plain student (the SWA starting point).
  pre = os.path.join(ctx.scratch, 'pretrained.weights.h5')
  logger1 = base.probe_logger(
      ctx, lambda m: base.softmax(m(ctx.probe_x, training=False))[None], 'pre')
  model = base.build_seeded(
      lambda: build(spec, x.shape[1:], num_classes, seed)[0], seed,
      ctx.strategy)
  if os.path.exists(pre):
    model.load_weights(pre)
    if logger1 is not None:
      logger1.restore()
  else:
    train_classifier(arch, x, targets, num_classes, recipe, seed=seed,
                     model=model, strategy=ctx.strategy, verbose=ctx.verbose,
                     desc=f'train {spec} (before collecting)',
                     backup_dir=os.path.join(ctx.scratch, 'backup_pre'),
                     callbacks=[logger1] if logger1 else [])
    if logger1 is not None:
      logger1.save()
    model.save_weights(pre + '.tmp.weights.h5')
    os.replace(pre + '.tmp.weights.h5', pre)
  # Phase 2: constant learning rate, collect the moments.
  swa_epochs = int(o['epochs']) or max(1, round(recipe.epochs / 4))
  mpath = os.path.join(ctx.scratch, 'moments.npz')
  moments = Moments(int(o['rank']))
  if os.path.exists(mpath):
    with np.load(mpath) as z:
      moments = Moments.from_state(z, int(o['rank']))
  probe_model = build(spec, x.shape[1:], num_classes, seed)[0]
  probe_rng = np.random.default_rng(seed + 1)

  def probe_probs(m):
    if moments.n < 2:
      return base.softmax(m(ctx.probe_x, training=False))[None]
    outs = []
    for _ in range(probe_samples):
      set_flat_weights(probe_model, moments.sample(probe_rng))
      outs.append(base.softmax(probe_model(ctx.probe_x, training=False)))
    return np.stack(outs)

  offset = (logger1.records[-1][0] if logger1 and logger1.records
            else steps * recipe.epochs)
  logger2 = base.probe_logger(ctx, probe_probs, 'swag', step_offset=offset)
  swa_recipe = dataclasses.replace(
      recipe, epochs=swa_epochs, schedule='constant',
      learning_rate=recipe.learning_rate * o['lr'])
  collector = _collector(moments, max(1, steps // int(o['collect'])), mpath)
  done = os.path.join(ctx.scratch, 'swag_done')
  if not os.path.exists(done):  # else finished before an interruption
    train_classifier(arch, x, targets, num_classes, swa_recipe, seed=seed + 1,
                     model=model, strategy=ctx.strategy, verbose=ctx.verbose,
                     desc=f'train {spec} (collecting weights)',
                     backup_dir=os.path.join(ctx.scratch, 'backup_swag'),
                     callbacks=[collector] + ([logger2] if logger2 else []))
    if logger2 is not None:
      logger2.save()
    open(done, 'w').close()
  elif logger2 is not None:
    logger2.restore()
  # The samples: fixed by the seed, BatchNorm re-estimated for each.
  rng = np.random.default_rng(seed)
  members = build(spec, x.shape[1:], num_classes, seed)
  for m in members:
    m(x[:1])
    set_flat_weights(m, moments.sample(rng))
    update_batchnorm(m, x)
  student = base.UQStudent(spec, members, num_classes, seed, x.shape[1:])
  trace = (logger1.records if logger1 else []) + (
      logger2.records if logger2 else [])
  return student, trace
