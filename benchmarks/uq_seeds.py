"""Issue 8's seed spread: one table over several `pipelines.uq` runs.

    python benchmarks/uq_seeds.py bench_runs/uq_mnist/uq/<run-s0> <run-s1> ...

Each argument is a `pipelines.uq` output directory (results.csv,
steps.csv). Prints, per method and budget, the mean and the spread (min to
max) over the runs of fidelity, accuracy, held-out fidelity, ECE and
disagreement, and the paired gain over the plain student of the same seed;
then, per run, the seconds spent on each budget (from steps.csv). Writes
`uq_seeds.csv` beside the first run.
"""

from __future__ import annotations

import os
import re
import sys

import pandas as pd


def budget_seconds(run_dir: str) -> dict[int, float]:
  """Seconds of the steps of each budget (training, evaluation, labeling)."""
  steps = pd.read_csv(os.path.join(run_dir, 'steps.csv'))
  out = {}
  for _, s in steps.iterrows():
    m = re.search(r'budget=(\d+)', str(s['step']))
    if m and not bool(s['reused']):
      b = int(m.group(1))
      out[b] = out.get(b, 0.0) + float(s['seconds'])
  return out


def diversity_summary(runs: list[str]) -> pd.DataFrame:
  """Pairwise disagreement on the probe at the first logged step after
  initialisation, mid-training and the end, mean over the runs."""
  rows = []
  for r in runs:
    path = os.path.join(r, 'diversity.csv')
    if not os.path.exists(path):
      continue
    d = pd.read_csv(path)
    for (budget, spec), g in d.groupby(['budget', 'spec'], sort=False):
      g = g[g['step'] > 0].sort_values('step')
      if g.empty:
        continue
      mid = g.iloc[(g['step'] - g['step'].max() / 2).abs().argmin()]
      rows.append({'budget': budget, 'student': spec,
                   'first': g['disagreement'].iloc[0],
                   'mid': mid['disagreement'],
                   'end': g['disagreement'].iloc[-1]})
  if not rows:
    return pd.DataFrame()
  df = pd.DataFrame(rows)
  out = df.groupby(['budget', 'student'], sort=False).agg(
      seeds=('end', 'size'), first=('first', 'mean'), mid=('mid', 'mean'),
      end=('end', 'mean')).reset_index()
  out['collapse'] = out['first'] / out['end'].where(out['end'] > 0)
  return out.round(4)


def main(runs: list[str]) -> pd.DataFrame:
  frames = []
  for r in runs:
    df = pd.read_csv(os.path.join(r, 'results.csv'))
    df = df[df['role'] == 'student'].copy()
    seed = re.search(r'-s(\d+)', os.path.basename(r.rstrip('/')))
    df['seed'] = int(seed.group(1)) if seed else len(frames)
    plain = df[df['method'] == 'plain'].set_index('budget')['fidelity']
    df['gain'] = df['fidelity'] - df['budget'].map(plain)
    frames.append(df)
  df = pd.concat(frames)
  df['student'] = df['arch'].where(df['method'] != 'plain', 'plain ' +
                                   df['arch'])
  cols = ['fidelity', 'gain', 'accuracy', 'fidelity_heldout', 'ece',
          'disagreement']
  g = df.groupby(['budget', 'student'], sort=False)
  rows = []
  for (budget, student), d in g:
    row = {'budget': budget, 'student': student, 'seeds': len(d)}
    for c in cols:
      v = 100 * d[c]
      row[c] = (f'{v.mean():.2f} [{v.min():.2f}, {v.max():.2f}]'
                if len(d) > 1 else f'{v.mean():.2f}')
    rows.append(row)
  table = pd.DataFrame(rows)
  print('mean [min, max] over seeds, in % (gain: fidelity minus the plain '
        "student's of the same seed, in points)")
  print(table.to_string(index=False))
  out = os.path.join(runs[0], 'uq_seeds.csv')
  df.to_csv(out, index=False)
  div = diversity_summary(runs)
  if not div.empty:
    print('\npairwise disagreement on the probe (mean over seeds): first '
          'logged step, mid-training, end; collapse = first / end')
    print(div.to_string(index=False))
  print('\nseconds per budget (steps not reused):')
  for r in runs:
    print(f'  {os.path.basename(r.rstrip("/"))}: ' + ', '.join(
        f'{b}: {s:.0f}s' for b, s in sorted(budget_seconds(r).items())))
  print(f'\nper-seed rows: {out}')
  return table


if __name__ == '__main__':
  if len(sys.argv) < 2:
    sys.exit(__doc__)
  main(sys.argv[1:])
