"""Query strategies: which pool images the attacker sends.

A strategy is `fn(pool_x, n, rng) -> indices (n,)` into the pool. `random`
takes a prefix of one seeded permutation, so the query sets of a budget sweep
are nested and a larger budget re-asks nothing (the answer cache serves the
prefix). Active strategies (uncertainty, k-center) slot in here with the same
signature plus the current student.
"""

from __future__ import annotations

import numpy as np


def random_strategy(pool_x: np.ndarray, n: int,
                    rng: np.random.Generator) -> np.ndarray:
  return rng.permutation(len(pool_x))[:n]


QUERY_STRATEGIES = {
    'random': random_strategy,
}


def select_queries(pool_x: np.ndarray, budget: int, strategy: str = 'random',
                   seed: int = 0) -> np.ndarray:
  """Indices of the `budget` pool images to query.

  Raises:
    KeyError: unknown strategy (lists the valid ones).
    ValueError: budget not in [1, pool size].
  """
  if strategy not in QUERY_STRATEGIES:
    raise KeyError(f'unknown query strategy {strategy!r}; valid: '
                   f'{", ".join(sorted(QUERY_STRATEGIES))}.')
  if budget < 1:
    raise ValueError(f'the query budget must be at least 1, got {budget}.')
  if budget > len(pool_x):
    raise ValueError(f'the query budget ({budget}) is larger than the '
                     f'attacker\'s query pool ({len(pool_x)} images); lower '
                     '--budget or use a larger --query_data.')
  return QUERY_STRATEGIES[strategy](pool_x, budget, np.random.default_rng(seed))
