"""How much unlearnable data hurts: target models trained on clean vs poisoned.

Yuan & Wu, "Neural Tangent Generalization Attacks", ICML 2021,
https://arxiv.org/abs/2106.02963, section 4: target networks are trained
for a fixed number of epochs on the clean training set and on its poisoned
copy, and tested on the clean test set. The accuracy after the last epoch is
the damage; the highest accuracy over the epochs shows how much early
stopping alone (with an oracle that knows when to stop) would recover.

The clean baseline uses exactly the poisoned rows' clean images (`idx`), so
both runs see the same number of images with the same labels.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np

from modelsteal.artifacts import ArtifactError
from modelsteal.artifacts import Evaluation
from modelsteal.artifacts import Examples
from modelsteal.component import InputArtifact
from modelsteal.component import OutputArtifact
from modelsteal.component import Parameter
from modelsteal.component import component
from modelsteal.component import scratch_dir
from modelsteal.errors import ConfigError
from modelsteal.errors import literal
from modelsteal.errors import UnknownNameError
from modelsteal.evaluation import plot_epoch_curves

# The paper's MNIST targets (CIFAR-10 adds ResNet-18 and DenseNet-121).
DEFAULT_TARGETS = ('ntga_fnn', 'ntga_fnn_relu', 'ntga_cnn')


def matching_clean_rows(clean_x: np.ndarray, clean_y: np.ndarray,
                        poisoned: dict, where: str = 'the poisoned set'):
  """The clean images and labels at the poisoned train split's rows.

  Rows are the split's `idx` (each row's index in the source training split),
  or the first N when it has none. Checks that the rows exist, that the
  labels there equal the poisoned labels (same source dataset) and that the
  images have the same shape.

  Raises:
    ArtifactError: any of those checks fails, saying which.
  """
  n = len(poisoned['y'])
  idx = np.asarray(poisoned['idx'], np.int64) if 'idx' in poisoned else (
      np.arange(n))
  if idx.size and (idx.min() < 0 or idx.max() >= len(clean_y)):
    raise ArtifactError(f'{where} indexes rows outside the clean training '
                        f'split of {len(clean_y)} images: wrong clean dataset?')
  if not np.array_equal(np.asarray(clean_y)[idx], poisoned['y']):
    raise ArtifactError(f'the labels of {where} differ from the clean '
                        'dataset\'s at the same rows: it was made from '
                        'another dataset (pass the right clean dataset).')
  if clean_x.shape[1:] != poisoned['x'].shape[1:]:
    raise ArtifactError('clean and poisoned images differ in shape: '
                        f'{clean_x.shape[1:]} vs {poisoned["x"].shape[1:]}.')
  return clean_x[idx], np.asarray(clean_y)[idx]


def paired_training_sets(clean: Examples, poisoned: Examples):
  """(x_clean, x_poisoned, y, x_test, y_test) with matching rows."""
  p = poisoned.load_split('train')
  if 'idx' not in p:
    raise ArtifactError(f'{poisoned.uri!r}: the poisoned train split has no '
                        '`idx` (row indices in the source training split).')
  c = clean.load_split('train')
  xc, _ = matching_clean_rows(c['x'], c['y'], p, repr(poisoned.uri))
  test = (poisoned if 'test' in poisoned.splits else clean).load_split('test')
  return (xc, p['x'], np.asarray(p['y'], np.int64), test['x'],
          np.asarray(test['y'], np.int64))


def train_and_track(arch: str, x: np.ndarray, y: np.ndarray,
                    x_test: np.ndarray, y_test: np.ndarray, num_classes: int,
                    *, epochs: int, batch_size: int, learning_rate: float,
                    seed: int, verbose: int | None = 0,
                    desc: str | None = None) -> list[float]:
  """Trains `arch` (Adam, cosine decay) and returns clean-test accuracy per epoch.

  The same recipe as `modelsteal.training.train_classifier` (without
  augmentation, which would act as a defence), plus an evaluation on the
  clean test split after every epoch. `verbose` as in `train_classifier`
  (2 also prints each epoch's accuracy).
  """
  from modelsteal.training import TrainConfig, epoch_accuracy_callback, train_classifier  # pylint: disable=g-import-not-at-top
  cb = epoch_accuracy_callback(
      x_test, y_test, verbose=None if verbose is None else verbose == 2)
  train_classifier(arch, x, y, num_classes,
                   TrainConfig(epochs=epochs, batch_size=batch_size,
                               learning_rate=learning_rate),
                   seed=seed, verbose=verbose, callbacks=[cb], desc=desc)
  return cb.history


@component(version='1')
def evaluate_poison(*, clean: InputArtifact[Examples],
                    poisoned: InputArtifact[Examples],
                    evaluation: OutputArtifact[Evaluation],
                    targets: Parameter[list] = DEFAULT_TARGETS,
                    epochs: Parameter[int] = 10,
                    batch_size: Parameter[int] = 128,
                    learning_rate: Parameter[float] = 1e-3,
                    seed: Parameter[int] = 0,
                    max_train: Parameter[int] = 0,
                    max_test: Parameter[int] = 0):
  """Trains each target on clean and on poisoned data; clean-test accuracy.

  Writes `results.csv` / `results.json` (one row per target and data: final
  and best accuracy, best epoch), `curves.csv` (accuracy per epoch) and
  `accuracy.png`. Each finished training is kept in the scratch directory, so
  an interrupted run redoes only the unfinished ones.

  Args:
    clean: the source `Examples` the poisoned set was made from.
    poisoned: `Examples` with a `train` split carrying `idx`.
    evaluation: output `Evaluation`.
    targets: architecture names (`modelsteal.models.ARCHITECTURES`).
    epochs: fixed number of epochs.
    batch_size: batch size.
    learning_rate: Adam's initial learning rate (cosine decay to 0).
    seed: initialisation and shuffling seed (the same for clean and poisoned).
    max_train: use only the first this many rows (0: all).
    max_test: use only the first this many test images (0: all).
  """
  import pandas as pd  # pylint: disable=g-import-not-at-top
  from modelsteal import models  # pylint: disable=g-import-not-at-top

  for t in targets:
    if t not in models.ARCHITECTURES:
      raise UnknownNameError('targets', ': unknown target architecture '
                             f'{literal(repr(t))}; valid: '
                             f'{", ".join(sorted(models.ARCHITECTURES))}.')
  if epochs < 1:
    raise ConfigError('epochs', f'must be at least 1, got {epochs}.')
  x_clean, x_pois, y, x_test, y_test = paired_training_sets(clean, poisoned)
  if max_train:
    x_clean, x_pois, y = x_clean[:max_train], x_pois[:max_train], y[:max_train]
  if max_test:
    x_test, y_test = x_test[:max_test], y_test[:max_test]
  num_classes = int(poisoned.properties.get(
      'num_classes', clean.properties.get('num_classes', int(y.max()) + 1)))
  scratch = scratch_dir()
  rows, curve_rows, curves = [], [], {}
  for target in targets:
    for data_name, x in (('clean', x_clean), ('poisoned', x_pois)):
      done = os.path.join(scratch, f'{target}-{data_name}.json')
      if os.path.exists(done):
        with open(done) as f:
          rec = json.load(f)
        note = 'resumed'
      else:
        t0 = time.time()
        acc = train_and_track(target, x, y, x_test, y_test, num_classes,
                              epochs=epochs, batch_size=batch_size,
                              learning_rate=learning_rate, seed=seed,
                              verbose=None,
                              desc=f'[poison_eval] train {target} on '
                                   f'{data_name} data ({len(y)} images)')
        rec = {'accuracy': acc, 'seconds': time.time() - t0}
        with open(done + '.tmp', 'w') as f:
          json.dump(rec, f)
        os.replace(done + '.tmp', done)
        note = f'{rec["seconds"]:.0f}s'
      acc = rec['accuracy']
      best = int(np.argmax(acc))
      rows.append({'target': target, 'data': data_name,
                   'final_accuracy': acc[-1], 'best_accuracy': acc[best],
                   'best_epoch': best + 1, 'epochs': epochs,
                   'train_images': int(len(y)), 'test_images': int(len(y_test)),
                   'seconds': round(rec['seconds'], 1)})
      curves[(target, data_name)] = acc
      curve_rows += [{'target': target, 'data': data_name, 'epoch': e + 1,
                      'accuracy': a} for e, a in enumerate(acc)]
      print(f'[poison_eval] {target:<14} {data_name:<8} final '
            f'{100 * acc[-1]:6.2f}%  best {100 * acc[best]:6.2f}% (epoch '
            f'{best + 1})  {note}', flush=True)
  df = pd.DataFrame(rows)
  df.to_csv(evaluation.path('results.csv'), index=False)
  df.to_json(evaluation.path('results.json'), orient='records', indent=1)
  pd.DataFrame(curve_rows).to_csv(evaluation.path('curves.csv'), index=False)
  props = poisoned.properties
  panels = {}
  for (target, data_name), acc in sorted(curves.items()):
    panels.setdefault(target, {})[data_name] = acc
  about = ', '.join(f'{k}={props[k]}' for k in ('eps', 'surrogate')
                    if props.get(k) is not None)  # an npz has neither
  plot_epoch_curves(evaluation.path('accuracy.png'), panels,
                    title=f'{props.get("name", "poisoned")}' +
                    (f': {about}' if about else ''))
  evaluation.properties.update({
      'poisoned_uri': poisoned.uri, 'clean_uri': clean.uri,
      'targets': list(targets), 'epochs': epochs,
      'results': rows,
  })
