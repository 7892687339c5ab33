"""Result tables (pandas) and plots (matplotlib, headless)."""

from __future__ import annotations

import json
import os

import pandas as pd

STEAL_COLUMNS = ['model', 'role', 'arch', 'budget', 'output', 'queries_paid',
                 'accuracy', 'fidelity', 'fidelity_heldout',
                 'normalized_accuracy', 'train_s']


def results_frame(rows: list[dict], columns: list[str] | None = None
                  ) -> pd.DataFrame:
  """Rows -> DataFrame with `columns` first (those present), then the rest."""
  df = pd.DataFrame(rows)
  if columns:
    first = [c for c in columns if c in df.columns]
    df = df[first + [c for c in df.columns if c not in first]]
  return df


def save_results(df: pd.DataFrame, out_dir: str, stem: str = 'results'
                 ) -> tuple[str, str]:
  """Writes `<stem>.csv` and `<stem>.json` (records) atomically."""
  os.makedirs(out_dir, exist_ok=True)
  csv_path = os.path.join(out_dir, f'{stem}.csv')
  json_path = os.path.join(out_dir, f'{stem}.json')
  df.to_csv(csv_path + '.tmp', index=False)
  os.replace(csv_path + '.tmp', csv_path)
  with open(json_path + '.tmp', 'w') as f:
    json.dump(json.loads(df.to_json(orient='records')), f, indent=1)
  os.replace(json_path + '.tmp', json_path)
  return csv_path, json_path


# Printed under the steal table and quoted in the README: what each column
# means, in the words a user asks the question in.
STEAL_LEGEND = """\
accuracy             top-1 accuracy on the clean test split (never queried)
fidelity             share of test images given the victim's top-1 answer
fidelity_heldout     the same on the attacker's held-out images (never queried)
normalized_accuracy  accuracy / victim's (1.000x: as accurate; above 1 where the
                     copy is right on test images the victim gets wrong)
queries_paid         queries sent by this run: answers cached by an earlier run
                     or a smaller budget of the sweep are not paid again"""


def format_table(df: pd.DataFrame) -> str:
  """A fixed-width text table, fractions as percentages, ratios as `1.005x`."""
  show = df.copy()
  if pd.api.types.is_float_dtype(show.get('normalized_accuracy')):
    show['normalized_accuracy'] = show['normalized_accuracy'].map(
        lambda v: '' if pd.isna(v) else f'{v:.3f}x')
  for c in show.columns:
    if c in ('accuracy', 'fidelity', 'fidelity_heldout',
             'victim_accuracy') or c.startswith(('acc', 'fid')):
      if pd.api.types.is_float_dtype(show[c]):
        show[c] = show[c].map(lambda v: '' if pd.isna(v) else f'{100 * v:.2f}%')
  return show.to_string(index=False)


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _save_figure(fig, path: str, dpi: int = 110) -> str:
  """Writes a PNG atomically (temp name, then rename) and closes the figure."""
  fig.tight_layout()
  fig.savefig(path + '.tmp.png', dpi=dpi)
  _pyplot().close(fig)
  os.replace(path + '.tmp.png', path)
  return path


def plot_epoch_curves(path: str, panels: dict[str, dict[str, list[float]]],
                      title: str = '') -> str:
  """Clean-test accuracy per epoch: `{panel title: {curve label: [acc, ...]}}`.

  Accuracies are fractions; one panel per key, side by side, shared y axis.
  """
  plt = _pyplot()
  fig, axes = plt.subplots(1, max(1, len(panels)),
                           figsize=(5.5 * max(1, len(panels)), 4),
                           sharey=True, squeeze=False)
  for ax, (name, curves) in zip(axes[0], panels.items()):
    ax.set_prop_cycle(color=plt.cm.tab20.colors)  # > 10 curves, no repeats
    for label, acc in curves.items():
      ax.plot(range(1, len(acc) + 1), [100 * a for a in acc], marker='.',
              label=label)
    ax.set_title(name)
    ax.set_xlabel('epoch')
    ax.set_ylabel('clean test accuracy (%)')
    ax.set_ylim(0, 100)
    ax.grid(True, alpha=0.3)
    if curves:
      ax.legend(fontsize=7)
  if title:
    fig.suptitle(title, fontsize=9)
  return _save_figure(fig, path)


def plot_budget_sweep(df: pd.DataFrame, path: str, title: str = '') -> str:
  """Accuracy and fidelity of each student against the query budget (log x)."""
  plt = _pyplot()
  students = df[df['role'] == 'student']
  fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
  for ax, metric in zip(axes, ('accuracy', 'fidelity')):
    for arch, g in students.groupby('arch'):
      g = g.sort_values('budget')
      ax.plot(g['budget'], 100 * g[metric], marker='o', label=arch)
    victim = df[df['role'] == 'victim']
    if metric == 'accuracy' and len(victim):
      ax.axhline(100 * victim['accuracy'].iloc[0], color='k', ls='--',
                 label='victim')
    ax.set_xscale('log')
    ax.set_xlabel('queries')
    ax.set_ylabel(f'{metric} (%)')
    ax.set_title(metric)
    ax.grid(True, alpha=0.3)
    ax.legend()
  if title:
    fig.suptitle(title)
  return _save_figure(fig, path)


def plot_diversity(trace: pd.DataFrame, path: str, title: str = '',
                   label: str = 'spec') -> str:
  """Diversity against training step, one line per `label` value.

  `trace` has columns `step`, `variance`, `disagreement`,
  `mutual_information` (as `modelsteal.uq.trace_frame` writes them).
  """
  plt = _pyplot()
  metrics = ('variance', 'disagreement', 'mutual_information')
  fig, axes = plt.subplots(1, 3, figsize=(15, 4))
  for ax, metric in zip(axes, metrics):
    ax.set_prop_cycle(color=plt.cm.tab10.colors)
    for name, g in trace.groupby(label, sort=False):
      g = g.sort_values('step')
      ax.plot(g['step'], g[metric], marker='.', label=name)
    ax.set_xlabel('training step')
    ax.set_title(metric.replace('_', ' '))
    ax.grid(True, alpha=0.3)
  axes[0].set_ylabel('on the probe images')
  axes[0].legend(fontsize=7)
  if title:
    fig.suptitle(title, fontsize=9)
  return _save_figure(fig, path)


def plot_rounds(df: pd.DataFrame, path: str, title: str = '') -> str:
  """Fidelity (and accuracy) against queries asked, one line per strategy."""
  plt = _pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
  for ax, metric in zip(axes, ('fidelity', 'accuracy')):
    for strategy, g in df.groupby('strategy', sort=False):
      g = g.sort_values('queries')
      ax.plot(g['queries'], 100 * g[metric], marker='o', label=strategy)
    ax.set_xlabel('queries asked (budget spent)')
    ax.set_ylabel(f'{metric} (%)')
    ax.set_title(metric)
    ax.grid(True, alpha=0.3)
    ax.legend()
  if title:
    fig.suptitle(title, fontsize=9)
  return _save_figure(fig, path)
