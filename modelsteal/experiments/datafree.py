"""Data-free stealing as an experiment: the victim of a `StealConfig`, the
loop of `modelsteal.attacks.datafree`, the stealing table's row, a curve.

    python -m pipelines.steal --victim=mnist_cnn --query_data=datafree \
        --output=probs --budget=2000000 [--datafree=directions=1,loss=l1]

No attacker data is used: the pool and held-out splits are never read; the
test split gives the fidelity curve (`probe_size` images) and the final
scores. Writes under `<workdir>/datafree/<run>/`: `results.csv/json` (victim
and student rows as `pipelines.steal` prints them), `curve.csv` and
`curve.png` (fidelity against queries paid), `queries.png` (generated images
grouped by the class the student gives them), the student's SavedModel and
`.keras` file, and `state/` (checkpoint and answer journal: the same command
resumes an interrupted run).
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np

from modelsteal.attacks.datafree import DataFreeConfig
from modelsteal.attacks.datafree import parse_overrides
from modelsteal.experiments.common import run_name
from modelsteal.experiments.common import Steps


def config(cfg) -> DataFreeConfig:
  """The loop's settings from a StealConfig (its largest budget, its
  `datafree` overrides); ConfigError names the field."""
  return DataFreeConfig(**{'budget': max(cfg.budgets),
                           **parse_overrides(cfg.datafree)})


def _probabilities(logits: np.ndarray) -> np.ndarray:
  z = logits - logits.max(1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(1, keepdims=True)


def run(cfg):
  """Runs it; returns (results DataFrame, output directory)."""
  import pandas as pd  # pylint: disable=g-import-not-at-top
  from modelsteal import evaluation  # pylint: disable=g-import-not-at-top
  from modelsteal import models  # pylint: disable=g-import-not-at-top
  from modelsteal.attacks.datafree import DataFreeAttack  # pylint: disable=g-import-not-at-top
  from modelsteal.experiments import stealing  # pylint: disable=g-import-not-at-top
  from modelsteal.export import export_saved_model  # pylint: disable=g-import-not-at-top
  from modelsteal.export import load_predictor  # pylint: disable=g-import-not-at-top
  from modelsteal.oracle import make_oracle  # pylint: disable=g-import-not-at-top
  from modelsteal.progress import Progress  # pylint: disable=g-import-not-at-top
  started = time.time()
  dcfg = config(cfg)
  if cfg.smoke:
    dcfg = dataclasses.replace(
        dcfg, budget=min(dcfg.budget, 6000), batch_size=min(dcfg.batch_size,
                                                            32),
        checkpoint_every=min(dcfg.checkpoint_every, 2000),
        probe_size=min(dcfg.probe_size, 200))
  wd = os.path.abspath(cfg.workdir)
  steps = Steps('steal')
  dataset, splits = stealing.load_data(cfg, wd, steps, 'steal')
  victim = stealing.open_victim(cfg, dataset, splits, wd, steps, 'steal')
  victim_row = stealing.score_victim(victim, splits, splits, wd, steps,
                                     data=dataset.label)
  arch = stealing.default_students(cfg, dataset)[0]
  test = splits.load_split('test')
  x_test, y_test = test['x'].astype(np.float32), test['y']
  # What the victim says of the test images is the yardstick, computed as
  # the victim is scored (not paid from the attack's budget).
  judge = make_oracle(victim.ref, output='probs')
  victim_test = judge.query_all(x_test).argmax(1)
  probe = slice(0, min(dcfg.probe_size, len(x_test)))
  name = run_name([victim.name, cfg.output, 'datafree', f'b{dcfg.budget}',
                   arch, f'seed{cfg.seed}'] +
                  [f'{k}={v}' for k, v in sorted(parse_overrides(
                      cfg.datafree).items()) if k != 'budget'] +
                  (['smoke'] if cfg.smoke else []))
  out_dir = os.path.join(wd, 'datafree', name)
  oracle = make_oracle(victim.ref, output=cfg.output, budget=dcfg.budget,
                       seed=cfg.seed)
  student = models.build(arch, dataset.shape, dataset.num_classes)
  attack = DataFreeAttack(dcfg, oracle, student, dataset.shape,
                          dataset.num_classes, x_test[probe],
                          victim_test[probe],
                          os.path.join(out_dir, 'state'), seed=cfg.seed)
  print(f'[steal] data-free: {dcfg.budget:,} queries ({cfg.output} answers, '
        f'{"label-only generator" if attack.hard else f"{dcfg.directions} direction(s) per image"}), '
        f'student {arch}, generator {dcfg.generator}, loss {dcfg.loss}; '
        f'{dcfg.round_queries(attack.hard)} queries per round; state in '
        f'{attack.state_dir}', flush=True)
  t0 = time.time()
  with Progress(dcfg.budget, 'data-free queries', unit='query',
                plural='queries', interval=60.0) as progress:
    curve = attack.run(progress)
  loop_s = time.time() - t0

  logits = student.predict(x_test, batch_size=1000, verbose=0)
  pred = logits.argmax(1)
  accuracy = float((pred == y_test).mean())
  victim_acc = victim_row['accuracy']
  paid = int(attack.paid.numpy())
  row = {'model': f'{arch}@datafree{paid}', 'role': 'student', 'arch': arch,
         'budget': dcfg.budget, 'output': cfg.output, 'queries_paid': paid,
         'accuracy': accuracy, 'fidelity': float((pred == victim_test).mean()),
         'fidelity_heldout': None,
         'normalized_accuracy': accuracy / victim_acc if victim_acc else None,
         'train_s': round(loop_s, 1), 'data': dataset.label}
  serving = os.path.join(out_dir, 'model', 'serving')
  export_saved_model(student, serving, version=1)
  student.save(os.path.join(out_dir, 'model', 'model.keras'))
  row['saved_model'] = os.path.join(serving, '1')
  np.testing.assert_allclose(load_predictor(row['saved_model'])(x_test[:8]),
                             _probabilities(logits[:8]), atol=1e-4)
  df = evaluation.results_frame([victim_row, row], evaluation.STEAL_COLUMNS)
  evaluation.save_results(df, out_dir)
  steps.save(out_dir)
  curve_df = pd.DataFrame(curve.rows)
  curve_df.to_csv(os.path.join(out_dir, 'curve.csv'), index=False)
  _plot_curve(curve_df, os.path.join(out_dir, 'curve.png'),
              f'data-free stealing of {victim.name} ({cfg.output} answers)')
  x, labels = attack.sample_grid()
  _plot_grid(x, labels, dataset.num_classes,
             os.path.join(out_dir, 'queries.png'))
  t = attack.timing
  total = sum(t.values()) or 1.0
  print('\n' + evaluation.format_table(df.drop(columns=['saved_model'])))
  print(f'\n{paid:,} queries in {loop_s:.0f}s ({paid / max(loop_s, 1e-9):,.0f}'
        f'/s); time in the victim {100 * t["victim_s"] / total:.0f}%, the '
        f'student {100 * t["student_s"] / total:.0f}%, the generator '
        f'{100 * t["generator_s"] / total:.0f}%'
        + (f'; {attack.journal.replayed:,} answers replayed from the journal'
           if attack.journal.replayed else ''))
  print(f'curve:    {os.path.join(out_dir, "curve.csv")}\n'
        f'          {os.path.join(out_dir, "curve.png")}\n'
        f'queries:  {os.path.join(out_dir, "queries.png")}\n'
        f'results:  {os.path.join(out_dir, "results.csv")}\n'
        f'student {arch} SavedModel: {row["saved_model"]}')
  print(f'total time {time.time() - started:.1f}s', flush=True)
  return df, out_dir


def _plot_curve(df, path: str, title: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  from modelsteal.files import atomic_write  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(6, 4))
  ax.plot(df['queries'], 100 * df['fidelity'], marker='o')
  ax.set_xlabel('victim queries paid')
  ax.set_ylabel('fidelity on test images (%)')
  ax.set_title(title)
  ax.grid(alpha=0.3)
  atomic_write(path, lambda p: fig.savefig(p, format='png', dpi=120,
                                           bbox_inches='tight'))
  plt.close(fig)


def _plot_grid(x: np.ndarray, labels: np.ndarray, k: int, path: str,
               per_class: int = 8) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  from modelsteal.files import atomic_write  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(k, per_class, figsize=(per_class, k),
                           squeeze=False)
  for c in range(k):
    idx = np.flatnonzero(labels == c)[:per_class]
    for j in range(per_class):
      ax = axes[c, j]
      ax.axis('off')
      if j < len(idx):
        img = x[idx[j]]
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img,
                  cmap='gray' if img.shape[-1] == 1 else None, vmin=0, vmax=1)
    axes[c, 0].set_title(f'class {c}', fontsize=7, loc='left')
  fig.suptitle('generated queries by the student\'s class')
  atomic_write(path, lambda p: fig.savefig(p, format='png', dpi=100,
                                           bbox_inches='tight'))
  plt.close(fig)
