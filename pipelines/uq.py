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

Cost on the 2-core CPU, victim and answers cached: see BUILD_NOTES.md
(issue 8). `--smoke` runs in seconds (tiny data, and only the largest of
the budgets); an interrupted run resumes without retraining finished
members.

    --methods=ensemble,mcdropout          a subset, or full specs such as
    --methods=ensemble:mnist_cnn:members=3,mcdropout:mnist_cnn:samples=50
    --arch=lenet5                         base architecture (default: the victim's)
    --variants=none                       skip the diverse-on-purpose ensembles

It takes the victim, data and budget flags of `pipelines.steal`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time

from absl import app
from absl import flags

from pipelines import common
from pipelines import steal

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

VARIANTS = ('hetero', 'bootstrap')
# Members of a heterogeneous ensemble besides the base architecture.
_OTHER_ARCHS = ('lenet5', 'mnist_mlp', 'mnist_cnn')
_SMOKE_OPTIONS = {'ensemble': ':members=2', 'mcdropout': ':samples=3',
                  'swag': ':samples=2', 'batchensemble': ':members=2',
                  'bbb': ':samples=3'}


@dataclasses.dataclass(frozen=True)
class UQConfig:
  steal: steal.StealConfig
  methods: tuple[str, ...] = ('all',)
  arch: str | None = None
  variants: tuple[str, ...] = VARIANTS
  probe_every: int = 50


def student_specs(methods, variants, base: str, smoke: bool) -> list[str]:
  """The UQ student specs to train, validated (clear errors on bad input)."""
  from modelsteal import uq  # pylint: disable=g-import-not-at-top
  names = list(uq.UQ_METHODS) if list(methods) == ['all'] else list(methods)
  if not names:
    raise ValueError('--methods is empty; name at least one UQ method or all.')
  specs = []
  for m in names:
    if uq.is_uq_spec(m):
      specs.append(str(uq.parse_spec(m)))
      continue
    if m not in uq.UQ_METHODS:
      raise KeyError(f'unknown UQ method {m!r}; valid: all, '
                     f'{", ".join(sorted(uq.UQ_METHODS))}, or a spec '
                     'METHOD:ARCH[:key=value].')
    specs.append(f'{m}:{base}' + (_SMOKE_OPTIONS[m] if smoke else ''))
  variants = [v for v in variants if v != 'none']
  for v in variants:
    if v not in VARIANTS:
      raise KeyError(f'unknown variant {v!r}; valid: '
                     f'{", ".join(VARIANTS)}, none.')
  small = _SMOKE_OPTIONS['ensemble'] if smoke else ''
  if 'hetero' in variants:
    others = [a for a in _OTHER_ARCHS if a != base][:2]
    specs.append(f'ensemble:{"+".join([base] + others)}{small}')
  if 'bootstrap' in variants:
    specs.append(f'ensemble:{base}:bootstrap=1{small}')
  return [str(uq.parse_spec(s)) for s in dict.fromkeys(specs)]


def run(cfg: UQConfig):
  """Runs the study; returns (results DataFrame, output directory)."""
  import pandas as pd  # pylint: disable=g-import-not-at-top
  from modelsteal import evaluation  # pylint: disable=g-import-not-at-top
  from modelsteal import models  # pylint: disable=g-import-not-at-top
  from modelsteal.artifacts import Model  # pylint: disable=g-import-not-at-top
  from modelsteal.uq.components import evaluate_uq_model  # pylint: disable=g-import-not-at-top

  started = time.time()
  if cfg.arch is not None and cfg.arch not in models.ARCHITECTURES:
    raise KeyError(f'unknown base architecture {cfg.arch!r}; valid: '
                   f'{", ".join(sorted(models.ARCHITECTURES))}.')
  # Validate the specs before anything is trained.
  student_specs(cfg.methods, cfg.variants, cfg.arch or 'mnist_cnn',
                cfg.steal.smoke)
  p = steal.prepare(cfg.steal, name='uq')
  base = cfg.arch or (p.victim_arch if p.victim_arch in models.ARCHITECTURES
                      else p.students[0])
  specs = student_specs(cfg.methods, cfg.variants, base, cfg.steal.smoke)
  rows, traces = [], []
  # a smoke run checks the study's path once: the largest budget only
  budgets = p.budgets[-1:] if cfg.steal.smoke else p.budgets
  for b in budgets:
    labeled = steal.label(p, cfg.steal, b)
    for arch in [base] + specs:
      row = steal.train_student(p, cfg.steal, labeled, arch, b,
                                cfg.probe_every)
      model = Model.load(row.pop('model_dir'))
      ev = evaluate_uq_model.run(p.wd, splits=p.splits,
                                 query_splits=p.query_splits, model=model,
                                 victim=p.victim_ref)
      p.steps.record(f'evaluate members {arch} budget={b}', ev)
      row.update(ev['evaluation'].properties)
      row['method'] = model.properties.get('uq_method', 'plain')
      rows.append(row)
      trace_path = model.path('diversity.csv')
      if os.path.exists(trace_path):
        t = pd.read_csv(trace_path)
        t.insert(0, 'budget', b)
        traces.append(t)

  columns = ['method', 'arch', 'budget', 'queries_paid', 'fidelity',
             'accuracy', 'fidelity_heldout', 'member_fidelity_best',
             'member_fidelity_mean', 'member_accuracy_best',
             'member_accuracy_mean', 'ece', 'disagreement',
             'mutual_information', 'train_s']
  df = evaluation.results_frame(rows, columns)
  run_name = re.sub(r'[^A-Za-z0-9_.-]+', '_', '-'.join(
      [p.victim_name, cfg.steal.output, base,
       'b' + '_'.join(map(str, budgets)), f's{cfg.steal.seed}'] +
      (['smoke'] if cfg.steal.smoke else [])))
  out_dir = os.path.join(p.wd, 'uq', run_name)
  csv_path, json_path = evaluation.save_results(df, out_dir)
  p.steps.save(out_dir)
  show = df[columns[1:12]].copy()
  for c in columns[7:12]:
    show[c] = show[c].map(lambda v: f'{100 * v:.2f}%')
  show = show.rename(columns=lambda c: c.replace('member_', 'm_').replace(
      'fidelity', 'fid').replace('accuracy', 'acc').replace('arch', 'student'))
  print('\n' + evaluation.format_table(show))
  print('fid/acc: the combined prediction (mean of the samples); m_*_best '
        '/ m_*_mean: the best (picked on test) and the mean single member; '
        'fid_heldout: agreement on attacker data never queried; ece: '
        'calibration error vs true labels.')
  plots = []
  if traces:
    trace = pd.concat(traces, ignore_index=True)
    evaluation.save_results(trace, out_dir, stem='diversity')
    for b, g in trace.groupby('budget'):
      plots.append(evaluation.plot_diversity(
          g, os.path.join(out_dir, f'diversity_b{b}.png'),
          title=f'diversity of UQ students stealing {p.victim_name}, '
          f'{b} queries ({cfg.steal.output} answers)'))
  print(f'\nresults:  {csv_path}\n          {json_path}')
  for plot in plots:
    print(f'plot:     {plot}')
  print(f'total time {time.time() - started:.1f}s', flush=True)
  return df, out_dir


def config_from_flags() -> UQConfig:
  return UQConfig(steal=steal.config_from_flags(),
                  methods=tuple(_METHODS.value), arch=_ARCH.value,
                  variants=tuple(_VARIANTS.value),
                  probe_every=_PROBE_EVERY.value)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  common.run_main(lambda: run(config_from_flags()), 'uq')


if __name__ == '__main__':
  app.run(main)
