"""Round-based (active) stealing: one cached component per round.

Round 0 is `label_queries` with a random seed set. Round r >= 1 is
`label_round`: the strategy picks the next images of the pool with the
student trained on rounds 0..r-1, the oracle labels them (budget: exactly
this round's new queries; the answer cache means a rerun pays nothing), and
the output holds every answer so far. Each round is a component run, so an
interrupted run resumes at the round it stopped in. ActiveThief (Pal et al.,
AAAI 2020) and Knockoff Nets' adaptive mode (Orekondy et al., CVPR 2019)
are the references; strategies are in `modelsteal.attacks.strategies`.
"""

from __future__ import annotations

import os
import time

import numpy as np

from modelsteal.artifacts import Examples
from modelsteal.artifacts import Model
from modelsteal.component import InputArtifact
from modelsteal.component import OutputArtifact
from modelsteal.component import Parameter
from modelsteal.component import component
from modelsteal.errors import ConfigError


def round_sizes(budget: int, rounds: int, seed_size: int = 0,
                schedule=()) -> list[int]:
  """Cumulative queries after each round: a seed set, then equal steps, or
  the given `schedule` (checked: positive, increasing, ending at `budget`).

  >>> round_sizes(10000, 5)
  [2000, 4000, 6000, 8000, 10000]
  >>> round_sizes(1000, 4, seed_size=100)
  [100, 400, 700, 1000]
  >>> round_sizes(2000, 3, schedule=[500, 1000, 2000])
  [500, 1000, 2000]
  """
  if schedule:
    sizes = [int(s) for s in schedule]
    if sizes[0] < 1 or any(b <= a for a, b in zip(sizes, sizes[1:])):
      raise ConfigError('round_schedule', 'must be increasing positive '
                        f'cumulative query counts, got {sizes}.')
    if sizes[-1] != budget:
      raise ConfigError('round_schedule', f'ends at {sizes[-1]} but the '
                        f'budget is {budget}; its last entry is the budget '
                        '(leave {budgets} out).')
    return sizes
  if rounds < 1:
    raise ConfigError('rounds', f'must be at least 1, got {rounds}.')
  seed_size = seed_size or budget // rounds
  if not 1 <= seed_size <= budget:
    raise ConfigError('seed_size', f'must be in [1, budget={budget}], got '
                      f'{seed_size}.')
  if rounds == 1:
    return [budget]
  if budget - seed_size < rounds - 1:
    raise ConfigError('rounds', f'({rounds}) is too many: a budget of '
                      f'{budget} with a seed set of {seed_size} cannot fill '
                      f'{rounds - 1} more rounds; lower it.')
  steps = np.linspace(seed_size, budget, rounds).round().astype(int)
  return [int(s) for s in steps]


def load_student_view(model: Model):
  """The `Student` view (strategies) of a plain or UQ Model artifact."""
  from modelsteal.attacks.strategies import as_student  # pylint: disable=g-import-not-at-top
  if os.path.isdir(model.path('uq')):
    from modelsteal.uq import load_student  # pylint: disable=g-import-not-at-top
    return as_student(load_student(model.path('uq')))
  return as_student(model.load_keras())


@component(later=('candidates',))
def label_round(*, splits: InputArtifact[Examples],
                previous: InputArtifact[Examples],
                student: InputArtifact[Model],
                labeled: OutputArtifact[Examples],
                victim: Parameter[dict],
                output: Parameter[str] = 'label',
                n: Parameter[int] = 100,
                strategy: Parameter[str] = 'entropy',
                seed: Parameter[int] = 0,
                round_index: Parameter[int] = 1,
                batch_size: Parameter[int] = 256,
                candidates: Parameter[int] = 0):
  """Picks `n` new pool images with `strategy` and the current `student`,
  labels them through the oracle, and writes every answer so far.

  Writes split `train` (as `label_queries`: `x`, `y`, `answers`, `idx`),
  the previous rounds' rows first. `candidates` > 0: the strategy scores a
  random that many of the images not asked yet (0: all of them). Properties:
  cumulative `queries_asked`
  and `queries_paid`, this round's `select_s` and `label_s` (seconds).
  """
  from modelsteal.attacks.components import _answer_cache_dir  # pylint: disable=g-import-not-at-top
  from modelsteal.attacks.strategies import select_queries  # pylint: disable=g-import-not-at-top
  from modelsteal.oracle import make_oracle  # pylint: disable=g-import-not-at-top
  from modelsteal import progress  # pylint: disable=g-import-not-at-top
  prev = previous.load_split('train')
  pool = splits.load_split('pool')
  started = time.time()
  idx = select_queries(pool['x'], n, strategy, seed * 1000 + round_index,
                       student=load_student_view(student), chosen=prev['idx'],
                       candidates=candidates)
  select_s = time.time() - started
  started = time.time()
  oracle = make_oracle(victim, output=output, budget=n,
                       cache_dir=_answer_cache_dir(), seed=seed)
  x = pool['x'][idx]
  bar = progress.Progress(len(x), f'label round {round_index}', unit='query')
  answers = []
  for i in range(0, len(x), batch_size):
    answers.append(oracle.query(x[i:i + batch_size]))
    bar.update(len(answers[-1]))
  bar.close()
  answers = np.concatenate(answers)
  label_s = time.time() - started
  all_answers = np.concatenate([prev['answers'], answers])
  labeled.save_split('train', np.concatenate([prev['x'], x]),
                     all_answers.argmax(1), answers=all_answers,
                     idx=np.concatenate([prev['idx'], idx]))
  p = previous.properties
  labeled.properties.update({
      'num_classes': int(all_answers.shape[1]), 'output': output,
      'soft': bool(oracle.soft), 'budget': int(len(all_answers)),
      'queries_asked': int(p.get('queries_asked', 0)) + int(oracle.asked),
      'queries_paid': int(p.get('queries_paid', 0)) + int(oracle.paid),
      'shape': list(x.shape[1:]), 'strategy': strategy,
      'round': round_index, 'select_s': round(select_s, 3),
      'label_s': round(label_s, 3)})
