"""Train on poisoned data anyway: each training defence (and compositions)
on the poisoned set, and on its clean counterpart for the defence's own
cost, with clean-test accuracy per epoch.

    from modelsteal.experiments import defend
    defend.run(defend.DefendConfig(poisoned='runs/...', defense='all'))
"""

from __future__ import annotations

import dataclasses
import os
import time

from modelsteal.errors import UnknownNameError
from modelsteal.experiments.common import run_name

TARGETS = {'cnn': 'ntga_cnn', 'fnn': 'ntga_fnn', 'fnn_relu': 'ntga_fnn_relu'}


@dataclasses.dataclass(frozen=True)
class DefendConfig:
  """Training defences against a poisoned set; see `modelsteal.defenses`."""
  poisoned: str
  defense: str = 'none'
  target: str = 'cnn'
  clean: str | None = None
  epochs: int = 10
  batch_size: int = 128
  learning_rate: float = 1e-3
  train_size: int = 0
  workdir: str = './runs'
  seed: int = 0
  smoke: bool = False
  distribute: str = 'default'
  data_dir: str | None = None


def clean_counterpart(poisoned, clean: str, data_dir, workdir: str):
  """The same training rows (by `idx`), unpoisoned, with the same test set."""
  import dataclasses as dc  # pylint: disable=g-import-not-at-top
  from modelsteal import data as data_lib  # pylint: disable=g-import-not-at-top
  from modelsteal.poison_eval import matching_clean_rows  # pylint: disable=g-import-not-at-top
  ds = data_lib.load_dataset(clean, data_dir)
  x, y = matching_clean_rows(ds.x_train, ds.y_train,
                             poisoned.load_split('train'),
                             f'--poisoned (against --clean {clean})')
  return data_lib.import_dataset(dc.replace(ds, x_train=x, y_train=y),
                                 workdir)


def run(cfg: DefendConfig):
  """Runs the defence table; returns (DataFrame, output directory)."""
  import pandas as pd  # pylint: disable=g-import-not-at-top
  from modelsteal import data as data_lib  # pylint: disable=g-import-not-at-top
  from modelsteal import distribute, evaluation, models  # pylint: disable=g-import-not-at-top
  from modelsteal.defenses.components import train_defended  # pylint: disable=g-import-not-at-top
  from modelsteal.defenses.training import parse_defense_list  # pylint: disable=g-import-not-at-top
  started = time.time()
  defenses = parse_defense_list(cfg.defense)
  target = TARGETS.get(cfg.target, cfg.target)
  if target not in models.ARCHITECTURES:
    raise UnknownNameError(
        'target', f': unknown target {cfg.target!r}; valid: '
        f'{", ".join(sorted(TARGETS))} or an architecture: '
        f'{", ".join(sorted(models.ARCHITECTURES))}.')
  distribute.use(cfg.distribute)
  # Non-chief workers of a multi-worker run write to a private directory.
  wd = distribute.worker_workdir(os.path.abspath(cfg.workdir))
  poisoned = data_lib.load_poisoned(cfg.poisoned, wd)
  sets = [('poisoned', poisoned)]
  if cfg.clean:
    sets.append(('clean', clean_counterpart(poisoned, cfg.clean, cfg.data_dir,
                                            wd)))
  # Smoke: 8 batches per model, not 2: every new model's training graph is
  # traced once, and at 2 steps per model TF warns of excessive retracing.
  recipe = {'epochs': 1 if cfg.smoke else cfg.epochs,
            'batch_size': min(cfg.batch_size, 32) if cfg.smoke
                          else cfg.batch_size,
            'learning_rate': cfg.learning_rate}
  train_size = 256 if cfg.smoke else cfg.train_size
  rows = []
  for d in defenses:
    for name, ex in sets:
      res = train_defended.run(wd, examples=ex, defense=d.spec, target=target,
                               recipe=recipe, train_size=train_size,
                               test_size=200 if cfg.smoke else 0,
                               seed=cfg.seed)
      p = res['model'].properties
      note = 'reused' if res.reused else f'{res.duration_s:.0f}s'
      print(f'[defend] {d.spec:<18} on {name:<8} accuracy '
            f'{100 * p["accuracy"]:.2f}% (best {100 * p["best_accuracy"]:.2f}%'
            f' at epoch {p["best_epoch"]})  {note}', flush=True)
      rows.append({'defense': d.spec, 'data': name, 'target': target,
                   'accuracy': p['accuracy'],
                   'best_accuracy': p['best_accuracy'],
                   'best_epoch': p['best_epoch'], 'epochs': recipe['epochs'],
                   'train_size': p['train_size'],
                   'train_s': round(res.duration_s, 1),
                   'saved_model': os.path.join(res['model'].serving_dir, '1'),
                   'history': p['history']})
  df = pd.DataFrame(rows)
  name = run_name(
      [os.path.basename(os.path.normpath(cfg.poisoned)), target,
       f'e{recipe["epochs"]}', f'n{train_size or "all"}']
      + (['smoke'] if cfg.smoke else []))
  out_dir = os.path.join(wd, 'defend', name)
  csv_path, json_path = evaluation.save_results(df, out_dir)
  plot = evaluation.plot_epoch_curves(
      os.path.join(out_dir, 'accuracy_per_epoch.png'),
      {f'trained on {data} data': {r['defense']: r['history'] for r in rows
                                   if r['data'] == data}
       for data in dict.fromkeys(r['data'] for r in rows)})
  table = df.pivot_table(index='defense', columns='data',
                         values=['accuracy', 'best_accuracy'], sort=False)
  print('\nclean-test accuracy (%) by defence:')
  print((100 * table).round(2).to_string())
  best = df[df['data'] == 'poisoned'].sort_values('accuracy').iloc[-1]
  print(f'\nbest defence on the poisoned set: {best["defense"]} '
        f'({100 * best["accuracy"]:.2f}%), SavedModel {best["saved_model"]}')
  print(f'results:  {csv_path}\n          {json_path}\nplot:     {plot}')
  print(f'total time {time.time() - started:.1f}s', flush=True)
  return df, out_dir


