"""Round-based stealing (`pipelines.steal --rounds`): exact budgets, one
component per round, resume without paying twice, clear errors."""

import glob
import json
import os

import numpy as np
import pandas as pd
import pytest
from absl.testing import flagsaver

from modelsteal import training
from modelsteal.oracle import base as oracle_base
from modelsteal.experiments import recipes as recipes_lib
from modelsteal.experiments import steal as steal_lib
from pipelines import steal


def _main(**flags):
  with flagsaver.flagsaver(**flags):
    steal.main(['steal'])


def _rounds(workdir):
  path, = glob.glob(os.path.join(workdir, 'steal_rounds', '*', 'rounds.csv'))
  return pd.read_csv(path), os.path.dirname(path)


def _common(tiny_npz, wd, **kw):
  return dict(victim='mnist_mlp', dataset=tiny_npz, workdir=wd, smoke=True,
              budget=90, rounds=3, students=['mnist_mlp'], **kw)


@pytest.fixture
def paid(monkeypatch):
  """Counts every image actually sent to a local victim."""
  sent = []
  real = oracle_base.LocalOracle._ask

  def counting(self, x):
    sent.append(len(x))
    return real(self, x)

  monkeypatch.setattr(oracle_base.LocalOracle, '_ask', counting)
  return sent


@pytest.mark.slow
def test_rounds_respect_the_budget_and_write_table_and_plot(tiny_npz,
                                                            tmp_path):
  wd = str(tmp_path)
  _main(**_common(tiny_npz, wd, query_strategy='random,margin,kcenter'))
  df, out_dir = _rounds(wd)
  assert list(df['strategy']) == ['random'] * 3 + ['margin'] * 3 + [
      'kcenter'] * 3
  assert list(df['queries'][:3]) == [30, 60, 90]
  assert df['fidelity'].between(0, 1).all()
  assert {'select_s', 'label_s', 'train_s'} <= set(df.columns)
  assert os.path.exists(os.path.join(out_dir, 'rounds.png'))
  # only the last round's student (the stolen model) has a SavedModel; the
  # students that only picked queries were scored from their .keras file
  last = df['round'] == df['round'].max()
  assert df.loc[last, 'saved_model'].str.endswith(
      os.path.join('serving', '1')).all()
  assert df.loc[~last, 'saved_model'].str.endswith('model.keras').all()
  for p in glob.glob(os.path.join(wd, 'train_model', '*', 'model')):
    props = json.load(open(os.path.join(p, 'artifact.json')))['properties']
    assert props['serving'] == os.path.isdir(os.path.join(p, 'serving'))
  # every round's labeled set: the budget so far, distinct pool images
  for p in glob.glob(os.path.join(wd, 'label_round', '*', 'labeled')):
    props = json.load(open(os.path.join(p, 'artifact.json')))['properties']
    idx = np.load(os.path.join(p, 'train.npz'))['idx']
    assert len(idx) == props['budget'] == len(set(idx.tolist()))
    assert props['budget'] in (60, 90) and props['queries_asked'] == props[
        'budget']


@pytest.mark.slow
def test_interrupted_rounds_resume_and_pay_nothing_twice(tiny_npz, tmp_path,
                                                         monkeypatch, paid):
  flags = _common(tiny_npz, str(tmp_path / 'a'), query_strategy='entropy')
  real = training.train_classifier
  calls = []

  def interrupt_third_student(*args, **kwargs):
    calls.append(1)
    if len(calls) == 4:  # victim, round 0, round 1, round 2 <- here
      raise KeyboardInterrupt
    return real(*args, **kwargs)

  monkeypatch.setattr(training, 'train_classifier', interrupt_third_student)
  with pytest.raises(SystemExit):
    _main(**flags)
  monkeypatch.setattr(training, 'train_classifier', real)
  _main(**flags)
  victim_eval = 100 + 20  # scoring: test split, attacker held-out split
  answers_paid = sum(paid) - victim_eval
  assert answers_paid == 90, paid
  resumed, _ = _rounds(str(tmp_path / 'a'))
  paid.clear()
  _main(**_common(tiny_npz, str(tmp_path / 'b'), query_strategy='entropy'))
  straight, _ = _rounds(str(tmp_path / 'b'))
  pd.testing.assert_series_equal(resumed['fidelity'], straight['fidelity'])
  assert list(resumed['queries_paid']) == list(straight['queries_paid'])


@pytest.mark.slow
def test_bald_with_a_uq_student(tiny_npz, tmp_path):
  wd = str(tmp_path)
  _main(**{**_common(tiny_npz, wd, query_strategy='bald'), 'rounds': 2,
           'students': ['mcdropout:mnist_mlp:samples=4']})
  df, _ = _rounds(wd)
  assert list(df['queries']) == [45, 90]


@pytest.mark.slow
def test_round_schedule_and_cheaper_selection_students(tiny_npz, tmp_path,
                                                       monkeypatch):
  real = recipes_lib.student_recipe
  monkeypatch.setattr(recipes_lib, 'student_recipe',
                      lambda *a, **k: {**real(*a, **k), 'epochs': 4})
  wd = str(tmp_path)
  _main(**{k: v for k, v in _common(tiny_npz, wd,
                                    query_strategy='margin').items()
           if k != 'rounds'},
        round_schedule=['20', '50', '90'], round_epochs=0.5)
  df, out_dir = _rounds(wd)
  assert list(df['queries']) == [20, 50, 90]
  assert list(df['queries_paid']) == [20, 50, 90]
  # the rounds' students only pick queries: half the epochs; the last is the
  # stolen model: the full recipe
  assert list(df['epochs']) == [2, 2, 4]
  assert '20_50_90' in os.path.basename(out_dir)


@pytest.mark.slow
def test_student_recipe_changes_every_student(tiny_npz, tmp_path):
  from modelsteal.artifacts import Model  # pylint: disable=g-import-not-at-top
  wd = str(tmp_path)
  _main(**_common(tiny_npz, wd, query_strategy='margin'),
        student_recipe=['batch_size=16', 'learning_rate=0.01'])
  df, out_dir = _rounds(wd)
  assert list(df['queries']) == [30, 60, 90]
  props = [Model.load(d).properties
           for d in glob.glob(os.path.join(wd, 'train_model', '*', 'model'))]
  recipes = [p['recipe'] for p in props if p['targets'] == 'answers']
  assert len(recipes) == 3  # one student per round
  # the victim keeps its own recipe
  assert all(p['recipe']['batch_size'] != 16 for p in props
             if p['targets'] != 'answers')
  assert all(r['batch_size'] == 16 and r['learning_rate'] == 0.01
             for r in recipes)
  assert 'batch_size16_learning_rate0.01' in os.path.basename(out_dir)


@pytest.mark.slow
def test_warm_start_trains_each_round_further(tiny_npz, tmp_path):
  from modelsteal.artifacts import Model  # pylint: disable=g-import-not-at-top
  wd = str(tmp_path)
  _main(**_common(tiny_npz, wd, query_strategy='margin'), warm_start=True,
        round_candidates=40)
  df, out_dir = _rounds(wd)
  assert list(df['queries']) == [30, 60, 90]
  assert '-warm-c40-' in os.path.basename(out_dir)
  for d in glob.glob(os.path.join(wd, 'label_round', '*')):
    with open(os.path.join(d, 'execution.json')) as f:
      assert json.load(f)['parameters']['candidates'] == 40

  def models(component):
    return [Model.load(d) for d in
            glob.glob(os.path.join(wd, component, '*', 'model'))]

  round0, = [m for m in models('train_model')
             if m.properties['targets'] == 'answers']
  later = models('finetune_model')
  assert len(later) == 2
  # round 1 starts from round 0's student, round 2 from round 1's
  round1, = [m for m in later if m.properties['init'] == round0.uri]
  round2, = [m for m in later if m.properties['init'] == round1.uri]
  assert [m.properties['train_size'] for m in (round0, round1, round2)] == [
      30, 60, 90]
  # training went on: the weights moved away from the starting point
  w0, w1 = round0.load_keras().get_weights(), round1.load_keras().get_weights()
  assert any(not np.allclose(a, b) for a, b in zip(w0, w1))


def test_parse_recipe_overrides():
  assert steal_lib.parse_recipe_overrides(
      ['epochs=40', 'batch_size=128', 'augment=false', 'schedule=constant']) == (
          ('augment', False), ('batch_size', 128), ('epochs', 40),
          ('schedule', 'constant'))
  recipe = steal_lib.student_recipe('mnist_cnn', 1500, False,
                                (('batch_size', 128),))
  assert recipe['batch_size'] == 128 and recipe['epochs'] == 60
  # a smoke run keeps its single epoch
  assert steal_lib.student_recipe('mnist_cnn', 1500, True,
                              (('epochs', 40),))['epochs'] == 1
  for bad in (['schedule=linear'], ['learning_rate=0'], ['augment=maybe']):
    with pytest.raises(ValueError, match='student_recipe: '):
      steal_lib.parse_recipe_overrides(bad)


@pytest.mark.slow
def test_rounds_with_top_k_answers(tiny_npz, tmp_path):
  wd = str(tmp_path)
  _main(**_common(tiny_npz, wd, query_strategy='entropy', output='topk:2'))
  df, _ = _rounds(wd)
  assert list(df['queries']) == [30, 60, 90]
  assert df['output'].eq('topk:2').all()


@pytest.mark.slow
def test_round_schedule_scales_with_a_capped_budget(tiny_npz, tmp_path,
                                                    capsys):
  # smoke data: the pool is smaller than the schedule's budget
  wd = str(tmp_path)
  _main(**{k: v for k, v in _common(tiny_npz, wd).items()
           if k not in ('budget', 'rounds')},
        round_schedule=['1000', '100000'])
  df, _ = _rounds(wd)
  pool = df['queries'].iloc[-1]
  assert list(df['queries']) == [round(pool / 100), pool]
  assert 'round_schedule scaled' in capsys.readouterr().out


@pytest.mark.parametrize('flags, match', [
    (dict(round_schedule=['50', '20', '90']), 'increasing positive'),
    # with --smoke the schedule is scaled to the stand-in pool: checked first
    (dict(round_schedule=['2000', '1000'], smoke=True), 'increasing positive'),
    (dict(round_schedule=['20', '50', '90'], rounds=5), 'leave --rounds out'),
    (dict(round_schedule=['20', '50', '80']), 'leave --budget'),
    (dict(round_schedule=['20', 'x']), 'must be integers'),
    (dict(round_epochs=0.0), '--round_epochs must be above 0'),
    (dict(round_epochs=0.5, rounds=1), '--round_epochs applies'),

    (dict(query_strategy='psychic'), 'unknown query strategy'),
    (dict(query_strategy='bald'), 'needs a UQ student'),
    (dict(query_strategy='entropy', rounds=1), 'needs --rounds of 2'),
    (dict(query_strategy='margin', seed_size=500), '--seed_size must be'),
    (dict(student_recipe=['epochs=many']), 'epochs takes an int'),
    (dict(student_recipe=['depth=3']), "unknown field 'depth'"),
    (dict(student_recipe=['batch_size']), 'write KEY=VALUE'),
    (dict(warm_start=True, rounds=1), '--warm_start starts'),
    (dict(round_candidates=-1), '--round_candidates must be'),
    (dict(warm_start=True, query_strategy='bald',
          students=['mcdropout:mnist_mlp:samples=4']), 'plain students'),
])
def test_bad_round_input_one_error_line(tiny_npz, tmp_path, capsys, flags,
                                        match):
  with pytest.raises(SystemExit) as e:
    _main(**{**_common(tiny_npz, str(tmp_path)), **flags})
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert 'steal: error:' in err and match in err and 'Traceback' not in err
