"""Stealing metrics against hand-computed values on a tiny fixed example.

Two 3-class "models" on 1x1x3 images whose answers are known exactly: the
victim answers the brightest channel; the student is the victim with
classes 0 and 1 swapped. Every expected value below is counted by hand in
the comments, so a metric compared with the wrong reference (e.g.
`fidelity_heldout` against the true labels instead of the victim's answers)
fails.
"""

import numpy as np
import pandas as pd
import pytest

from modelsteal import evaluation, victims
from modelsteal.artifacts import Evaluation, Examples
from modelsteal.attacks import evaluate_model


def _images(classes):
  """Class c -> an image whose channel c is brightest."""
  x = np.full((len(classes), 1, 1, 3), 0.1, np.float32)
  x[np.arange(len(classes)), 0, 0, classes] = 0.9
  return x


def _linear_model(path, weights):
  import keras
  inp = keras.Input((1, 1, 3))
  out = keras.layers.Dense(3, use_bias=False)(keras.layers.Flatten()(inp))
  model = keras.Model(inp, out)
  model.layers[-1].set_weights([np.asarray(weights, np.float32)])
  model.save(path)
  return victims.victim_ref_from_path(path)


@pytest.fixture
def metrics(tmp_path):
  # victim's top-1 answer on the test images: [0, 0, 1, 2, 2, 1]
  # student's (0 <-> 1 swapped):              [1, 1, 0, 2, 2, 0]
  # true labels:                              [0, 1, 1, 2, 0, 1]
  test_answers = np.array([0, 0, 1, 2, 2, 1])
  y_test = np.array([0, 1, 1, 2, 0, 1])
  # held out: victim [2, 0, 1, 1], student [2, 1, 0, 0], true [2, 1, 0, 1]
  heldout_answers = np.array([2, 0, 1, 1])
  y_heldout = np.array([2, 1, 0, 1])
  splits = Examples(uri=str(tmp_path / 'splits'))
  splits.save_properties()
  splits.save_split('test', _images(test_answers), y_test)
  query_splits = Examples(uri=str(tmp_path / 'query_splits'))
  query_splits.save_properties()
  query_splits.save_split('heldout', _images(heldout_answers), y_heldout)
  victim = _linear_model(str(tmp_path / 'victim.keras'), np.eye(3))
  swap = np.eye(3)[:, [1, 0, 2]]  # logit 1 <- channel 0, logit 0 <- channel 1
  student = _linear_model(str(tmp_path / 'student.keras'), swap)
  out = Evaluation(uri=str(tmp_path / 'evaluation'))
  out.save_properties()
  evaluate_model(splits=splits, query_splits=query_splits, evaluation=out,
                 model=student, victim=victim)
  return out.properties


def test_hand_computed_metrics(metrics):
  # student == victim on test: [F, F, F, T, T, F] -> 2/6
  assert metrics['fidelity'] == pytest.approx(2 / 6)
  # student == true on test:   [F, T, F, T, F, F] -> 2/6
  assert metrics['accuracy'] == pytest.approx(2 / 6)
  # victim == true on test:    [T, F, T, T, F, T] -> 4/6
  assert metrics['victim_accuracy'] == pytest.approx(4 / 6)
  # (2/6) / (4/6)
  assert metrics['normalized_accuracy'] == pytest.approx(0.5)
  # student == victim held out: [T, F, F, F] -> 1/4 (against the true labels
  # it would be [T, T, T, F] -> 3/4)
  assert metrics['fidelity_heldout'] == pytest.approx(1 / 4)


def test_table_shows_ratio_and_percentages(metrics):
  df = pd.DataFrame([{'model': 'student', **metrics}])
  text = evaluation.format_table(df)
  assert '0.500x' in text and '33.33%' in text and '25.00%' in text
  for column in ('accuracy', 'fidelity', 'fidelity_heldout',
                 'normalized_accuracy', 'queries_paid'):
    assert column in evaluation.STEAL_LEGEND
