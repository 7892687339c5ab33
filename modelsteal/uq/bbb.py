"""Bayes by backprop (Blundell et al., ICML 2015, arXiv 1505.05424).

Every `Dense` and `Conv2D` of the base architecture becomes a mean-field
Gaussian layer (`BayesDense`, `BayesConv2D`) trained with the
reparameterisation trick; the KL term to the prior N(0, prior^2) is scaled by
1 / (training-set size) so the loss is the per-example negative ELBO
(`:kl=W` multiplies it). Prediction averages `samples` weight draws.
"""

from __future__ import annotations

from modelsteal.uq import base
from modelsteal.uq import mcdropout

OPTIONS = {'samples': 20, 'prior': 1.0, 'init_std': 1e-3, 'kl': 1.0}


def check(opts: dict, text: str) -> None:
  base.check_count(opts, 'samples', text, 1, 1000)
  for k in ('prior', 'init_std'):
    if not opts[k] > 0:
      raise base.UQSpecError(f'{text!r}: {k} must be positive.')
  if opts['kl'] < 0:
    raise base.UQSpecError(f'{text!r}: kl must be >= 0.')


def num_samples(spec) -> int:
  return int(spec.opts['samples'])


def build(spec, input_shape, num_classes, seed, n_train=1):
  import keras  # pylint: disable=g-import-not-at-top
  from modelsteal import models  # pylint: disable=g-import-not-at-top
  from modelsteal.uq.layers import BayesConv2D, BayesDense  # pylint: disable=g-import-not-at-top
  del seed
  o = spec.opts
  extra = {'prior_std': o['prior'], 'init_std': o['init_std'],
           'kl_scale': o['kl'] / max(1, n_train)}

  def replace(layer, i):
    if type(layer) is keras.layers.Dense:  # pylint: disable=unidiomatic-typecheck
      return BayesDense(salt=i, **layer.get_config(), **extra)
    if type(layer) is keras.layers.Conv2D:  # pylint: disable=unidiomatic-typecheck
      return BayesConv2D(salt=i, **layer.get_config(), **extra)
    return None

  return [base.clone_replacing(
      models.build(spec.archs[0], input_shape, num_classes), replace)]


def sample_logits(student, x):
  return base.stack_contexts(student.models[0], student.seed,
                             student.num_samples, x)


def fit(spec, x, targets, num_classes, recipe, seed, ctx, probe_samples=10):
  from modelsteal.training import train_classifier  # pylint: disable=g-import-not-at-top
  return mcdropout.fit_single(
      build, spec, x, targets, num_classes, recipe, seed, ctx,
      lambda m: base.softmax(base.stack_contexts(
          m, seed, min(probe_samples, num_samples(spec)), ctx.probe_x)),
      train_classifier)
