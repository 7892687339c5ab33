"""Deep ensemble (Lakshminarayanan et al., NeurIPS 2017, arXiv 1612.01474).

M independently initialised members trained one after another on the same
answers. Beyond the paper (to test Pape et al.'s low-diversity explanation):
several architectures cycled over the members (`ensemble:mnist_cnn+lenet5+
mnist_mlp`), and a bootstrap resample of the answered queries per member
(`:bootstrap=1`). Finished members are kept in the scratch directory, so an
interrupted run resumes without retraining them.
"""

from __future__ import annotations

import os

import numpy as np

from modelsteal.uq import base

OPTIONS = {'members': 5, 'bootstrap': 0}


def check(opts: dict, text: str) -> None:
  base.check_count(opts, 'members', text, 1, 50)
  base.check_count(opts, 'bootstrap', text, 0, 1)


def num_samples(spec) -> int:
  return int(spec.opts['members'])


def member_arch(spec, i: int) -> str:
  return spec.archs[i % len(spec.archs)]


def build(spec, input_shape, num_classes, seed, n_train=1):
  from modelsteal import models  # pylint: disable=g-import-not-at-top
  del seed, n_train
  return [models.build(member_arch(spec, i), input_shape, num_classes)
          for i in range(num_samples(spec))]


sample_logits = base.stack_members


def fit(spec, x, targets, num_classes, recipe, seed, ctx):
  from modelsteal import models  # pylint: disable=g-import-not-at-top
  from modelsteal.training import train_classifier  # pylint: disable=g-import-not-at-top
  members, traces = [], []
  for i in range(num_samples(spec)):
    arch, mseed = member_arch(spec, i), seed * 1000 + i
    weights = os.path.join(ctx.scratch, f'member_{i}.weights.h5')
    logger = base.probe_logger(
        ctx, lambda m: base.softmax(m(ctx.probe_x, training=False))[None],
        f'member_{i}')
    if os.path.exists(weights):  # finished before an interruption
      m = models.build(arch, x.shape[1:], num_classes)
      m.load_weights(weights)
      if logger is not None:
        logger.restore()
    else:
      idx = (np.random.default_rng(mseed).integers(0, len(x), len(x))
             if spec.opts['bootstrap'] else np.arange(len(x)))
      m = train_classifier(
          arch, x[idx], targets[idx], num_classes, recipe, seed=mseed,
          strategy=ctx.strategy, verbose=ctx.verbose,
          desc=f'train {spec} member {i + 1}/{num_samples(spec)}',
          backup_dir=os.path.join(ctx.scratch, f'backup_{i}'),
          callbacks=[logger] if logger else [])
      if logger is not None:
        logger.save()
      m.save_weights(weights + '.tmp.weights.h5')
      os.replace(weights + '.tmp.weights.h5', weights)
    members.append(m)
    if logger is not None:
      traces.append(logger.records)
  student = base.UQStudent(spec, members, num_classes, seed, x.shape[1:])
  return student, (base.merge_member_traces(traces) if traces else [])
