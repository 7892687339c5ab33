r"""Stealing with uncertainty-quantification students (Pape et al., ESANN 2023).

    python -m pipelines.uq --victim=mnist_cnn --methods=all --budgets=1000,10000

For each budget: labels the queries once (the same cached `label_queries`
answers as `pipelines.steal`), trains a plain student and the five UQ
students of `modelsteal.uq` on them (deep ensemble, MC dropout, SWAG,
BatchEnsemble, Bayes by backprop) plus two ensembles made diverse on purpose
(`--variants`: members of different architectures; bootstrap resamples),
and reports per student the combined prediction's fidelity and accuracy,
the best and the mean single member, expected calibration error, and
fidelity on the attacker's held-out split: `<workdir>/uq/<run>/results.{csv,
json}` and the terminal. Diversity (prediction variance, pairwise
disagreement, mutual information) on fixed probe test images is logged
every `--probe_every` training steps: `diversity.csv` and one
`diversity_b<budget>.png` per budget. Every student is a servable
SavedModel (probabilities, label, entropy, mutual_information).

Cost on the 2-core CPU, victim and answers cached: BUILD_NOTES.md, "UQ
students". `--smoke` runs in seconds (tiny data, and only the largest of
the budgets); an interrupted run resumes without retraining finished
members.

    --methods=ensemble,mcdropout          a subset, or full specs such as
    --methods=ensemble:mnist_cnn:members=3,mcdropout:mnist_cnn:samples=50
    --arch=lenet5                         base architecture (default: the victim's)
    --variants=none                       skip the diverse-on-purpose ensembles

It takes the victim, data and budget flags of `pipelines.steal`.
"""

from __future__ import annotations

from absl import app
from absl import flags

from pipelines import _steal_flags
from pipelines import common

_METHODS = flags.DEFINE_list(
    'methods', ['all'], 'UQ methods (ensemble, mcdropout, swag, '
    'batchensemble, bbb), all, or full UQ student specs METHOD:ARCH[:k=v].')
_ARCH = flags.DEFINE_string('arch', None, "Base architecture of the UQ "
                            "students; default: the victim's.")
_VARIANTS = flags.DEFINE_list(
    'variants', ['hetero', 'bootstrap'], 'Ensembles made diverse on purpose: '
    'hetero (members of different architectures), bootstrap (a bootstrap '
    'resample of the answers per member), or none.')
_PROBE_EVERY = flags.DEFINE_integer(
    'probe_every', 50, 'Log diversity every this many training steps.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')

  def body():
    from modelsteal.experiments import uq  # pylint: disable=g-import-not-at-top
    uq.run(uq.UQConfig(steal=_steal_flags.steal_config(),
                       methods=tuple(_METHODS.value), arch=_ARCH.value,
                       variants=tuple(_VARIANTS.value),
                       probe_every=_PROBE_EVERY.value))

  common.run_main(body, 'uq', _steal_flags.flag_names())


if __name__ == '__main__':
  app.run(main)
