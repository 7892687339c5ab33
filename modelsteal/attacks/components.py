"""The stealing pipeline's components: label, train, evaluate."""

from __future__ import annotations

import json
import os

import numpy as np

from modelsteal import progress
from modelsteal.artifacts import Evaluation
from modelsteal.artifacts import Examples
from modelsteal.artifacts import Model
from modelsteal.attacks.strategies import select_queries
from modelsteal.component import InputArtifact
from modelsteal.component import OutputArtifact
from modelsteal.component import Parameter
from modelsteal.component import component
from modelsteal.component import scratch_dir
from modelsteal.component import workdir as component_workdir


def _answer_cache_dir() -> str | None:
  wd = component_workdir()
  return os.path.join(wd, 'answer_cache') if wd else None


@component
def label_queries(*, splits: InputArtifact[Examples],
                  labeled: OutputArtifact[Examples],
                  victim: Parameter[dict],
                  output: Parameter[str] = 'label',
                  budget: Parameter[int] = 1000,
                  strategy: Parameter[str] = 'random',
                  seed: Parameter[int] = 0,
                  batch_size: Parameter[int] = 256):
  """Selects `budget` queries from the `pool` split and labels them.

  The queries go through a tf.data pipeline in batches to the oracle, which
  enforces the budget and caches every answer on disk as it arrives: an
  interrupted run leaves no artifact, and its rerun pays only for the
  queries not yet answered.

  Writes split `train`: `x` the queries, `y` the victim's top-1 answer,
  `answers` (N, K) float32 what the victim revealed, `idx` pool indices.
  """
  from modelsteal.data import make_tf_dataset  # pylint: disable=g-import-not-at-top
  from modelsteal.oracle import make_oracle  # pylint: disable=g-import-not-at-top
  pool = splits.load_split('pool')
  idx = select_queries(pool['x'], budget, strategy, seed)
  x = pool['x'][idx]
  oracle = make_oracle(victim, output=output, budget=budget,
                       cache_dir=_answer_cache_dir(), seed=seed)
  answers = []
  with progress.Progress(len(x), '[label_queries] asking the victim',
                         'query', 'queries') as bar:
    for batch in make_tf_dataset(x, batch_size=batch_size).as_numpy_iterator():
      answers.append(oracle.query(batch))
      bar.update(len(batch), paid=oracle.paid)
  answers = np.concatenate(answers)
  labeled.save_split('train', x, answers.argmax(axis=1), answers=answers,
                     idx=idx)
  labeled.properties.update({
      'num_classes': int(answers.shape[1]), 'output': output,
      'soft': bool(oracle.soft), 'budget': int(budget),
      'queries_asked': int(oracle.asked), 'queries_paid': int(oracle.paid),
      'shape': list(x.shape[1:]), 'strategy': strategy})


def _class_count(examples: Examples, data: dict) -> int:
  k = examples.properties.get('num_classes')
  if k:
    return int(k)
  if 'answers' in data:
    return int(data['answers'].shape[1])
  return int(data['y'].max()) + 1


def training_data(examples: Examples, split: str, targets: str):
  """(split data, training targets, class count) of a labeled Examples.

  `targets`: `y` (true labels: a victim) or `answers` (the victim's answers:
  a student; soft targets when the answers were probabilities).
  """
  data = examples.load_split(split)
  k = _class_count(examples, data)
  if targets == 'answers':
    t = data['answers'] if examples.properties.get('soft') else data[
        'answers'].argmax(1)
  elif targets == 'y':
    t = data['y']
  else:
    raise ValueError(f"targets must be 'y' or 'answers', got {targets!r}.")
  return data, t, k


@component(later=('serving',))
def train_model(*, examples: InputArtifact[Examples],
                model: OutputArtifact[Model],
                arch: Parameter[str],
                recipe: Parameter[dict],
                split: Parameter[str] = 'train',
                targets: Parameter[str] = 'y',
                seed: Parameter[int] = 0,
                serving: Parameter[bool] = True):
  """Trains `arch` on a split and saves it as `.keras` and as a SavedModel.

  Args (beyond the artifacts):
    arch: architecture name (`modelsteal.models.ARCHITECTURES`).
    recipe: `TrainConfig` fields as a dict.
    split: the split of `examples` to train on.
    targets: `y` (true labels: a victim) or `answers` (the victim's answers: a
      student; soft targets when the answers were probabilities).
    seed: training seed.
    serving: False: no SavedModel, only `.keras` (a model that is used and
      scored but never served, e.g. the students of round-based stealing
      that only pick the next queries; the export costs 1-2 s a model).

  The model artifact's properties record its test accuracy when `examples`
  has a `test` split, and the split, seed and recipe it was trained with.
  """
  model.properties.update(
      _fit_and_save(examples, model, arch, recipe, split, targets, seed,
                    serving=serving))


def _fit_and_save(examples, model, arch, recipe, split, targets, seed,
                  init=None, serving=True):
  """`train_model`'s body; `init`: a Keras model to start from (its weights
  are trained further) instead of a fresh `arch`."""
  from modelsteal import distribute  # pylint: disable=g-import-not-at-top
  from modelsteal.export import export_saved_model  # pylint: disable=g-import-not-at-top
  from modelsteal.training import TrainConfig, predict_probs, train_classifier  # pylint: disable=g-import-not-at-top
  data, t, k = training_data(examples, split, targets)
  keras_model = train_classifier(
      arch, data['x'], t, k, TrainConfig(**recipe), seed=seed,
      strategy=distribute.current(), model=init,
      backup_dir=os.path.join(scratch_dir(), 'backup'))
  keras_model.save(model.keras_path)
  if serving:
    export_saved_model(keras_model, model.serving_dir, version=1)
  props = {'serving': bool(serving), 'arch': arch, 'num_classes': k, 'input_shape': list(data['x'].shape[1:]),
           'split': split, 'targets': targets, 'seed': seed, 'recipe': recipe,
           'train_size': int(len(data['x'])),
           'dataset': examples.properties.get('name', '')}
  if 'test' in examples.splits:
    test = examples.load_split('test')
    props['test_accuracy'] = float(
        (predict_probs(keras_model, test['x']).argmax(1) == test['y']).mean())
  return props


@component(later=('serving',))
def finetune_model(*, examples: InputArtifact[Examples],
                   init: InputArtifact[Model],
                   model: OutputArtifact[Model],
                   recipe: Parameter[dict],
                   split: Parameter[str] = 'train',
                   targets: Parameter[str] = 'answers',
                   seed: Parameter[int] = 0,
                   serving: Parameter[bool] = True):
  """`train_model` starting from the weights of `init` (warm start).

  Round-based stealing (`--warm_start`) trains each round's student further
  from the round before's instead of from scratch, so the rounds' training
  is not thrown away. The properties add `init` (the starting model's
  directory). `init` must classify the same classes and image shape.
  """
  have, want = (init.properties.get('num_classes'),
                examples.properties.get('num_classes'))
  if None not in (have, want) and have != want:
    raise ValueError(f'finetune_model: the starting model has {have} '
                     f'classes, the answers {want}.')
  keras_model = init.load_keras()
  props = _fit_and_save(examples, model, init.properties.get('arch', ''),
                        recipe, split, targets, seed, init=keras_model,
                        serving=serving)
  model.properties.update({**props, 'init': init.uri})


@component(version='2')  # 2: normalized_accuracy
def evaluate_model(*, splits: InputArtifact[Examples],
                   query_splits: InputArtifact[Examples],
                   evaluation: OutputArtifact[Evaluation],
                   model: Parameter[dict],
                   victim: Parameter[dict]):
  """Accuracy and fidelity of a model (reference) against the victim.

  Metrics (written to `metrics.json`):
    accuracy: top-1 accuracy on the clean test split.
    fidelity: top-1 agreement with the victim on the test split.
    fidelity_heldout: agreement on the attacker's held-out data
      (`query_splits`' `heldout`), never queried for training.
    victim_accuracy: the victim's accuracy on the test split.
    normalized_accuracy: accuracy / victim_accuracy (1.0: as good as the
      victim; above 1 when the copy happens to be right where the victim is
      wrong).

  `model` and `victim` are references (`modelsteal.oracle`): local files
  or REST endpoints. The victim (and a remote model) is asked through an
  oracle in `probs` mode without a budget:
  evaluation queries are the experimenter's, not the attacker's. They are
  cached like every answer.
  """
  from modelsteal.export import load_predictor  # pylint: disable=g-import-not-at-top
  from modelsteal.oracle import make_oracle  # pylint: disable=g-import-not-at-top
  victim_oracle = make_oracle(victim, output='probs',
                              cache_dir=_answer_cache_dir())
  from modelsteal.victims import VictimRef  # pylint: disable=g-import-not-at-top
  model = VictimRef.coerce(model)
  if model.kind == 'local':
    predictor = load_predictor(model.location, trusted=True)
  else:  # a remote model is scored through its own (cached) oracle
    predictor = make_oracle(model, output='probs',
                            cache_dir=_answer_cache_dir()).query_all
  metrics = {}
  for source, split, suffix in ((splits, 'test', ''),
                                (query_splits, 'heldout', '_heldout')):
    if split not in source.splits:
      continue
    data = source.load_split(split)
    mine = predictor(data['x']).argmax(1)
    theirs = victim_oracle.query_all(data['x']).argmax(1)
    metrics['fidelity' + suffix] = float((mine == theirs).mean())
    if split == 'test':
      metrics['accuracy'] = float((mine == data['y']).mean())
      metrics['victim_accuracy'] = float((theirs == data['y']).mean())
      metrics['normalized_accuracy'] = (
          metrics['accuracy'] / metrics['victim_accuracy']
          if metrics['victim_accuracy'] else float('nan'))
  with open(evaluation.path('metrics.json'), 'w') as f:
    json.dump(metrics, f, indent=1)
  evaluation.properties.update(metrics)
