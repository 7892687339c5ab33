"""How much damage a poisoned training set does: each target network
trained on the clean and on the poisoned set, clean-test accuracy per epoch
(`modelsteal.poison_eval.evaluate_poison`).

    from modelsteal.experiments import poison_eval
    poison_eval.run(poison_eval.PoisonEvalConfig(poisoned='runs/...'))
"""

from __future__ import annotations

import dataclasses
import os
import time

from modelsteal.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class PoisonEvalConfig:
  """Targets trained on clean and on poisoned data, scored on clean test."""
  poisoned: str = ''
  dataset: str | None = None
  data_dir: str | None = None
  targets: tuple[str, ...] = ('ntga_fnn', 'ntga_fnn_relu', 'ntga_cnn')
  epochs: int = 10
  batch_size: int = 128
  learning_rate: float = 1e-3
  max_train: int = 0
  workdir: str = './runs'
  seed: int = 0
  smoke: bool = False


def _load_inputs(cfg: PoisonEvalConfig):
  from modelsteal import data as data_lib  # pylint: disable=g-import-not-at-top
  from modelsteal.artifacts import ArtifactError, Examples  # pylint: disable=g-import-not-at-top
  if not cfg.poisoned:
    raise ConfigError('poisoned', 'is required: an artifact directory written '
                      'by python -m pipelines.ntga, or an exported .npz.')
  if not os.path.exists(cfg.poisoned):
    raise ArtifactError(f'poisoned={cfg.poisoned!r} does not exist.')
  if os.path.isfile(cfg.poisoned):
    if not cfg.dataset:
      raise ConfigError('poisoned', 'is an exported .npz, which needs '
                        '{dataset}: the clean dataset it was made from.')
    poisoned = data_lib.load_poisoned(cfg.poisoned, cfg.workdir)
  else:
    poisoned = Examples.load(cfg.poisoned)
  if cfg.dataset:
    clean = data_lib.import_dataset(
        data_lib.load_dataset(cfg.dataset, cfg.data_dir), cfg.workdir)
  else:
    src = poisoned.properties.get('source_uri')
    if not src or not os.path.isdir(src):
      raise ConfigError('dataset', f'is needed: the clean source of '
                        f'{cfg.poisoned!r} ({src!r}) is gone.')
    clean = Examples.load(src)
  return clean, poisoned


def run(cfg: PoisonEvalConfig):
  """Runs the pipeline; returns (results DataFrame, evaluation artifact)."""
  import pandas as pd  # pylint: disable=g-import-not-at-top
  from modelsteal import poison_eval  # pylint: disable=g-import-not-at-top

  started = time.time()
  clean, poisoned = _load_inputs(cfg)
  epochs, max_train, max_test = cfg.epochs, cfg.max_train, 0
  batch_size = cfg.batch_size
  if cfg.smoke:  # several batches per model (see pipelines.defend)
    epochs, max_train, max_test = 1, min(max_train or 256, 256), 200
    batch_size = min(batch_size, 32)
  result = poison_eval.evaluate_poison.run(
      cfg.workdir, clean=clean, poisoned=poisoned, targets=list(cfg.targets),
      epochs=epochs, batch_size=batch_size,
      learning_rate=cfg.learning_rate, seed=cfg.seed, max_train=max_train,
      max_test=max_test)
  ev = result['evaluation']
  df = pd.read_csv(ev.path('results.csv'))
  shown = df.copy()
  for c in ('final_accuracy', 'best_accuracy'):
    shown[c] = (100 * shown[c]).map('{:.2f}%'.format)
  p = poisoned.properties
  about = ', '.join(f'{k}={p[k]}' for k in ('eps', 'surrogate')
                    if p.get(k) is not None)  # an npz has neither
  print(f'\npoisoned set: {poisoned.uri} ({p.get("name")}'
        + (f', {about})' if about else ')'))
  print(shown.to_string(index=False))
  note = 'reused' if result.reused else f'{result.duration_s:.1f}s'
  print(f'\nresults:  {ev.path("results.csv")}\n          '
        f'{ev.path("results.json")}\nplot:     {ev.path("accuracy.png")}\n'
        f'record:   {os.path.join(result.execution_dir, "execution.json")} '
        f'({note})')
  print(f'total time {time.time() - started:.1f}s', flush=True)
  return df, ev


