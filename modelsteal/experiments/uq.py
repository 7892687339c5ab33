"""Stealing with uncertainty-quantification students (Pape et al., ESANN
2023): per budget, a plain student and the UQ students of `modelsteal.uq`
(plus ensembles made diverse on purpose) on the same cached answers, with
combined and per-member fidelity, calibration and diversity.

    from modelsteal.experiments import steal, uq
    uq.run(uq.UQConfig(steal=steal.StealConfig(budgets=(1000,)),
                       methods=('ensemble',)))
"""

from __future__ import annotations

import dataclasses
import os
import time

from modelsteal.errors import ConfigError
from modelsteal.errors import UnknownNameError
from modelsteal.experiments import stealing as steal
from modelsteal.experiments.common import run_name

VARIANTS = ('hetero', 'bootstrap')
# Members of a heterogeneous ensemble besides the base architecture.
_OTHER_ARCHS = ('lenet5', 'mnist_mlp', 'mnist_cnn')
_SMOKE_OPTIONS = {'ensemble': ':members=2', 'mcdropout': ':samples=3',
                  'swag': ':samples=2', 'batchensemble': ':members=2',
                  'bbb': ':samples=3'}


@dataclasses.dataclass(frozen=True)
class UQConfig:
  """The UQ study over one stealing setup; validated at construction."""
  steal: steal.StealConfig
  methods: tuple[str, ...] = ('all',)
  arch: str | None = None
  variants: tuple[str, ...] = VARIANTS
  probe_every: int = 50

  def __post_init__(self):
    from modelsteal import models  # pylint: disable=g-import-not-at-top
    if self.arch is not None and self.arch not in models.ARCHITECTURES:
      raise UnknownNameError(
          'arch', f': unknown base architecture {self.arch!r}; valid: '
          f'{", ".join(sorted(models.ARCHITECTURES))}.')
    if self.probe_every < 1:
      raise ConfigError('probe_every', f'must be at least 1, got '
                        f'{self.probe_every}.')
    # the specs, before anything is trained
    student_specs(self.methods, self.variants, self.arch or 'mnist_cnn',
                  self.steal.smoke)


def student_specs(methods, variants, base: str, smoke: bool) -> list[str]:
  """The UQ student specs to train, validated (clear errors on bad input)."""
  from modelsteal import uq  # pylint: disable=g-import-not-at-top
  names = list(uq.UQ_METHODS) if list(methods) == ['all'] else list(methods)
  if not names:
    raise ConfigError('methods', 'is empty; name at least one UQ method or '
                      'all.')
  specs = []
  for m in names:
    if uq.is_uq_spec(m):
      specs.append(str(uq.parse_spec(m)))
      continue
    if m not in uq.UQ_METHODS:
      raise UnknownNameError(
          'methods', f': unknown UQ method {m!r}; valid: all, '
          f'{", ".join(sorted(uq.UQ_METHODS))}, or a spec '
          'METHOD:ARCH[:key=value].')
    specs.append(f'{m}:{base}' + (_SMOKE_OPTIONS[m] if smoke else ''))
  variants = [v for v in variants if v != 'none']
  for v in variants:
    if v not in VARIANTS:
      raise UnknownNameError('variants', f': unknown variant {v!r}; valid: '
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
  p = steal.prepare(cfg.steal, name='uq')
  base = cfg.arch or (p.victim.arch if p.victim.arch in models.ARCHITECTURES
                      else p.students[0])
  specs = student_specs(cfg.methods, cfg.variants, base, cfg.steal.smoke)
  rows, traces = [], []
  # a smoke run checks the study's path once: the largest budget only
  budgets = p.budgets[-1:] if cfg.steal.smoke else p.budgets
  for b in budgets:
    labeled = steal.label(p, cfg.steal, b)
    for arch in [base] + specs:
      student = steal.train_student(p, cfg.steal, labeled, arch, b,
                                    cfg.probe_every)
      row = student.row()
      model = Model.load(student.model_dir)
      ev = evaluate_uq_model.run(p.wd, splits=p.splits,
                                 query_splits=p.query_splits, model=model,
                                 victim=p.victim.ref)
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
  name = run_name(
      [p.victim.name, cfg.steal.output, base,
       'b' + '_'.join(map(str, budgets)), f's{cfg.steal.seed}'] +
      (['smoke'] if cfg.steal.smoke else []))
  out_dir = os.path.join(p.wd, 'uq', name)
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
          title=f'diversity of UQ students stealing {p.victim.name}, '
          f'{b} queries ({cfg.steal.output} answers)'))
  print(f'\nresults:  {csv_path}\n          {json_path}')
  for plot in plots:
    print(f'plot:     {plot}')
  print(f'total time {time.time() - started:.1f}s', flush=True)
  return df, out_dir


