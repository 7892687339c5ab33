"""Round-based (active) stealing: `StealConfig(rounds=R, ...)`.

Per strategy: a random seed set (`label_queries`), then rounds of
`label_round` (the strategy picks with the student of the round before)
each followed by training the first `students` entry on every answer so
far and scoring it. Every step is a cached component run, so an interrupted
run resumes at the round it stopped in and a rerun pays nothing. Writes
`rounds.csv` / `rounds.json` (fidelity, accuracy, queries paid, and seconds
spent selecting, labeling and training per round) and `rounds.png`
(fidelity against queries paid, one line per strategy).
"""

from __future__ import annotations

import os
import time

from modelsteal.errors import ConfigError
from modelsteal.experiments.common import run_name
from modelsteal.experiments.recipes import recipe_tag
from modelsteal.experiments.stealing import StealConfig
from modelsteal.experiments.stealing import prepare
from modelsteal.experiments.stealing import train_student


def run(cfg: StealConfig):
  """Runs each strategy's rounds; returns (per-round DataFrame, out dir)."""
  import pandas as pd  # pylint: disable=g-import-not-at-top
  from modelsteal import evaluation  # pylint: disable=g-import-not-at-top
  from modelsteal.artifacts import Model  # pylint: disable=g-import-not-at-top
  from modelsteal.attacks import label_queries  # pylint: disable=g-import-not-at-top
  from modelsteal.attacks.active import label_round, round_sizes  # pylint: disable=g-import-not-at-top
  from modelsteal.attacks.strategies import NEEDS_UQ  # pylint: disable=g-import-not-at-top
  from modelsteal import uq  # pylint: disable=g-import-not-at-top

  started = time.time()
  p = prepare(cfg)
  if len(p.budgets) != 1:
    raise ConfigError('rounds', 'takes one budget (the total), not a sweep '
                      'of {budgets}.')
  budget = p.budgets[0]
  schedule = list(cfg.round_schedule)
  if schedule and budget < schedule[-1]:  # capped to a stand-in pool
    schedule = sorted({max(1, round(n * budget / schedule[-1]))
                       for n in schedule})
    print(f'[steal] notice: round_schedule scaled to {schedule} (the budget '
          f'was capped to {budget}).', flush=True)
  sizes = round_sizes(budget, cfg.rounds, cfg.seed_size, schedule)
  round_epochs = cfg.round_epochs
  arch = p.students[0]
  student_samples = (uq.UQ_METHODS[uq.parse_spec(arch).method].num_samples(
      uq.parse_spec(arch)) if uq.is_uq_spec(arch) else 1)
  strategies = cfg.strategies
  for s in strategies:
    if s in NEEDS_UQ and student_samples < 2:
      raise ConfigError('query_strategy', f'={s} needs a UQ student with '
                        'several members as the first {students} entry, e.g. '
                        f'ensemble:{arch} or mcdropout:{arch}; got {arch!r}.')
  rows = []
  for strategy in strategies:
    lab = label_queries.run(p.wd, splits=p.query_splits, victim=p.victim.ref,
                            output=cfg.output, budget=sizes[0],
                            strategy='random', seed=cfg.seed)
    p.steps.record(f'{strategy} round 0: seed set of {sizes[0]}', lab)
    labeled, timing = lab['labeled'], {'select_s': 0.0,
                                       'label_s': lab.duration_s}
    for r, size in enumerate(sizes):
      if r:
        res = label_round.run(
            p.wd, splits=p.query_splits, previous=labeled, student=model,
            victim=p.victim.ref, output=cfg.output, n=size - sizes[r - 1],
            strategy=strategy, seed=cfg.seed, round_index=r,
            candidates=cfg.round_candidates)
        p.steps.record(f'{strategy} round {r}: +{size - sizes[r - 1]} queries',
                       res)
        labeled = res['labeled']
        timing = {k: labeled.properties[k] for k in ('select_s', 'label_s')}
      last = r == len(sizes) - 1
      # only the last round's student is the stolen model, with a SavedModel
      student = train_student(p, cfg, labeled, arch, size,
                              epochs_scale=1.0 if last else round_epochs,
                              init=model if cfg.warm_start and r else None,
                              serving=last)
      model = Model.load(student.model_dir)
      rows.append({'strategy': strategy, 'round': r, 'queries': size,
                   'epochs': model.properties.get('recipe', {}).get('epochs'),
                   **student.row(), **timing})
  df = evaluation.results_frame(rows, [
      'strategy', 'round', 'queries', 'queries_paid', 'fidelity', 'accuracy',
      'fidelity_heldout', 'epochs', 'select_s', 'label_s', 'train_s'])
  name = run_name(
      [p.victim.name, cfg.output, cfg.query_data or 'same', f'b{budget}',
       f'r{cfg.rounds}' if not cfg.round_schedule else
       'r' + '_'.join(str(n) for n in sizes)] +
      ([f'e{round_epochs:g}'] if round_epochs != 1.0 else []) +
      ([recipe_tag(cfg.student_recipe)] if cfg.student_recipe else []) +
      (['warm'] if cfg.warm_start else []) +
      ([f'c{cfg.round_candidates}'] if cfg.round_candidates else []) +
      ['_'.join(strategies), f's{cfg.seed}'] +
      (['smoke'] if cfg.smoke else []))
  out_dir = os.path.join(p.wd, 'steal_rounds', name)
  csv_path, json_path = evaluation.save_results(df, out_dir, stem='rounds')
  p.steps.save(out_dir)
  show = df[['strategy', 'round', 'queries', 'queries_paid', 'fidelity',
             'accuracy', 'fidelity_heldout', 'epochs', 'select_s', 'label_s',
             'train_s']]
  print('\n' + evaluation.format_table(show))
  print('queries: answers the student learned from (the budget spent so far);'
        ' epochs: its training epochs; select_s / label_s / train_s: seconds '
        'choosing, labeling, training.')
  plot = evaluation.plot_rounds(
      df, os.path.join(out_dir, 'rounds.png'),
      title=f'round-based stealing of {p.victim.name} ({cfg.output} answers, '
      f'student {arch})')
  print(f'\nplot:     {plot}\nresults:  {csv_path}\n          {json_path}')
  print(f'total time {time.time() - started:.1f}s', flush=True)
  return pd.DataFrame(df), out_dir
