"""Issue 9's table over seeds, from the rounds.csv files of round-based runs.

    python benchmarks/active_table.py bench_runs/active_mnist \
        [--match=r500_1000_2000_5000_10000] [--thresholds=0.95,0.98,0.99]

Reads every `<workdir>/steal_rounds/<run>/rounds.csv` whose run name
contains `--match` (the run name holds victim, answers, query pool,
schedule and seed: `...-s<seed>`), and prints, per strategy:

* fidelity at each query count: mean over seeds and [min, max];
* the queries each seed needed to reach each threshold (the first round at
  or above it; '>B' when no round did), as `seed0/seed1/...`.

A seed that ran one strategy twice (two run names) counts once: the newest
file wins. Writes the table as markdown beside nothing; copy it into
BUILD_NOTES.md with the command that made the runs.
"""

from __future__ import annotations

import argparse
import glob
import os
import re

import pandas as pd


def load(workdir: str, match: str) -> pd.DataFrame:
  frames = []
  for path in sorted(glob.glob(os.path.join(workdir, 'steal_rounds', '*',
                                            'rounds.csv')),
                     key=os.path.getmtime):
    run = os.path.basename(os.path.dirname(path))
    if match not in run or run.endswith('-smoke'):
      continue
    m = re.search(r'-s(\d+)$', run)
    if not m:
      continue
    df = pd.read_csv(path)
    df['seed'] = int(m.group(1))
    df['run'] = run
    frames.append(df)
  if not frames:
    raise SystemExit(f'no rounds.csv under {workdir}/steal_rounds matches '
                     f'{match!r}.')
  df = pd.concat(frames, ignore_index=True)
  # newest run per (strategy, seed, queries) wins
  return df.drop_duplicates(['strategy', 'seed', 'queries'], keep='last')


def table(df: pd.DataFrame, thresholds) -> str:
  queries = sorted(df['queries'].unique())
  lines = ['| strategy | seeds | ' + ' | '.join(f'{q:,}' for q in queries) +
           ' | ' + ' | '.join(f'to {100 * t:g}%' for t in thresholds) + ' |',
           '|---' * (2 + len(queries) + len(thresholds)) + '|']
  for strategy, g in df.groupby('strategy', sort=False):
    seeds = sorted(g['seed'].unique())
    cells = []
    for q in queries:
      f = g[g['queries'] == q]['fidelity'] * 100
      if f.empty:
        cells.append('')
      elif len(f) == 1:
        cells.append(f'{f.iloc[0]:.2f}')
      else:
        cells.append(f'{f.mean():.2f} [{f.min():.2f}, {f.max():.2f}]')
    reach = []
    for t in thresholds:
      per_seed = []
      for s in seeds:
        gs = g[g['seed'] == s].sort_values('queries')
        hit = gs[gs['fidelity'] >= t]
        per_seed.append(f'{hit["queries"].iloc[0]:,}' if len(hit) else
                        f'>{gs["queries"].max():,}')
      reach.append('/'.join(per_seed))
    lines.append(f'| {strategy} | {",".join(map(str, seeds))} | ' +
                 ' | '.join(cells) + ' | ' + ' | '.join(reach) + ' |')
  return '\n'.join(lines)


def main():
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('workdir')
  ap.add_argument('--match', default='r500_1000_2000_5000_10000')
  ap.add_argument('--thresholds', default='0.95,0.98,0.99')
  a = ap.parse_args()
  df = load(a.workdir, a.match)
  print(table(df, [float(t) for t in a.thresholds.split(',')]))
  print(f'\n{df["run"].nunique()} runs; fidelity in %, mean [min, max] over '
        'seeds; "to X%": queries each seed needed (seed order as listed).')


if __name__ == '__main__':
  main()
