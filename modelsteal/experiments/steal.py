"""The stealing experiment: a victim labels the attacker's queries, students
learn from the answers, each is scored for accuracy and fidelity.

    from modelsteal.experiments import steal
    df, out_dir = steal.run(steal.StealConfig(victim='mnist_cnn',
                                              budgets=(1000,)))

`run` is the whole experiment, round-based when `rounds > 1`
(`modelsteal.experiments.rounds`); its steps are in
`modelsteal.experiments.stealing`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

from modelsteal.experiments.common import run_name
from modelsteal.experiments.recipes import parse_recipe_overrides
from modelsteal.experiments.recipes import recipe_tag
from modelsteal.experiments.recipes import student_recipe
from modelsteal.experiments.stealing import StealConfig
from modelsteal.experiments.stealing import StudentResult
from modelsteal.experiments.stealing import label
from modelsteal.experiments.stealing import prepare
from modelsteal.experiments.stealing import train_student
from modelsteal.experiments.stealing import victim_path_name

__all__ = ['StealConfig', 'StealResult', 'StudentResult', 'run', 'run_result',
           'report', 'prepare', 'label', 'train_student',
           'parse_recipe_overrides', 'student_recipe', 'recipe_tag',
           'victim_path_name']


@dataclasses.dataclass
class StealResult:
  """What `run` returns: the results table and where everything went."""
  table: Any  # pandas DataFrame, one row per model
  out_dir: str
  students: list[StudentResult]
  victim_name: str
  output: str
  budgets: list[int]
  seconds: float
  plot: str | None = None


def run(cfg: StealConfig):
  """Runs the experiment; returns (results DataFrame, output directory).

  Round-based (`rounds > 1`) runs go to `modelsteal.experiments.rounds`.
  `report(result)` prints what `python -m pipelines.steal` prints; the
  result is `run_result(cfg)`.
  """
  if cfg.query_data == 'datafree':
    from modelsteal.experiments import datafree  # pylint: disable=g-import-not-at-top
    return datafree.run(cfg)
  if cfg.rounds > 1:
    from modelsteal.experiments import rounds  # pylint: disable=g-import-not-at-top
    return rounds.run(cfg)
  res = run_result(cfg)
  report(res)
  return res.table, res.out_dir


def run_result(cfg: StealConfig) -> StealResult:
  """The single-round experiment, without the final printout."""
  from modelsteal import evaluation  # pylint: disable=g-import-not-at-top
  started = time.time()
  p = prepare(cfg)
  students = []
  for b in p.budgets:
    labeled = label(p, cfg, b)
    for arch in p.students:
      students.append(train_student(p, cfg, labeled, arch, b))
  df = evaluation.results_frame([p.victim_row] + [s.row() for s in students],
                                evaluation.STEAL_COLUMNS)
  name = run_name(
      [p.victim.name, cfg.output, (cfg.query_data or 'same'),
       'b' + '_'.join(map(str, p.budgets))] +
      ([recipe_tag(cfg.student_recipe)] if cfg.student_recipe else []) +
      (['smoke'] if cfg.smoke else []))
  out_dir = os.path.join(p.wd, 'steal', name)
  evaluation.save_results(df, out_dir)
  p.steps.save(out_dir)
  plot = None
  if len(p.budgets) > 1:
    plot = evaluation.plot_budget_sweep(
        df, os.path.join(out_dir, 'budget_sweep.png'),
        title=f'stealing {p.victim.name} ({cfg.output} answers)')
  return StealResult(df, out_dir, students, p.victim.name, cfg.output,
                     p.budgets, time.time() - started, plot)


def report(res: StealResult) -> None:
  """Prints the results table, the plot and every student's files."""
  from modelsteal import evaluation  # pylint: disable=g-import-not-at-top
  print('\n' + evaluation.format_table(res.table.drop(columns=['saved_model'])))
  print(evaluation.STEAL_LEGEND)
  if res.plot:
    print(f'\nplot:     {res.plot}')
  print(f'results:  {os.path.join(res.out_dir, "results.csv")}\n'
        f'          {os.path.join(res.out_dir, "results.json")}')
  for s in res.students:
    print(f'student {s.arch + "@" + str(s.budget):<18} SavedModel: '
          f'{s.saved_model}')
    keras_file = os.path.join(os.path.dirname(os.path.dirname(
        s.saved_model)), 'model.keras')
    if os.path.exists(keras_file):
      print(' ' * 27 + f'Keras file: {keras_file}')
  print(f'total time {res.seconds:.1f}s', flush=True)
