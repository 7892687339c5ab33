"""BatchEnsemble (Wen, Tran & Ba, ICLR 2020, arXiv 2002.06715).

Every `Dense` and `Conv2D` of the base architecture becomes a BatchEnsemble
layer: one shared slow weight W and, per member i, rank-1 fast weights with
W_i = W * (r_i s_i^T) (random-sign initialised). The model tiles each batch
M times, one copy per member, and returns logits (N, M, K); its loss is the
members' mean cross-entropy on the tiled targets. Cost: M forward passes,
one set of full weights plus M (d_in + d_out) per layer.
"""

from __future__ import annotations

import numpy as np

from modelsteal.uq import base
from modelsteal.uq import mcdropout

OPTIONS = {'members': 4}


def check(opts: dict, text: str) -> None:
  base.check_count(opts, 'members', text, 1, 32)


def num_samples(spec) -> int:
  return int(spec.opts['members'])


def _model_class():
  import keras  # pylint: disable=g-import-not-at-top
  from keras import ops  # pylint: disable=g-import-not-at-top

  class BatchEnsembleModel(keras.Model):
    """images (N, ...) -> logits (N, M, K) of the M members."""

    def __init__(self, body, members, **kwargs):
      super().__init__(**kwargs)
      self.body = body
      self.members = members

    def call(self, x, training=False):
      tiled = ops.tile(x, [self.members] + [1] * (len(x.shape) - 1))
      y = self.body(tiled, training=training)
      y = ops.reshape(y, (self.members, -1, y.shape[-1]))
      return ops.transpose(y, (1, 0, 2))

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None,
                     training=True):
      y_pred = ops.reshape(ops.transpose(y_pred, (1, 0, 2)),
                           (-1, y_pred.shape[-1]))
      y = ops.tile(y, [self.members] + [1] * (len(y.shape) - 1))
      if sample_weight is not None:
        sample_weight = ops.tile(sample_weight, [self.members])
      return super().compute_loss(x, y, y_pred, sample_weight, training)

  return BatchEnsembleModel


def build(spec, input_shape, num_classes, seed, n_train=1):
  import keras  # pylint: disable=g-import-not-at-top
  from modelsteal import models  # pylint: disable=g-import-not-at-top
  from modelsteal.uq.layers import BEConv2D, BEDense  # pylint: disable=g-import-not-at-top
  del n_train
  m = num_samples(spec)

  def replace(layer, i):
    if type(layer) is keras.layers.Dense:  # pylint: disable=unidiomatic-typecheck
      return BEDense(ensemble_size=m, salt=seed * 100 + i, **layer.get_config())
    if type(layer) is keras.layers.Conv2D:  # pylint: disable=unidiomatic-typecheck
      return BEConv2D(ensemble_size=m, salt=seed * 100 + i,
                      **layer.get_config())
    return None

  body = base.clone_replacing(
      models.build(spec.archs[0], input_shape, num_classes), replace)
  model = _model_class()(body, m, name=f'{body.name}_batchensemble')
  model(np.zeros((1, *input_shape), np.float32))  # build the weights
  return [model]


def sample_logits(student, x):
  from keras import ops  # pylint: disable=g-import-not-at-top
  return ops.transpose(student.models[0](x, training=False), (1, 0, 2))


def fit(spec, x, targets, num_classes, recipe, seed, ctx):
  from modelsteal.training import train_classifier  # pylint: disable=g-import-not-at-top
  return mcdropout.fit_single(
      build, spec, x, targets, num_classes, recipe, seed, ctx,
      lambda m: base.softmax(
          np.transpose(m(ctx.probe_x, training=False), (1, 0, 2))),
      train_classifier)

