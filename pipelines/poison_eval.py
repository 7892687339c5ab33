r"""Measure the damage of unlearnable data: clean vs poisoned training.

    python -m pipelines.poison_eval --poisoned=runs/generate_ntga/<run>/poisoned

Trains each target network (default: the paper's MNIST targets `ntga_fnn`,
`ntga_fnn_relu`, `ntga_cnn`) for a fixed number of epochs on the poisoned
training set and on the same rows' clean images, evaluates on the clean test
split after every epoch, and prints final and best accuracy per target and
data. Writes `results.csv`, `results.json`, `curves.csv` and `accuracy.png`
under `<workdir>/evaluate_poison/<run>/evaluation/` with an `execution.json`.
`--poisoned` is an artifact written by `python -m pipelines.ntga` or an
exported `.npz` (`x_train`, `y_train`, `idx_train`, `x_test`, `y_test`; then
`--dataset` names the clean source). The clean source defaults to the one the
artifact was made from.

Cost on one core of a 2-core CPU, 50,000 MNIST images: FNN and FNN-ReLU
about 100 s per 10-epoch training, the CNN about 1-2 minutes per epoch
(each target is trained twice: clean and poisoned). Variants:

    --targets=ntga_fnn_relu,ntga_cnn          which targets
    --target_epochs=10 --target_batch_size=128 --target_lr=1e-3
    --target_max_train=10000                  a reduced run
    --smoke                                   a tiny run, seconds

Finished trainings are kept: an interrupted run resumes with the next one.
"""

from __future__ import annotations

import dataclasses
import os
import time

from absl import app
from absl import flags

from pipelines import common

_TARGETS = flags.DEFINE_list('targets', ['ntga_fnn', 'ntga_fnn_relu',
                                         'ntga_cnn'],
                             'Target architectures to train.')
_EPOCHS = flags.DEFINE_integer('target_epochs', 10, 'Training epochs.')
_BATCH = flags.DEFINE_integer('target_batch_size', 128, 'Batch size.')
_LR = flags.DEFINE_float('target_lr', 1e-3, 'Adam learning rate (cosine '
                         'decay).')
_MAX_TRAIN = flags.DEFINE_integer('target_max_train', 0, 'Use only the first N '
                                  'training rows (0: all).')


@dataclasses.dataclass(frozen=True)
class PoisonEvalConfig:
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
    raise ValueError('--poisoned is required: an artifact directory written by '
                     'python -m pipelines.ntga, or an exported .npz.')
  if not os.path.exists(cfg.poisoned):
    raise ArtifactError(f'--poisoned={cfg.poisoned!r} does not exist.')
  if os.path.isfile(cfg.poisoned):
    if not cfg.dataset:
      raise ValueError('an exported .npz needs --dataset: the clean dataset '
                       'it was made from.')
    poisoned = data_lib.load_poisoned(cfg.poisoned, cfg.workdir)
  else:
    poisoned = Examples.load(cfg.poisoned)
  if cfg.dataset:
    clean = data_lib.import_dataset(
        data_lib.load_dataset(cfg.dataset, cfg.data_dir), cfg.workdir)
  else:
    src = poisoned.properties.get('source_uri')
    if not src or not os.path.isdir(src):
      raise ValueError(f'the clean source of {cfg.poisoned!r} '
                       f'({src!r}) is gone: pass --dataset.')
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


def config_from_flags() -> PoisonEvalConfig:
  return PoisonEvalConfig(
      poisoned=common.POISONED.value or '', dataset=common.DATASET.value,
      data_dir=common.DATA_DIR.value, targets=tuple(_TARGETS.value),
      epochs=_EPOCHS.value, batch_size=_BATCH.value, learning_rate=_LR.value,
      max_train=_MAX_TRAIN.value, workdir=common.WORKDIR.value,
      seed=common.SEED.value, smoke=common.SMOKE.value)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  common.run_main(lambda: run(config_from_flags()), 'poison_eval')


if __name__ == '__main__':
  app.run(main)
