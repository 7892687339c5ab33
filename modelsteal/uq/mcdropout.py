"""MC dropout (Gal & Ghahramani, ICML 2016, arXiv 1506.02142).

The base architecture's `Dropout` layers become `MCDropout`, which stays on
at prediction time inside a sample context; BatchNorm stays in inference
mode (the model is never called with `training=True` to predict). An
architecture without dropout gets one `MCDropout` before its last layer.
`:rate=R` overrides every dropout rate (0: keep the architecture's).
"""

from __future__ import annotations

import os

from modelsteal.uq import base

OPTIONS = {'samples': 20, 'rate': 0.0}
INSERTED_RATE = 0.25  # for architectures that have no dropout of their own


def check(opts: dict, text: str) -> None:
  base.check_count(opts, 'samples', text, 1, 1000)
  base.check_fraction(opts, 'rate', text)


def num_samples(spec) -> int:
  return int(spec.opts['samples'])


def build(spec, input_shape, num_classes, seed, n_train=1):
  import keras  # pylint: disable=g-import-not-at-top
  from modelsteal import models  # pylint: disable=g-import-not-at-top
  from modelsteal.uq.layers import MCDropout  # pylint: disable=g-import-not-at-top
  del seed, n_train
  rate = spec.opts['rate']

  def replace(layer, i):
    if isinstance(layer, keras.layers.Dropout):
      return MCDropout(rate or layer.rate, salt=i, name=layer.name)
    return None

  model = base.clone_replacing(
      models.build(spec.archs[0], input_shape, num_classes), replace)
  if not any(isinstance(l, MCDropout) for l in model.layers):
    last = model.layers[-1]
    out = last(MCDropout(rate or INSERTED_RATE, salt=0)(last.input))
    model = keras.Model(model.inputs, out, name=f'{model.name}_mcdropout')
  return [model]


def sample_logits(student, x):
  return base.stack_contexts(student.models[0], student.seed,
                             student.num_samples, x)


def fit(spec, x, targets, num_classes, recipe, seed, ctx, probe_samples=10):
  from modelsteal.training import train_classifier  # pylint: disable=g-import-not-at-top
  return fit_single(build, spec, x, targets, num_classes, recipe, seed, ctx,
                    lambda m: base.softmax(base.stack_contexts(
                        m, seed, min(probe_samples, num_samples(spec)),
                        ctx.probe_x)),
                    train_classifier)


def fit_single(build_fn, spec, x, targets, num_classes, recipe, seed, ctx,
               probe_fn, train_fn):
  """One stochastic model trained like any student (MC dropout, BBB, BE)."""
  model, = base.build_seeded(
      lambda: build_fn(spec, x.shape[1:], num_classes, seed, n_train=len(x)),
      seed, ctx.strategy)
  logger = base.probe_logger(ctx, probe_fn, 'model')
  train_fn(spec.archs[0], x, targets, num_classes, recipe, seed=seed,
           model=model, strategy=ctx.strategy, verbose=ctx.verbose,
           desc=f'train {spec}',
           backup_dir=os.path.join(ctx.scratch, 'backup'),
           callbacks=[logger] if logger else [])
  student = base.UQStudent(spec, [model], num_classes, seed, x.shape[1:])
  return student, (logger.records if logger else [])
