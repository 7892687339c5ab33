"""UQ students as components: trained from the same `label_queries` answers
as any student, evaluated beside them."""

from __future__ import annotations

import json
import os

from modelsteal.artifacts import Evaluation
from modelsteal.artifacts import Examples
from modelsteal.artifacts import Model
from modelsteal.component import InputArtifact
from modelsteal.component import OutputArtifact
from modelsteal.component import Parameter
from modelsteal.component import component
from modelsteal.component import scratch_dir


@component
def train_uq_model(*, examples: InputArtifact[Examples],
                   probe: InputArtifact[Examples],
                   model: OutputArtifact[Model],
                   spec: Parameter[str],
                   recipe: Parameter[dict],
                   split: Parameter[str] = 'train',
                   targets: Parameter[str] = 'answers',
                   seed: Parameter[int] = 0,
                   probe_size: Parameter[int] = 500,
                   probe_every: Parameter[int] = 50):
  """Trains the UQ student `spec` (see `modelsteal.uq`) on a labeled split.

  Writes `uq/` (the student: spec + weights, `modelsteal.uq.load_student`),
  `serving/1` (SavedModel: probabilities, label, entropy,
  mutual_information) and `diversity.csv`: variance, pairwise
  disagreement, mutual information and accuracy of the members on the first
  `probe_size` images of `probe`'s `test` split (never trained on), every
  `probe_every` optimizer steps. Finished members and epochs survive an
  interruption (scratch directory) and are not retrained.
  """
  from modelsteal import distribute  # pylint: disable=g-import-not-at-top
  from modelsteal import uq  # pylint: disable=g-import-not-at-top
  from modelsteal.attacks.components import training_data  # pylint: disable=g-import-not-at-top
  from modelsteal.training import TrainConfig  # pylint: disable=g-import-not-at-top
  parsed = uq.parse_spec(spec)
  data, t, k = training_data(examples, split, targets)
  test = probe.load_split('test')
  px, py = test['x'][:probe_size], test['y'][:probe_size]
  ctx = uq.FitContext(scratch=scratch_dir(), probe_x=px,
                      probe_every=probe_every, strategy=distribute.current())
  student, trace = uq.fit(parsed, data['x'], t, k, TrainConfig(**recipe), seed,
                          ctx)
  student.save(model.path('uq'))
  uq.export_uq_saved_model(student, model.serving_dir, version=1)
  frame = uq.trace_frame(trace, py)
  frame.insert(0, 'spec', str(parsed))
  frame.to_csv(model.path('diversity.csv'), index=False)
  acc = float((student.predict_probs(test['x']).argmax(1) == test['y']).mean())
  model.properties.update({
      'arch': str(parsed), 'uq_method': parsed.method,
      'base_archs': list(parsed.archs), 'num_samples': student.num_samples,
      'num_classes': k, 'input_shape': list(data['x'].shape[1:]),
      'split': split, 'targets': targets, 'seed': seed, 'recipe': recipe,
      'train_size': int(len(data['x'])), 'test_accuracy': acc,
      'dataset': examples.properties.get('name', '')})


@component
def evaluate_uq_model(*, splits: InputArtifact[Examples],
                      query_splits: InputArtifact[Examples],
                      model: InputArtifact[Model],
                      evaluation: OutputArtifact[Evaluation],
                      victim: Parameter[dict]):
  """What a UQ student adds to `evaluate_model`'s combined metrics.

  A plain `train_model` student is scored too, as a single sample.

  Metrics (`metrics.json`), on the clean test split:
    member_fidelity_best / _mean, member_accuracy_best / _mean: the single
      members (samples); "best" is picked on the test split itself, an
      optimistic oracle choice;
    ece: expected calibration error of the combined prediction (15 bins)
      against the true labels; ece_victim: against the victim's labels;
    variance, disagreement, mutual_information: diversity of the members;
    member_fidelity_heldout_mean: members' mean agreement on the attacker's
      held-out split.
  """
  from modelsteal.export import load_predictor  # pylint: disable=g-import-not-at-top
  from modelsteal.oracle import make_oracle  # pylint: disable=g-import-not-at-top
  from modelsteal.attacks.components import _answer_cache_dir  # pylint: disable=g-import-not-at-top
  from modelsteal.uq import diversity as div  # pylint: disable=g-import-not-at-top
  from modelsteal.uq import load_student  # pylint: disable=g-import-not-at-top
  if os.path.isdir(model.path('uq')):
    sample_probs = load_student(model.path('uq')).sample_probs
  else:  # a plain student: one sample
    predictor = load_predictor(model.serving_dir, trusted=True)
    sample_probs = lambda x: predictor(x)[None]
  oracle = make_oracle(victim, output='probs', cache_dir=_answer_cache_dir())
  test = splits.load_split('test')
  probs = sample_probs(test['x'])
  theirs = oracle.query_all(test['x']).argmax(1)
  fid = (probs.argmax(-1) == theirs[None]).mean(1)
  acc = (probs.argmax(-1) == test['y'][None]).mean(1)
  mean = probs.mean(0)
  metrics = {
      'member_fidelity_best': float(fid.max()),
      'member_fidelity_mean': float(fid.mean()),
      'member_accuracy_best': float(acc.max()),
      'member_accuracy_mean': float(acc.mean()),
      'ece': div.expected_calibration_error(mean, test['y']),
      'ece_victim': div.expected_calibration_error(mean, theirs),
      **div.diversity(probs),
  }
  if 'heldout' in query_splits.splits:
    held = query_splits.load_split('heldout')
    hp = sample_probs(held['x']).argmax(-1)
    metrics['member_fidelity_heldout_mean'] = float(
        (hp == oracle.query_all(held['x']).argmax(1)[None]).mean())
  with open(evaluation.path('metrics.json'), 'w') as f:
    json.dump(metrics, f, indent=1)
  evaluation.properties.update(metrics)


__all__ = ['evaluate_uq_model', 'train_uq_model']
