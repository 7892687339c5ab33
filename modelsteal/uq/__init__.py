"""Uncertainty-quantification students: several possible students, combined.

Pape et al., "On the Limitations of Model Stealing with Uncertainty
Quantification Models" (ESANN 2023, arXiv 2305.05293) combined the
predictions of five UQ models to steal a black box, found marginal fidelity
gains, and traced them to members whose predictions converge in training.
This package holds those five methods behind one registry, Keras 3 only:

    ensemble       deep ensemble, M members (also heterogeneous, bootstrap)
    mcdropout      MC dropout, T passes with dropout on, BatchNorm frozen
    swag           SWAG weight samples, BatchNorm re-estimated per sample
    batchensemble  BatchEnsemble, rank-1 fast weights on a shared weight
    bbb            Bayes by backprop, mean-field Gaussian weights

A student is named by a spec `METHOD:ARCH[+ARCH...][:key=value...]`
(`parse_spec`), trained from the oracle's answers like any student (`fit`,
or the cached component `train_uq_model`), answers `sample_logits(x) ->
(S, N, K)`, and is exported as a SavedModel whose `serving_default` returns
the combined `probabilities` and `label` plus `entropy` and
`mutual_information` (`export_uq_saved_model`). Each method is one module
with `OPTIONS`, `check`, `num_samples`, `build`, `sample_logits` and `fit`;
a new method is one module and one line in `UQ_METHODS`.
"""

from modelsteal.uq import batchensemble
from modelsteal.uq import bbb
from modelsteal.uq import ensemble
from modelsteal.uq import mcdropout
from modelsteal.uq import swag
from modelsteal.uq.base import FitContext
from modelsteal.uq.base import UQSpec
from modelsteal.uq.base import UQSpecError
from modelsteal.uq.base import UQStudent
from modelsteal.uq.base import is_uq_spec
from modelsteal.uq.base import load_student
from modelsteal.uq.base import parse_spec
from modelsteal.uq.base import trace_frame

UQ_METHODS = {
    'ensemble': ensemble,
    'mcdropout': mcdropout,
    'swag': swag,
    'batchensemble': batchensemble,
    'bbb': bbb,
}


def fit(spec: UQSpec, x, targets, num_classes: int, recipe, seed: int,
        ctx: FitContext):
  """Trains a UQ student; returns (UQStudent, diversity trace records)."""
  return UQ_METHODS[spec.method].fit(spec, x, targets, num_classes, recipe,
                                     seed, ctx)


def export_uq_saved_model(student: UQStudent, base_dir: str,
                          version: int | None = None) -> str:
  """Exports a UQ student for serving (TF Serving layout, like plain ones).

  `serving_default`: images float32 (N, H, W, C) ->
    probabilities (N, K): the mean of the S samples' softmaxes;
    label int64 (N,); entropy (N,): predictive entropy (nats) of the mean;
    mutual_information (N,): entropy of the mean minus mean entropy.
  Stochastic methods trace their S samples with the student's seed into
  the graph, so the served model answers exactly what the Keras one does.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from modelsteal.export import write_serving_archive  # pylint: disable=g-import-not-at-top

  @tf.function(input_signature=[tf.TensorSpec(
      [None, *student.input_shape], tf.float32, name='images')])
  def serve(images):
    p = tf.nn.softmax(student.sample_logits(images), axis=-1)  # (S, N, K)
    mean = tf.reduce_mean(p, axis=0)
    ent = lambda q: -tf.reduce_sum(q * tf.math.log(tf.maximum(q, 1e-12)), -1)
    h = ent(mean)
    return {'probabilities': mean,
            'label': tf.argmax(mean, axis=-1, output_type=tf.int64),
            'entropy': h,
            'mutual_information': h - tf.reduce_mean(ent(p), axis=0)}

  return write_serving_archive(base_dir, serve, student.models, version)


__all__ = ['FitContext', 'UQ_METHODS', 'UQSpec', 'UQSpecError', 'UQStudent',
           'export_uq_saved_model', 'fit', 'is_uq_spec', 'load_student',
           'parse_spec', 'trace_frame']
